"""Devices stay within the data scope where the review found the door open:

- H6: the admin "add device command" form of a scoped staff operator, and the send action
  itself, refuse another department's device (the form took any device pk).
- M4: a gateway's `/topo/add` may give its sub-devices only the products of its department
  and below (it could create devices in any department's product), through the ingest path.
- The admin's Products → Add and Devices → Add save (they answered 500: `created_by` was
  passed twice), for a superuser and for a scoped operator.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.devices.conftest import now_ms
from tests.security.devices_support import bus_edge
from tests.system.conftest import Org, make_device, make_product
from webapp.core.errors import NotFound
from webapp.devices import actions
from webapp.devices.models import Device, DeviceCommand
from webapp.products.models import Product

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("commit_hooks")]

COMMAND_PERMS = ("devices.view_device", "devices.view_devicecommand",
                 "devices.add_devicecommand")
ADD = "/admin/devices/devicecommand/add/"


@pytest.fixture
def org(redis_prefix):
    return Org()


@pytest.fixture
def edge(redis_client, redis_prefix):
    return bus_edge(redis_client, redis_prefix)


def command_form(device: Device) -> dict[str, Any]:
    return {"device": str(device.pk), "service": "env", "command": "set_interval",
            "params_json": json.dumps({"seconds": 10}), "timeout": "30", "ttl": ""}


# H6 ----------------------------------------------------------------------------------------


def test_admin_command_form_refuses_another_departments_device(org, client):
    """The review's exploit: POST the add form with the pk of B's device."""
    mine = make_device("dev-a", make_product("pa", org.a), org.a)
    theirs = make_device("dev-b", make_product("pb", org.b), org.b)
    alice = org.user("alice", org.a, COMMAND_PERMS, scope="department", staff=True)
    client.force_login(alice)

    refused = client.post(ADD, command_form(theirs))
    assert refused.status_code == 200
    assert "device" in refused.context["adminform"].form.errors
    assert not DeviceCommand.objects.exists()

    sent = client.post(ADD, command_form(mine))
    assert sent.status_code == 302, sent.context["adminform"].form.errors
    assert list(DeviceCommand.objects.values_list("device__identifier", flat=True)) == ["dev-a"]
    # B's command history is not listed either.
    assert client.get("/admin/devices/devicecommand/?q=dev-b").status_code == 200


def test_send_command_action_checks_the_scope(org):
    """Whatever view calls it, the action answers another department's device as unknown;
    the platform itself (rules, acting_user=None) still reaches every device."""
    theirs = make_device("dev-b", make_product("pb", org.b), org.b)
    alice = org.user("alice", org.a, COMMAND_PERMS, scope="department")
    for target in (theirs, "dev-b"):
        with pytest.raises(NotFound):
            actions.send_command(acting_user=alice, device=target, service="env",
                                 command="set_interval", params={"seconds": 5})
    assert not DeviceCommand.objects.exists()
    actions.send_command(acting_user=None, device="dev-b", service="env",
                         command="set_interval", params={"seconds": 5})
    assert DeviceCommand.objects.count() == 1


# M4 ----------------------------------------------------------------------------------------


GATEWAY_MODEL = {"identifier": "gw-prod", "name": "Gateway", "product_type": "gateway",
                 "services": [{"code": "sys", "properties": [
                     {"code": "uptime", "datatype": "int"}]}]}


def topo_add(*infos: dict[str, Any]) -> dict[str, Any]:
    return {"t": "topo", "dev": "gw-a", "prod": "gw-prod", "op": "add",
            "body": {"deviceInfos": list(infos)}, "ts": now_ms(), "mid": 7}


def test_gateway_cannot_create_sub_devices_in_another_departments_product(org, edge):
    """`/topo/add` naming B's product, by identifier or by manufacturer and model, fails for
    that item as an unknown product and creates nothing; A's products (A1 is below A) work."""
    from webapp.products import actions as product_actions

    gateway_product = product_actions.create_product(acting_user=None, data={
        **GATEWAY_MODEL, "department": org.a})
    make_device("gw-a", gateway_product, org.a)
    theirs = make_product("pb", org.b)
    Product.objects.filter(pk=theirs.pk).update(manufacturer="acme", model="B1")
    make_product("pa1", org.a1)
    edge.connect("gw-a")
    edge.take()

    edge.uplink(topo_add({"nodeId": "x1", "productIdentification": "pb"},
                         {"nodeId": "x2", "manufacturerId": "acme", "model": "B1"},
                         {"nodeId": "x3", "productIdentification": "pa1"}))
    [entry] = edge.take()
    assert entry["topic"] == "/v1/devices/gw-a/topo/addResponse"
    results = entry["message"]["dataBody"]["data"]
    assert [r["statusCode"] for r in results] == [1, 1, 0]
    assert results[0]["statusDesc"] == "unknown product pb"
    assert "no product has manufacturer acme and model B1" in results[1]["statusDesc"]
    assert not Device.objects.filter(identifier__in=["x1", "x2"]).exists()
    sub = Device.objects.get(identifier="x3")
    assert (sub.product.identifier, sub.department, sub.gateway.identifier) == (
        "pa1", org.a, "gw-a")


# admin Products → Add and Devices → Add ------------------------------------------------------


PRODUCT_FORM = {"name": "Lamp", "product_type": "common", "protocol": "mqtt",
                "data_format": "json", "device_type": "default", "status": "enabled",
                "thing_model": "", "services-TOTAL_FORMS": "0",
                "services-INITIAL_FORMS": "0"}
DEVICE_FORM = {"name": "", "status": "unactivated", "fw_version": "", "sw_version": "",
               "tags": "{}", "address": "", "description": "", "latitude": "",
               "longitude": ""}
ADMIN_PERMS = ("products.view_product", "products.add_product", "products.change_product",
               "devices.view_device", "devices.add_device", "devices.change_device",
               "devices.view_devicegroup")


@pytest.mark.parametrize("who", ["superuser", "operator"])
def test_admin_add_forms_save_products_and_devices(org, client, django_user_model, who):
    """Both add forms save (they answered 500), recording the user who added the record;
    an operator's records land in his department and the form offers no `created_by`."""
    if who == "superuser":
        user = django_user_model.objects.create_superuser("root", "root@example.com", "pw")
        department = ""
    else:
        user = org.user("alice", org.a, ADMIN_PERMS, scope="department_and_below",
                        staff=True)
        department = str(org.a.pk)
    client.force_login(user)
    assert "created_by" not in client.get("/admin/products/product/add/").context[
        "adminform"].form.fields

    saved = client.post("/admin/products/product/add/", {
        **PRODUCT_FORM, "identifier": f"lamp-{who}", "department": department,
        "created_by": str(user.pk + 100)})
    assert saved.status_code == 302, saved.content[:2000]
    product = Product.objects.get(identifier=f"lamp-{who}")
    assert product.created_by == user
    assert product.department_id == (org.a.pk if department else None)

    added = client.post("/admin/devices/device/add/", {
        **DEVICE_FORM, "identifier": f"dev-{who}", "product": str(product.pk),
        "department": department})
    assert added.status_code == 302, added.content[:2000]
    device = Device.objects.get(identifier=f"dev-{who}")
    assert (device.created_by, device.product) == (user, product)
    assert device.department_id == (org.a.pk if department else None)
