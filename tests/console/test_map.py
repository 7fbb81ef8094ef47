"""The device map: its page, the devices' JSON the map draws (scope, filters, cap, hostile
names) and one device's latest values for a popup."""

from __future__ import annotations

import pytest
from django.test import Client

from tests.console.conftest import create_device, data_event

pytestmark = pytest.mark.django_db

XSS = '<img src=x onerror="alert(1)"><script>alert(2)</script>'


def devices(client: Client, query: str = "") -> dict:
    response = client.get(f"/map/devices.json{query}")
    assert response.status_code == 200, response.content[:300]
    assert response["Content-Type"] == "application/json"
    return response.json()


def ids(answer: dict) -> set[str]:
    return {d["id"] for d in answer["devices"]}


def test_markers_follow_the_data_scope(world, client_of):
    """Bob (department B) never sees dev-a1; root sees both; the marker carries what the
    popup shows."""
    assert ids(devices(client_of(world.bob))) == {"dev-b1"}
    assert ids(devices(client_of(world.alice))) == {"dev-a1"}
    answer = devices(client_of(world.root))
    assert ids(answer) == {"dev-a1", "dev-b1"}
    a1 = next(d for d in answer["devices"] if d["id"] == "dev-a1")
    assert a1["lat"] == pytest.approx(31.2304) and a1["lon"] == pytest.approx(121.4737)
    assert a1["name"] == "Boiler A" and a1["product"] == "thermo-a"
    assert a1["product_name"] == "Thermometer thermo-a" and a1["status"] == "unconnected"
    assert a1["url"] == "/devices/dev-a1/" and a1["detail"] == "/map/devices/dev-a1.json"
    assert answer["count"] == 2 and answer["truncated"] is False and answer["limit"] == 5000


def test_other_departments_devices_are_refused_by_name(world, client_of):
    """Naming dev-a1 in a query, a filter or the detail URL gets Bob nothing of it."""
    bob = client_of(world.bob)
    assert bob.get("/map/devices/dev-a1.json").status_code == 404
    assert ids(devices(bob, "?q=dev-a1")) == set()
    assert ids(devices(bob, "?product=thermo-a")) == set()
    assert bob.get("/map/devices/dev-b1.json").status_code == 200


def test_devices_without_coordinates_are_not_listed(world, client_of):
    create_device("no-location", world.product_a, world.org.a, name="Nowhere")
    create_device("half-location", world.product_a, world.org.a, latitude="10.5")
    assert ids(devices(client_of(world.alice))) == {"dev-a1"}


def test_filters_run_on_the_server(world, client_of):
    from webapp.devices.models import Device, DeviceGroup

    create_device("dev-a2", world.product_a, world.org.a, name="Pump A",
                  latitude="31.3", longitude="121.5")
    Device.objects.filter(identifier="dev-a2").update(connect_status="online")
    group = DeviceGroup.objects.create(name="Pumps", department=world.org.a)
    group.devices.add(Device.objects.get(identifier="dev-a2"))
    root = client_of(world.root)
    assert ids(devices(root, "?status=online")) == {"dev-a2"}
    assert ids(devices(root, "?status=unconnected")) == {"dev-a1", "dev-b1"}
    assert ids(devices(root, "?product=thermo-b")) == {"dev-b1"}
    assert ids(devices(root, f"?group={group.pk}")) == {"dev-a2"}
    assert ids(devices(root, "?group=Pumps")) == {"dev-a2"}
    assert ids(devices(root, "?q=boiler")) == {"dev-a1", "dev-b1"}
    assert ids(devices(root, "?q=pump&status=online&product=thermo-a")) == {"dev-a2"}
    # Unknown values match nothing rather than everything.
    answer = devices(root, "?status=sleeping")
    assert answer["devices"] == [] and answer["invalid"] is True
    assert ids(devices(root, "?q=" + "x" * 5000)) == set()  # cut to 100 characters


def test_the_number_of_markers_is_capped(world, client_of, monkeypatch):
    from webapp.console.views import device_map

    monkeypatch.setattr(device_map, "MAP_LIMIT", 2)
    create_device("dev-a2", world.product_a, world.org.a, latitude="1", longitude="2")
    answer = devices(client_of(world.root))
    assert answer["count"] == 2 and answer["truncated"] is True and answer["limit"] == 2
    assert ids(answer) == {"dev-a1", "dev-a2"}  # in identifier order
    assert not devices(client_of(world.alice), "?q=dev-a1")["truncated"]


def test_popup_values_carry_the_thing_models_names_and_units(world, client_of, ingest):
    ingest.send(data_event("dev-a1", "thermo-a", {"temperature": 21.5, "humidity": 40}))
    answer = client_of(world.alice).get("/map/devices/dev-a1.json").json()
    values = {v["code"]: v for v in answer["values"]}
    assert values["temperature"]["value"] == "21.5" and values["temperature"]["unit"] == "C"
    assert values["temperature"]["name"] == "Temperature" and values["temperature"]["ts"]
    assert values["humidity"]["value"] == "40" and values["humidity"]["name"] == "humidity"
    assert "mode" not in values  # never reported
    empty = client_of(world.bob).get("/map/devices/dev-b1.json").json()
    assert empty["values"] == []


def test_hostile_names_are_returned_as_data(world, client_of):
    """A name with markup comes back as a JSON string (map.js sets it with textContent) and
    the map page never writes device names into its HTML."""
    from webapp.devices.models import Device

    Device.objects.filter(identifier="dev-a1").update(name=XSS)
    client = client_of(world.alice)
    answer = devices(client)
    assert answer["devices"][0]["name"] == XSS
    assert client.get("/map/devices/dev-a1.json").json()["name"] == XSS
    page = client.get("/map/").content.decode()
    assert "onerror" not in page and "<script>alert" not in page
    # map.js builds popups from text nodes only
    from pathlib import Path

    script = (Path(__file__).resolve().parents[2]
              / "webapp/console/static/console/map.js").read_text()
    assert "innerHTML" not in script and "insertAdjacentHTML" not in script


def test_pages_and_json_need_the_permission(world, client_of):
    nobody = client_of(world.nobody)
    assert nobody.get("/map/").status_code == 403
    assert nobody.get("/map/devices.json").status_code == 403
    assert nobody.get("/map/devices.json").json() == {"error": "forbidden"}
    assert nobody.get("/map/devices/dev-a1.json").status_code == 403
    anonymous = Client()
    assert anonymous.get("/map/").status_code == 302
    answer = anonymous.get("/map/devices.json")
    assert answer.status_code == 401 and answer.json() == {"error": "signed_out"}


def test_tile_settings_are_rendered_as_configured(world, client_of, settings):
    client = client_of(world.alice)
    settings.MAP_TILE_URL = ""
    page = client.get("/map/").content.decode()
    assert 'data-tile-url=""' in page and "tile.openstreetmap.org" not in page
    assert "set MAP_TILE_URL" in page  # the note saying how to get a base map
    settings.MAP_TILE_URL = "https://tiles.example.net/{z}/{x}/{y}.png"
    settings.MAP_TILE_ATTRIBUTION = '&copy; <a href="https://osm.org/copyright">OSM</a>'
    settings.MAP_MAX_ZOOM = 16
    page = client.get("/map/").content.decode()
    assert 'data-tile-url="https://tiles.example.net/{z}/{x}/{y}.png"' in page
    assert 'data-max-zoom="16"' in page
    assert "&amp;copy; &lt;a href=&quot;https://osm.org/copyright&quot;&gt;OSM" in page
    assert "set MAP_TILE_URL" not in page


def test_the_page_keeps_its_filters_for_the_json(world, client_of):
    page = client_of(world.alice).get("/map/?product=thermo-a&status=online&q=boil&x=1")
    html = page.content.decode()
    assert 'data-url="/map/devices.json?product=thermo-a&amp;status=online&amp;q=boil"' in html
    assert '<option value="online" selected>' in html
    assert "thermo-b" not in html
