"""Adding a device in the console: the form, the data scope it keeps, the secret shown once
and the snippets for the product's transport."""

from __future__ import annotations

import ast
import json

import pytest

from edge.crypto import decrypt_secret
from tests.console.conftest import OPERATOR_PERMISSIONS, create_product
from webapp.console import snippets
from webapp.devices.models import Device

pytestmark = pytest.mark.django_db

ADDER = (*OPERATOR_PERMISSIONS, "devices.add_device")


@pytest.fixture
def adder(world):
    """An operator of department A who may add devices."""
    return world.org.user("adder", world.org.a, ADDER, scope="department")


def text(response) -> str:
    return response.content.decode()


def test_superuser_adds_a_device_and_sees_its_secret_once(world, client_of):
    client = client_of(world.root)
    page = client.get("/devices/new/")
    assert page.status_code == 200
    assert 'value="thermo-a"' in text(page) and 'value="thermo-b"' in text(page)
    response = client.post("/devices/new/", {"product": "thermo-b", "identifier": "new-b1",
                                             "name": "New B", "department": world.org.b.pk,
                                             "secret": "s3cret-value"})
    assert response.status_code == 200, text(response)
    assert response["Cache-Control"] == "no-store"
    body = text(response)
    device = Device.objects.get(identifier="new-b1")
    assert device.product == world.product_b and device.department == world.org.b
    assert device.name == "New B" and device.created_by == world.root
    # Stored only encrypted; the page shows it in the secret field and in the snippets.
    assert "s3cret-value" not in device.secret_encrypted
    assert decrypt_secret(device.secret_encrypted) == "s3cret-value"
    assert 'data-testid="device-secret">s3cret-value<' in body
    assert "mosquitto_pub -h testserver -p 11883 -u new-b1 -P s3cret-value" in body
    assert "-t /v1/devices/new-b1/datas" in body
    # The sample report is built from the thing model and is a valid datas body.
    assert "&quot;serviceCode&quot;:&quot;env&quot;" in body
    # No later page shows it again: not the device page, not a reload of the form.
    assert "s3cret-value" not in text(client.get("/devices/new-b1/"))
    assert "s3cret-value" not in text(client.get("/devices/new/"))
    assert "s3cret-value" not in text(client.get("/devices/"))


def test_a_generated_secret_is_shown_once(world, client_of):
    client = client_of(world.root)
    response = client.post("/devices/new/", {"product": "thermo-a", "identifier": "gen-1"})
    assert response.status_code == 200
    secret = decrypt_secret(Device.objects.get(identifier="gen-1").secret_encrypted)
    assert secret in text(response)
    again = client.post("/devices/new/", {"product": "thermo-a", "identifier": "gen-1"})
    assert again.status_code == 400
    assert "already exists" in text(again) and secret not in text(again)


def test_scoped_operator_adds_in_their_own_department(world, client_of, adder):
    client = client_of(adder)
    page = text(client.get("/devices/new/"))
    assert 'value="thermo-a"' in page and "thermo-b" not in page
    assert f'value="{world.org.b.pk}"' not in page
    response = client.post("/devices/new/", {"product": "thermo-a", "identifier": "a-new"})
    assert response.status_code == 200, text(response)
    device = Device.objects.get(identifier="a-new")
    assert device.department == world.org.a and device.created_by == adder


def test_scoped_operator_cannot_use_another_department_or_product(world, client_of, adder):
    client = client_of(adder)
    response = client.post("/devices/new/", {"product": "thermo-b", "identifier": "x-1"})
    assert response.status_code == 400
    assert 'data-field="product"' in text(response)
    response = client.post("/devices/new/", {"product": "thermo-a", "identifier": "x-2",
                                             "department": world.org.b.pk})
    assert response.status_code == 400
    assert 'data-field="department"' in text(response)
    assert not Device.objects.filter(identifier__in=["x-1", "x-2"]).exists()


def test_bad_input_shows_the_form_again_with_reasons(world, client_of):
    client = client_of(world.root)
    response = client.post("/devices/new/", {"product": "", "identifier": "bad id!",
                                             "secret": "short"})
    assert response.status_code == 400
    body = text(response)
    for field in ("product", "identifier", "secret"):
        assert f'data-field="{field}"' in body
    assert 'value="bad id!"' in body
    assert Device.objects.count() == 2


def test_an_http_product_gets_curl_with_the_edge_url(world, client_of, settings):
    settings.EDGE_PUBLIC_HOST = "iot.example.com"
    settings.EDGE_HTTP_PORT = 18080
    product = create_product("hthermo", world.org.a)
    product.protocol = "http"
    product.save(update_fields=["protocol"])
    response = client_of(world.root).post("/devices/new/", {
        "product": "hthermo", "identifier": "http-9", "secret": "pa55word-x"})
    assert response.status_code == 200, text(response)
    body = text(response)
    assert "curl -s -u http-9:pa55word-x http://iot.example.com:18080/v1/devices/http-9/datas" \
        in body
    assert "mosquitto_pub" not in body


@pytest.mark.parametrize("protocol, expected", [
    ("coap", "coap-client-notls -m post"), ("tcp", "socket.create_connection"),
    ("udp", "SOCK_DGRAM"), ("websocket", "mosquitto_pub")])
def test_each_transport_gets_its_snippet(world, rf, settings, protocol, expected):
    settings.ALLOWED_HOSTS = ["console.example.com"]
    product = world.product_a
    product.protocol = protocol
    device = Device(identifier="d-1", product=product)
    request = rf.get("/devices/new/", HTTP_HOST="console.example.com:8000")
    connection = snippets.connection_for(request, device, "it's a secret")
    assert connection.host == "console.example.com"
    code = "\n".join(s.code for s in connection.snippets)
    assert expected in code
    if protocol in ("tcp", "udp"):  # the Python snippet is valid Python with the report
        compile(connection.snippets[0].code, "snippet", "exec")
        report = json.loads(ast.literal_eval(code.split("REPORT = ", 1)[1].split("\n", 1)[0]))
        assert report["devices"][0]["services"][0]["serviceCode"] == "env"


def test_a_transport_turned_off_gets_no_snippet(world, rf, settings):
    settings.EDGE_COAP_PORT = 0
    product = world.product_a
    product.protocol = "coap"
    connection = snippets.connection_for(rf.get("/"), Device(identifier="d", product=product),
                                         "secret-1")
    assert connection.snippets == []


def test_adding_needs_the_permission(world, client_of):
    client = client_of(world.alice)  # views and changes devices, may not add
    assert client.get("/devices/new/").status_code == 403
    assert client.post("/devices/new/", {"product": "thermo-a",
                                         "identifier": "nope"}).status_code == 403
    assert not Device.objects.filter(identifier="nope").exists()
    assert "/devices/new/" not in text(client.get("/devices/"))


def test_the_device_list_links_to_the_form(world, client_of, adder):
    assert 'href="/devices/new/"' in text(client_of(adder).get("/devices/"))


def _csv(text: str):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile("devices.csv", text.encode(), content_type="text/csv")


def test_import_creates_devices_and_offers_their_secrets_once(world, client_of, adder):
    client = client_of(adder)
    assert client.get("/devices/import/").status_code == 200
    response = client.post("/devices/import/", {"file": _csv(
        "identifier,product,name\nimp-1,thermo-a,One\nimp-2,thermo-a,Two\n")})
    assert response.status_code == 200, text(response)
    assert 'data-testid="import-done"' in text(response)
    assert set(Device.objects.filter(identifier__startswith="imp-").values_list(
        "department", flat=True)) == {world.org.a.pk}
    link = response.context["secrets_url"]
    secrets = client.get(link)
    assert secrets.status_code == 200 and "imp-1," in secrets.content.decode()
    assert client.get(link).status_code == 404


def test_import_lists_each_bad_row_and_imports_nothing(world, client_of, adder):
    response = client_of(adder).post("/devices/import/", {"file": _csv(
        "identifier,product\nok-1,thermo-a\nbad-1,thermo-b\nbad 2,thermo-a\n")})
    assert response.status_code == 400
    errors = response.context["errors"]
    assert [e["row"] for e in errors] == [2, 3]
    assert errors[0]["identifier"] == "bad-1"
    assert 'data-testid="import-errors"' in text(response)
    assert not Device.objects.filter(identifier__in=["ok-1", "bad-1"]).exists()


def test_import_checks_only_when_asked(world, client_of):
    response = client_of(world.root).post("/devices/import/", {
        "file": _csv("identifier,product\ndry-1,thermo-a\n"), "dry_run": "on"})
    assert response.status_code == 200
    assert not Device.objects.filter(identifier="dry-1").exists()


def test_import_needs_the_permission(world, client_of):
    client = client_of(world.alice)
    assert client.get("/devices/import/").status_code == 403
    assert client.post("/devices/import/", {"file": _csv(
        "identifier,product\nno-1,thermo-a\n")}).status_code == 403
    assert not Device.objects.filter(identifier="no-1").exists()


GROUPER = (*OPERATOR_PERMISSIONS, "devices.view_devicegroup", "devices.add_devicegroup",
           "devices.change_devicegroup")


def test_groups_are_created_and_filled_within_the_scope(world, client_of):
    from webapp.devices.models import DeviceGroup

    grouper = world.org.user("grouper", world.org.a, GROUPER, scope="department")
    client = client_of(grouper)
    assert client.get("/devices/groups/").status_code == 200
    response = client.post("/devices/groups/new/", {"name": "Boilers", "description": "hot"})
    assert response.status_code == 302
    group = DeviceGroup.objects.get(name="Boilers")
    assert group.department == world.org.a
    assert client.post("/devices/groups/new/", {"name": "Boilers"}).status_code == 400
    assert client.post("/devices/groups/new/", {
        "name": "Elsewhere", "department": world.org.b.pk}).status_code == 400
    # Another department's device refuses the whole change.
    client.post(f"/devices/groups/{group.pk}/members/", {"add": "dev-a1, dev-b1"})
    assert not group.devices.exists()
    client.post(f"/devices/groups/{group.pk}/members/", {"add": "dev-a1"})
    assert list(group.devices.values_list("identifier", flat=True)) == ["dev-a1"]
    page = text(client.get("/devices/groups/"))
    assert "Boilers" in page and f"?group={group.pk}" in page
    assert "dev-a1" in text(client.get(f"/devices/?group={group.pk}"))
    client.post(f"/devices/groups/{group.pk}/members/", {"remove": "dev-a1"})
    assert not group.devices.exists()
    # Another department's group is out of reach.
    other = DeviceGroup.objects.create(name="B only", department=world.org.b)
    assert "B only" not in text(client.get("/devices/groups/"))
    client.post(f"/devices/groups/{other.pk}/members/", {"add": "dev-a1"})
    assert not other.devices.exists()


def test_groups_need_their_permissions(world, client_of):
    from webapp.devices.models import DeviceGroup

    client = client_of(world.alice)
    assert client.get("/devices/groups/").status_code == 403
    assert client.post("/devices/groups/new/", {"name": "Nope"}).status_code == 403
    assert not DeviceGroup.objects.filter(name="Nope").exists()


@pytest.mark.parametrize("configured, opened", [("", "[::1]:8000"), ("::1", "localhost"),
                                                ("[::1]", "localhost")])
def test_an_ipv6_edge_host_is_bare_for_tools_and_bracketed_in_urls(world, rf, settings,
                                                                   configured, opened):
    settings.EDGE_PUBLIC_HOST = configured
    settings.ALLOWED_HOSTS = ["*"]
    request = rf.get("/", HTTP_HOST=opened)
    assert snippets.public_host(request) == "::1"
    for protocol, expected in (("mqtt", "-h ::1 "), ("http", "http://[::1]:"),
                               ("coap", "coap://[::1]:")):
        product = world.product_a
        product.protocol = protocol
        device = Device(identifier="d6", product=product)
        code = "\n".join(s.code for s in snippets.connection_for(request, device, "s").snippets)
        assert expected in code, (protocol, code)
