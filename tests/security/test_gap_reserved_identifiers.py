"""Known gap closed: the console's own pages shadowed records of the same name. A device
created as `new`, `import` or `groups` was unreachable at /devices/<identifier>/ (the page
/devices/new/ answered instead), and a product `new` at /products/new/; whoever could create
devices could hide one from the console that way. These identifiers are refused, whatever
their case, on every path that creates a device or a product: the API (and the product
import), the admin forms and the admin's device import, dynamic registration and a gateway's
`/topo/add`; and the lists cover every literal route the console puts there."""

from __future__ import annotations

import re

import pytest

from tests.devices.conftest import NODE, now_ms
from tests.security.devices_support import bus_edge
from tests.security.rbac import csv_upload
from tests.security.scoped_operator import jwt_client
from tests.security.test_devices_scope import DEVICE_FORM, GATEWAY_MODEL, PRODUCT_FORM, topo_add
from tests.system.conftest import Org, make_device, make_product
from webapp.devices.models import Device
from webapp.products.models import (
    RESERVED_DEVICE_IDENTIFIERS,
    RESERVED_PRODUCT_IDENTIFIERS,
    Product,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("commit_hooks")]

PERMS = ("products.view_product", "products.add_product", "products.change_product",
         "devices.view_device", "devices.add_device", "devices.change_device",
         "devices.view_devicegroup")
DEVICE_NAMES = ["new", "import", "groups", "New", "IMPORT", "Groups"]
PRODUCT_NAMES = ["new", "NEW", "New"]


@pytest.fixture
def org(redis_prefix):
    org = Org()
    org.alice = org.user("alice", org.a, PERMS, scope="department", staff=True)
    org.product = make_product("thermo", org.a)
    return org


@pytest.fixture
def edge(redis_client, redis_prefix):
    return bus_edge(redis_client, redis_prefix)


def _reason(text: str, identifier: str) -> None:
    text = text.replace("&#x27;", "'")
    assert f"The identifier {identifier!r} is reserved" in text, text


@pytest.mark.parametrize("identifier", DEVICE_NAMES)
def test_api_refuses_reserved_device_identifiers(org, identifier):
    refused = jwt_client(org.alice).post("/api/v1/devices/", {
        "product": "thermo", "identifier": identifier}, format="json")
    assert refused.status_code == 400, refused.content
    assert refused.json()["code"] == "reserved_identifier"
    _reason(refused.content.decode(), identifier)
    assert not Device.objects.filter(identifier=identifier).exists()


@pytest.mark.parametrize("identifier", PRODUCT_NAMES)
def test_api_refuses_reserved_product_identifiers(org, identifier, thermo_payload):
    client = jwt_client(org.alice)
    refused = client.post("/api/v1/products/", {**thermo_payload, "identifier": identifier},
                          format="json")
    assert refused.status_code == 400, refused.content
    assert refused.json()["code"] == "reserved_identifier"
    _reason(refused.content.decode(), identifier)
    imported = client.post(f"/api/v1/products/import/?identifier={identifier}",
                           {**thermo_payload, "identifier": identifier}, format="json")
    assert imported.status_code == 400, imported.content
    assert not Product.objects.filter(identifier__iexact=identifier).exists()


def test_ordinary_identifiers_still_work(org, thermo_payload):
    """Names that merely contain a reserved word are fine."""
    client = jwt_client(org.alice)
    assert client.post("/api/v1/devices/", {"product": "thermo", "identifier": "new-1"},
                       format="json").status_code == 201
    assert client.post("/api/v1/products/", {**thermo_payload, "identifier": "newer"},
                       format="json").status_code == 201


def test_admin_add_forms_refuse_reserved_identifiers(org, client):
    client.force_login(org.alice)
    for identifier in ("new", "Import"):
        page = client.post("/admin/devices/device/add/", {
            **DEVICE_FORM, "identifier": identifier, "product": str(org.product.pk),
            "department": str(org.a.pk)})
        assert page.status_code == 200, page.status_code
        _reason(str(page.context["adminform"].form.errors["identifier"]), identifier)
        assert not Device.objects.filter(identifier=identifier).exists()
    page = client.post("/admin/products/product/add/", {
        **PRODUCT_FORM, "identifier": "NEW", "department": str(org.a.pk)})
    assert page.status_code == 200, page.status_code
    _reason(str(page.context["adminform"].form.errors["identifier"]), "NEW")
    assert not Product.objects.filter(identifier="NEW").exists()


def test_admin_device_import_refuses_reserved_identifiers(org, client):
    client.force_login(org.alice)
    page = client.post("/admin/devices/device/import/", {
        "resource": "0", "format": "0", "import_file": csv_upload([
            {"identifier": "groups", "product": "thermo", "department": org.a.pk},
            {"identifier": "fine-1", "product": "thermo", "department": org.a.pk}])})
    assert page.status_code == 200
    assert page.context.get("confirm_form") is None
    assert page.context["result"].has_validation_errors()
    _reason(page.content.decode(), "groups")
    assert not Device.objects.filter(identifier__in=["groups", "fine-1"]).exists()


def test_dynamic_registration_refuses_reserved_identifiers(org, edge):
    from webapp.access import actions as access_actions

    access_actions.enable_registration(product=org.product)
    edge.uplink({"t": "register", "dev": "New", "prod": "thermo", "node": NODE,
                 "ts": now_ms(), "conn": "c-1", "body": {}})
    [answer] = edge.take()
    assert answer["topic"] == "/v1/devices/New/registerResponse"
    body = answer["message"]["dataBody"]["data"] if "dataBody" in answer["message"] else \
        answer["message"]
    assert "reserved" in str(body), answer
    assert not Device.objects.filter(identifier__iexact="new").exists()


def test_gateway_topology_refuses_reserved_identifiers(org, edge):
    from webapp.products import actions as product_actions

    gateway_product = product_actions.create_product(acting_user=None, data={
        **GATEWAY_MODEL, "department": org.a})
    make_device("gw-a", gateway_product, org.a)
    edge.connect("gw-a")
    edge.take()
    edge.uplink(topo_add({"nodeId": "groups", "productIdentification": "thermo"},
                         {"nodeId": "sub-1", "productIdentification": "thermo"}))
    [entry] = edge.take()
    results = entry["message"]["dataBody"]["data"]
    assert [r["statusCode"] for r in results] == [1, 0]
    _reason(results[0]["statusDesc"], "groups")
    assert not Device.objects.filter(identifier="groups").exists()


def _literal_children(prefix: str) -> set[str]:
    from webapp.console.urls import urlpatterns

    found = set()
    for pattern in urlpatterns:
        match = re.fullmatch(rf"{prefix}/([A-Za-z0-9_.-]+)/.*", str(pattern.pattern))
        if match:
            found.add(match.group(1).lower())
    return found


def test_the_lists_cover_the_consoles_routes():
    """Every literal page under /devices/ and /products/ is a reserved identifier."""
    assert _literal_children("devices") <= RESERVED_DEVICE_IDENTIFIERS
    assert _literal_children("products") <= RESERVED_PRODUCT_IDENTIFIERS
    assert {"new", "import", "groups"} <= _literal_children("devices")


def test_console_new_device_page_refuses_reserved_identifiers(org, client):
    client.force_login(org.alice)
    page = client.post("/devices/new/", {"product": "thermo", "identifier": "Groups",
                                         "name": "", "department": str(org.a.pk),
                                         "secret": ""})
    assert page.status_code == 400, page.status_code
    _reason(page.content.decode(), "Groups")
    assert not Device.objects.filter(identifier__iexact="groups").exists()
