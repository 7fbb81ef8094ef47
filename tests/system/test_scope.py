"""Data scope: a user of department A never sees department B's records — in lists, details,
exports, writes and the admin."""

from __future__ import annotations

import csv
import io

import pytest
from rest_framework.test import APIClient

from tests.system.conftest import PASSWORD, make_device, make_product

pytestmark = pytest.mark.django_db

DEVICE_PERMS = ("devices.view_device", "devices.add_device", "devices.change_device",
                "devices.delete_device", "products.view_product", "products.add_product",
                "products.change_product", "devices.view_devicecommand")


@pytest.fixture
def fleet(org):
    """A product and a device in A, A1 and B each."""
    products = {k: make_product(f"p-{k}", getattr(org, k)) for k in ("a", "a1", "b")}
    devices = {k: make_device(f"d-{k}", products[k], getattr(org, k)) for k in ("a", "a1", "b")}
    return products, devices


def client_for(user):
    client = APIClient()
    client.force_authenticate(user)
    return client


def listed(client, url):
    response = client.get(url)
    assert response.status_code == 200, response.content
    return {row["identifier"] for row in response.json()["results"]}


@pytest.mark.parametrize(("scope", "expected"), [
    ("all", {"d-a", "d-a1", "d-b"}),
    ("department_and_below", {"d-a", "d-a1"}),
    ("department", {"d-a"}),
])
def test_device_list_follows_scope(org, fleet, scope, expected):
    """Each scope reaches exactly its departments."""
    user = org.user("alice", org.a, DEVICE_PERMS, scope=scope)
    assert listed(client_for(user), "/api/v1/devices/") == expected


def test_custom_scope_reaches_chosen_departments_only(org, fleet):
    """A custom-scope role reaches the departments it names, not its own."""
    role = org.role(DEVICE_PERMS, scope="custom", departments=[org.b])
    user = org.user("carol", org.a, roles=[role])
    assert listed(client_for(user), "/api/v1/devices/") == {"d-b"}


def test_self_scope_reaches_own_records(org, fleet):
    """`self` sees only the records the user created."""
    user = org.user("sam", org.a, DEVICE_PERMS, scope="self")
    client = client_for(user)
    assert listed(client, "/api/v1/devices/") == set()
    assert client.get("/api/v1/devices/d-a/").status_code == 404
    make_product("own-product", org.a, created_by=user)
    created = client.post("/api/v1/devices/", {"product": "own-product",
                                                "identifier": "mine"}, format="json")
    assert created.status_code == 201, created.content
    assert listed(client, "/api/v1/devices/") == {"mine"}


def test_roles_add_up(org, fleet):
    """Two roles: the union of their scopes."""
    user = org.user("uma", org.a, roles=[
        org.role(DEVICE_PERMS, scope="department"),
        org.role((), scope="custom", departments=[org.b])])
    assert listed(client_for(user), "/api/v1/devices/") == {"d-a", "d-b"}


def test_other_department_detail_write_and_actions_are_404(org, fleet):
    """B's device is invisible to A: detail, update, delete and actions answer 404."""
    client = client_for(org.user("alice", org.a, DEVICE_PERMS, scope="department_and_below"))
    assert client.get("/api/v1/devices/d-a1/").status_code == 200
    for method, url in [("get", "/api/v1/devices/d-b/"), ("patch", "/api/v1/devices/d-b/"),
                        ("delete", "/api/v1/devices/d-b/"),
                        ("get", "/api/v1/devices/d-b/shadow/"),
                        ("get", "/api/v1/devices/d-b/commands/"),
                        ("post", "/api/v1/devices/d-b/rotate-secret/"),
                        ("get", "/api/v1/products/p-b/"),
                        ("get", "/api/v1/products/p-b/thing-model/")]:
        response = getattr(client, method)(url, {}, format="json")
        assert response.status_code == 404, (method, url, response.content)
    from webapp.devices.models import Device

    assert Device.objects.filter(identifier="d-b").exists()


def test_export_is_scoped(org, fleet):
    """The CSV export holds A's devices only."""
    client = client_for(org.user("alice", org.a, DEVICE_PERMS, scope="department"))
    response = client.get("/api/v1/devices/export/?file_format=csv")
    assert response.status_code == 200
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert [row["identifier"] for row in rows] == ["d-a"]
    products = client.get("/api/v1/products/export/?file_format=json").json()
    assert [p["identifier"] for p in products] == ["p-a"]


def test_writes_cannot_leave_the_scope(org, fleet):
    """A's user cannot put a record in B, nor use B's product; new records land in A."""
    client = client_for(org.user("alice", org.a, DEVICE_PERMS, scope="department_and_below"))
    to_b = client.post("/api/v1/devices/", {"product": "p-a", "identifier": "x1",
                                            "department": org.b.pk}, format="json")
    assert to_b.status_code == 400 and "department" in to_b.json()["errors"]
    b_product = client.post("/api/v1/devices/", {"product": "p-b", "identifier": "x2"},
                            format="json")
    assert b_product.status_code == 400 and "product" in b_product.json()["errors"]
    moved = client.patch("/api/v1/devices/d-a/", {"department": org.b.pk}, format="json")
    assert moved.status_code == 400
    created = client.post("/api/v1/devices/", {"product": "p-a1", "identifier": "x3"},
                          format="json")
    assert created.status_code == 201 and created.json()["department"] == org.a.pk


def test_commands_follow_their_device(org, fleet):
    """The command list shows commands of devices in scope only."""
    from datetime import timedelta

    from django.utils import timezone

    from webapp.devices.models import DeviceCommand

    for device in fleet[1].values():
        DeviceCommand.objects.create(device=device, service="env", command="set_interval",
                                     expires=timezone.now() + timedelta(minutes=1))
    client = client_for(org.user("alice", org.a, DEVICE_PERMS, scope="department"))
    devices = {row["device"] for row in client.get("/api/v1/commands/").json()["results"]}
    assert devices == {"d-a"}


def test_admin_is_scoped(org, fleet, client):
    """The admin change list, change page and department choices stop at the scope."""
    user = org.user("alice", org.a, DEVICE_PERMS, scope="department", staff=True)
    client.force_login(user)
    page = client.get("/admin/devices/device/")
    assert page.status_code == 200
    body = page.content.decode()
    assert "d-a" in body and "d-b" not in body and "d-a1" not in body
    assert client.get(f"/admin/devices/device/{fleet[1]['a'].pk}/change/").status_code == 200
    other = client.get(f"/admin/devices/device/{fleet[1]['b'].pk}/change/")
    assert other.status_code == 302  # "does not exist" → back to the admin index
    form = client.get(f"/admin/devices/device/{fleet[1]['a'].pk}/change/").content.decode()
    assert "Dept B" not in form
    products = client.get("/admin/products/product/").content.decode()
    assert "p-a" in products and "p-b" not in products


def test_superuser_sees_everything(org, fleet):
    """A superuser is not restricted."""
    from django.contrib.auth import get_user_model

    root = get_user_model().objects.create_superuser("root", "r@example.com", PASSWORD)
    assert listed(client_for(root), "/api/v1/devices/") == {"d-a", "d-a1", "d-b"}


def test_user_without_role_sees_only_own_records(org, fleet):
    """No role: the default scope (`self`) applies, with direct Django permissions."""
    from django.contrib.auth import get_user_model

    from tests.system.conftest import perms

    user = get_user_model().objects.create_user("norole", password=PASSWORD,
                                                department=org.a)
    user.user_permissions.set(perms("devices.view_device"))
    assert listed(client_for(user), "/api/v1/devices/") == set()


@pytest.mark.parametrize(("url", "budget"), [
    ("/api/v1/devices/", 10), ("/api/v1/products/", 15), ("/api/v1/users/", 12),
    ("/api/v1/roles/", 12), ("/api/v1/departments/", 10), ("/api/v1/operation-logs/", 10),
    ("/api/v1/login-logs/", 10), ("/api/v1/online-users/", 10), ("/api/v1/notices/", 12),
    ("/api/v1/dictionary-items/", 10), ("/api/v1/menus/", 10), ("/api/v1/commands/", 10),
])
def test_list_query_budget(org, fleet, url, budget, django_assert_max_num_queries):
    """List endpoints stay within a fixed number of queries, whatever the row count."""
    from webapp.system import sessions

    role = org.role([f"{a}.{p}" for a, p in [
        ("devices", "view_device"), ("products", "view_product"), ("system", "view_user"),
        ("system", "view_role"), ("system", "view_department"),
        ("system", "view_operationlog"), ("system", "view_loginlog"),
        ("system", "view_loginsession"), ("system", "view_notice"),
        ("system", "view_dictitem"), ("system", "view_menu"),
        ("devices", "view_devicecommand")]], scope="department_and_below")
    users = [org.user(f"u{i}", org.a, roles=[role]) for i in range(5)]
    for user in users:
        sessions.open_session(user, "api")
    for i in range(5):
        make_device(f"more-{i}", fleet[0]["a"], org.a)
    client = client_for(users[0])
    with django_assert_max_num_queries(budget):
        response = client.get(url)
    assert response.status_code == 200


def test_rules_and_alarms_follow_their_product_and_device(org, fleet):
    """Rules belong where their product belongs, alarms where their device (or product)
    belongs: lists, details and counts stop at the scope."""
    from django.utils import timezone

    from webapp.rules.models import Alarm, Rule

    products, devices = fleet
    now = timezone.now()
    rules = {k: Rule.objects.create(name=f"hot-{k}", trigger_type="property",
                                    product=products[k], trigger={}) for k in ("a", "b")}
    for k in ("a", "b"):
        Alarm.objects.create(name=f"alarm-{k}", device=devices[k], product=products[k],
                             rule=rules[k], first_seen=now, last_seen=now)
    Alarm.objects.create(name="product-only-b", product=products["b"], first_seen=now,
                         last_seen=now)
    client = client_for(org.user("alice", org.a, ["rules.view_rule", "rules.view_alarm",
                                                  "rules.view_ruletrace"],
                                 scope="department"))
    names = {row["name"] for row in client.get("/api/v1/rules/").json()["results"]}
    assert names == {"hot-a"}
    alarms = {row["name"] for row in client.get("/api/v1/alarms/").json()["results"]}
    assert alarms == {"alarm-a"}
    assert client.get(f"/api/v1/rules/{rules['b'].pk}/").status_code == 404
    other = Alarm.objects.get(name="alarm-b")
    assert client.get(f"/api/v1/alarms/{other.pk}/").status_code == 404
    assert client.get("/api/v1/alarms/counts/").json()["total"] == 1
