"""Device bulk import honours the importer's data scope, in the API and in the admin: a row
that names a department, product, gateway or group out of reach, or updates a device out of
reach, is refused with its row, column and reason, and nothing of the file is imported; a new
device without a department gets the importer's own, as one created through the API does."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from tests.devices.conftest import csv_file
from tests.system.conftest import PASSWORD, Org, make_device, make_product
from webapp.devices.models import Device, DeviceGroup

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("commit_hooks")]

DEVICE_PERMS = ("devices.view_device", "devices.add_device", "devices.change_device",
                "devices.view_devicegroup", "products.view_product")


def client_of(user: Any) -> Any:
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_authenticate(user)
    return client


def upload(client: Any, file: SimpleUploadedFile, **extra: Any) -> Any:
    return client.post("/api/v1/devices/import/", {"file": file, **extra}, format="multipart")


@pytest.fixture
def org(redis_prefix):
    return Org()


@pytest.fixture
def products(org):
    """`pa` in department A, `pb` in department B."""
    return make_product("pa", org.a), make_product("pb", org.b)


@pytest.fixture
def alice(org):
    """Department A, a role that reaches department A and below."""
    return org.user("alice", org.a, DEVICE_PERMS, scope="department_and_below")


def by_row(response: Any) -> dict[int, dict[str, list[str]]]:
    return {e["row"]: e["errors"] for e in response.json()["errors"]}


def test_rows_out_of_scope_are_refused_with_row_column_and_reason(org, products, alice):
    """Department B and product pb are out of alice's reach: those rows are reported, the
    others would be fine, and nothing at all is imported."""
    response = upload(client_of(alice), csv_file([
        {"identifier": "ok-1", "product": "pa", "department": ""},
        {"identifier": "bad-2", "product": "pb", "department": ""},
        {"identifier": "bad-3", "product": "pa", "department": str(org.b.pk)},
        {"identifier": "ok-4", "product": "pa", "department": str(org.a1.pk)},
        {"identifier": "bad-5", "product": "pb", "department": str(org.b.pk)},
    ]))
    assert response.status_code == 400, response.json()
    assert response.json()["code"] == "import_invalid"
    errors = by_row(response)
    assert set(errors) == {2, 3, 5}
    assert errors[2] == {"product": ["product 'pb' is outside your data scope"]}
    assert errors[3] == {"department": [f"department '{org.b.pk}' is outside your data scope"]}
    assert set(errors[5]) == {"product", "department"}
    assert [e["identifier"] for e in response.json()["errors"]] == ["bad-2", "bad-3", "bad-5"]
    assert not Device.objects.exists()

    # The same rows without the bad ones import, in the departments given.
    fine = upload(client_of(alice), csv_file([
        {"identifier": "ok-1", "product": "pa", "department": ""},
        {"identifier": "ok-4", "product": "pa", "department": str(org.a1.pk)},
    ]))
    assert fine.status_code == 201, fine.json()
    assert dict(Device.objects.values_list("identifier", "department")) == {
        "ok-1": org.a.pk, "ok-4": org.a1.pk}


def test_a_row_without_department_gets_the_importers_like_a_created_device(org, products,
                                                                          alice):
    """No department column, or an empty cell: the device lands in alice's department, as
    when she creates one through the API; an existing device's empty cell keeps its own."""
    client = client_of(alice)
    created = client.post("/api/v1/devices/", {"identifier": "single", "product": "pa"},
                          format="json")
    assert created.status_code == 201, created.json()
    assert upload(client, csv_file([{"identifier": "no-col", "product": "pa"}])).status_code \
        == 201
    assert upload(client, csv_file([{"identifier": "empty", "product": "pa",
                                     "department": ""}])).status_code == 201
    departments = dict(Device.objects.values_list("identifier", "department"))
    assert departments == {"single": org.a.pk, "no-col": org.a.pk, "empty": org.a.pk}

    Device.objects.filter(identifier="empty").update(department=org.a1)
    again = upload(client, csv_file([{"identifier": "empty", "product": "pa",
                                      "department": "", "name": "renamed"}]))
    assert again.status_code == 201, again.json()
    device = Device.objects.get(identifier="empty")
    assert (device.name, device.department_id) == ("renamed", org.a1.pk)


def test_a_device_out_of_reach_cannot_be_updated_by_identifier(org, products, alice):
    """A device of department B is not alice's to rename, move or lock through a file."""
    make_device("b-dev", products[1], org.b)
    response = upload(client_of(alice), csv_file([
        {"identifier": "b-dev", "product": "pb", "name": "mine", "status": "locked"}]))
    assert response.status_code == 400
    assert by_row(response)[1]["identifier"] == ["device 'b-dev' is outside your data scope"]
    device = Device.objects.get(identifier="b-dev")
    assert (device.name, device.status) == ("", "unactivated")


def test_gateways_and_groups_out_of_reach_are_refused(org, products, alice):
    gateway_product = make_product("gwp", org.b)
    gateway_product.product_type = "gateway"
    gateway_product.save(update_fields=["product_type"])
    make_device("gw-b", gateway_product, org.b)
    DeviceGroup.objects.create(name="b-group", department=org.b)
    DeviceGroup.objects.create(name="a-group", department=org.a)
    response = upload(client_of(alice), csv_file([
        {"identifier": "sub", "product": "pa", "gateway": "gw-b", "groups": ""},
        {"identifier": "grouped", "product": "pa", "gateway": "", "groups": "a-group,b-group"},
        {"identifier": "fine", "product": "pa", "gateway": "", "groups": "a-group,new-group"},
    ]))
    assert response.status_code == 400
    errors = by_row(response)
    assert set(errors) == {1, 2}
    assert errors[1] == {"gateway": ["gateway 'gw-b' is outside your data scope"]}
    assert errors[2] == {"groups": ["device group 'b-group' is outside your data scope"]}
    assert not Device.objects.filter(identifier__in=["sub", "grouped", "fine"]).exists()
    assert not DeviceGroup.objects.filter(name="new-group").exists()

    ok = upload(client_of(alice), csv_file([
        {"identifier": "fine", "product": "pa", "groups": "a-group,new-group"}]))
    assert ok.status_code == 201, ok.json()
    # A group the file creates belongs to the importer's department, as through the API.
    assert DeviceGroup.objects.get(name="new-group").department_id == org.a.pk


def test_an_exported_file_imports_back_with_values_left_as_they_were(org, products, alice):
    """A device of department A may use product pb (given by someone who reaches both):
    alice's export names pb, and importing it back does not assign pb, so it is accepted.
    Her device in a group of department B keeps that membership."""
    device = make_device("a-dev", products[1], org.a)
    DeviceGroup.objects.create(name="b-group", department=org.b).devices.add(device)
    client = client_of(alice)
    exported = client.get("/api/v1/devices/export/?file_format=csv")
    assert exported.status_code == 200
    assert "a-dev,,pb," in exported.content.decode()
    back = upload(client, SimpleUploadedFile("devices.csv", exported.content))
    assert back.status_code == 201, back.json()
    assert back.json()["totals"]["update"] == 1
    assert [g.name for g in Device.objects.get(identifier="a-dev").groups.all()] == ["b-group"]


def test_updating_needs_the_change_permission(org, products):
    """With only the permission to add devices, a file may create devices, not update them."""
    make_device("a-dev", products[0], org.a)
    adder = org.user("adder", org.a, ("devices.view_device", "devices.add_device"),
                     scope="department")
    response = upload(client_of(adder), csv_file([
        {"identifier": "a-dev", "product": "pa", "name": "x"},
        {"identifier": "a-new", "product": "pa", "name": "y"}]))
    assert response.status_code == 400
    assert set(by_row(response)) == {1}
    assert "may not change devices" in by_row(response)[1]["identifier"][0]
    assert upload(client_of(adder), csv_file([
        {"identifier": "a-new", "product": "pa"}])).status_code == 201


def test_an_all_data_user_may_assign_any_department(org, products):
    boss = org.user("boss", org.a, DEVICE_PERMS, scope="all")
    response = upload(client_of(boss), csv_file([
        {"identifier": "b-1", "product": "pb", "department": str(org.b.pk)}]))
    assert response.status_code == 201, response.json()
    assert Device.objects.get(identifier="b-1").department_id == org.b.pk


def test_admin_import_refuses_a_department_out_of_reach(client, org, products, alice):
    """The admin's import goes through the same checks: the preview shows the row's error
    and offers no confirmation."""
    alice.is_staff = True
    alice.save(update_fields=["is_staff"])
    client.login(username="alice", password=PASSWORD)
    page = client.post("/admin/devices/device/import/", {
        "resource": "0", "format": "0",
        "import_file": csv_file([
            {"identifier": "adm-1", "product": "pa", "department": str(org.b.pk)}]),
    })
    assert page.status_code == 200
    assert page.context.get("confirm_form") is None
    assert page.context["result"].has_validation_errors()
    assert "is outside your data scope" in page.content.decode()
    assert not Device.objects.exists()


def test_admin_import_needs_the_add_permission(client, org, products):
    viewer = org.user("viewer", org.a, ("devices.view_device",), scope="all", staff=True)
    client.login(username=viewer.username, password=PASSWORD)
    assert client.get("/admin/devices/device/import/").status_code == 403
