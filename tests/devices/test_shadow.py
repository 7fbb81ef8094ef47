"""The device shadow: desired from the API with optimistic concurrency, the delta to the
device (at once and on reconnect), reported from data and from /shadow/update."""

from __future__ import annotations

import pytest

from tests.devices.conftest import now_ms

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("commit_hooks")]

LAMP = {
    "identifier": "lamp",
    "name": "Lamp",
    "services": [{
        "code": "light",
        "properties": [
            {"code": "power", "datatype": "bool", "access": "RW"},
            {"code": "brightness", "datatype": "int", "min": 0, "max": 100, "access": "RWE"},
            {"code": "temperature", "datatype": "decimal", "access": "RE"},
        ],
    }],
}


@pytest.fixture
def lamp(api, redis_prefix):
    assert api.post("/api/v1/products/", LAMP, format="json").status_code == 201
    assert api.post("/api/v1/devices/", {"product": "lamp", "identifier": "lamp-1"},
                    format="json").status_code == 201
    return "lamp-1"


def shadow_url(device):
    return f"/api/v1/devices/{device}/shadow/"


def test_desired_state_reaches_the_device_as_a_delta(api, lamp, edge):
    """PUT desired bumps the version, shows the delta and sends it to the online device."""
    edge.connect(lamp)
    response = api.put(shadow_url(lamp), {"desired": {"light": {"power": True,
                                                               "brightness": 70}},
                                          "version": 0}, format="json")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["version"] == 1
    assert body["delta"] == {"light": {"power": True, "brightness": 70}}
    [entry] = edge.take()
    assert entry["topic"] == f"/v1/devices/{lamp}/shadow/delta"
    assert entry["message"]["dataBody"]["version"] == 1
    assert entry["message"]["dataBody"]["delta"] == {"light": {"power": True, "brightness": 70}}


def test_stale_version_is_refused(api, lamp):
    """A write based on an old version gets 409 `version_conflict` with the current one."""
    assert api.put(shadow_url(lamp), {"desired": {"light": {"power": True}}, "version": 0},
                   format="json").status_code == 200
    stale = api.put(shadow_url(lamp), {"desired": {"light": {"power": False}}, "version": 0},
                    format="json")
    assert stale.status_code == 409
    assert stale.json()["code"] == "version_conflict" and stale.json()["version"] == 1
    assert api.get(shadow_url(lamp)).json()["desired"] == {"light": {"power": True}}


@pytest.mark.parametrize(("desired", "code"), [
    ({"light": {"colour": "red"}}, "unknown_property"),
    ({"heating": {"power": True}}, "unknown_service"),
    ({"light": {"temperature": 20.0}}, "not_writable"),
    ({"light": {"brightness": 300}}, "out_of_range"),
    ({"light": {"power": "yes"}}, "wrong_type"),
])
def test_invalid_desired_state(api, lamp, desired, code):
    """Desired values are checked against the thing model, writable properties only."""
    response = api.put(shadow_url(lamp), {"desired": desired}, format="json")
    assert response.status_code == 400, response.json()
    assert response.json()["code"] == "invalid_shadow"
    assert response.json()["errors"][0]["code"] == code
    assert api.get(shadow_url(lamp)).json()["version"] == 0


def test_reported_data_empties_the_delta(api, lamp, edge):
    """Once the device's data shows the desired values, the delta is empty."""
    api.put(shadow_url(lamp), {"desired": {"light": {"power": True, "brightness": 70}}},
            format="json")
    edge.uplink({"t": "data", "dev": lamp, "prod": "lamp", "svc": "light", "ts": now_ms(),
                 "et": None, "v": {"power": True}})
    assert api.get(shadow_url(lamp)).json()["delta"] == {"light": {"brightness": 70}}
    edge.uplink({"t": "data", "dev": lamp, "prod": "lamp", "svc": "light", "ts": now_ms() + 1,
                 "et": None, "v": {"brightness": 70}})
    body = api.get(shadow_url(lamp)).json()
    assert body["delta"] == {}
    assert body["reported"]["light"]["brightness"]["value"] == 70
    assert body["reported"]["light"]["brightness"]["ts"].endswith("Z")


def test_device_reports_through_shadow_update(api, lamp, edge):
    """/shadow/update merges reported, bumps the version and answers with the delta left."""
    edge.connect(lamp)
    api.put(shadow_url(lamp), {"desired": {"light": {"power": True, "brightness": 70}}},
            format="json")
    edge.take()
    edge.uplink({"t": "shadow", "dev": lamp, "prod": "lamp", "op": "update", "mid": 12,
                 "body": {"reported": {"light": {"power": True, "brightness": 70}}},
                 "ts": now_ms()})
    [entry] = edge.take()
    assert entry["topic"] == f"/v1/devices/{lamp}/shadow/updateResponse"
    assert entry["message"]["head"]["mid"] == 12
    answer = entry["message"]["dataBody"]
    assert answer["statusCode"] == 0 and answer["delta"] == {} and answer["version"] == 2
    assert api.get(shadow_url(lamp)).json()["delta"] == {}


def test_bad_shadow_update_is_answered_with_reasons(api, lamp, edge):
    """Unknown properties, bad values and a stale version are reported back to the device."""
    edge.connect(lamp)
    edge.uplink({"t": "shadow", "dev": lamp, "prod": "lamp", "op": "update",
                 "body": {"reported": {"light": {"brightness": 500, "colour": 1}}},
                 "ts": now_ms()})
    answer = edge.take()[0]["message"]["dataBody"]
    assert answer["statusCode"] == 1
    assert {e["code"] for e in answer["errors"]} == {"out_of_range", "unknown_property"}
    edge.uplink({"t": "shadow", "dev": lamp, "prod": "lamp", "op": "update",
                 "body": {"reported": {"light": {"power": False}}, "version": 9},
                 "ts": now_ms()})
    answer = edge.take()[0]["message"]["dataBody"]
    assert answer["errors"][0]["code"] == "version_conflict"
    assert api.get(shadow_url(lamp)).json()["reported"] == {}
    edge.uplink({"t": "shadow", "dev": lamp, "prod": "lamp", "op": "update", "body": [1],
                 "ts": now_ms()})
    assert edge.take()[0]["message"]["dataBody"]["errors"][0]["code"] == "invalid_body"


def test_shadow_get_and_delta_on_reconnect(api, lamp, edge):
    """An offline device gets the delta when it connects; /shadow/get returns the document."""
    api.put(shadow_url(lamp), {"desired": {"light": {"brightness": 40}}}, format="json")
    assert edge.take() == []
    edge.connect(lamp)
    [delta] = edge.take()
    assert delta["topic"].endswith("/shadow/delta")
    assert delta["message"]["dataBody"]["delta"] == {"light": {"brightness": 40}}

    edge.uplink({"t": "shadow", "dev": lamp, "prod": "lamp", "op": "get", "body": {},
                 "ts": now_ms()})
    [entry] = edge.take()
    assert entry["topic"] == f"/v1/devices/{lamp}/shadow/getResponse"
    doc = entry["message"]["dataBody"]
    assert doc["desired"] == {"light": {"brightness": 40}} and doc["version"] == 1
    assert doc["delta"] == {"light": {"brightness": 40}} and doc["reported"] == {}


def test_patch_merges_and_null_removes(api, lamp):
    """PATCH changes part of desired; null removes a property."""
    api.put(shadow_url(lamp), {"desired": {"light": {"power": True, "brightness": 10}}},
            format="json")
    body = api.patch(shadow_url(lamp), {"desired": {"light": {"brightness": None}},
                                        "version": 1}, format="json").json()
    assert body["desired"] == {"light": {"power": True}} and body["version"] == 2


def form_data(response) -> dict:
    """The POST data of an admin change page as it was rendered (form and inlines)."""
    data: dict = {}

    def add(form) -> None:
        for name in form.fields:
            value = form[name].value()
            if value is None:
                continue
            if isinstance(value, list | tuple):
                data[form.add_prefix(name)] = [str(v) for v in value]
            elif isinstance(value, bool):
                if value:
                    data[form.add_prefix(name)] = "on"
            else:
                data[form.add_prefix(name)] = value

    add(response.context["adminform"].form)
    for inline in response.context["inline_admin_formsets"]:
        add(inline.formset.management_form)
        for form in inline.formset.forms:
            add(form)
    return data


def test_admin_sets_desired_through_the_shadow_action(client, admin_user, lamp, edge):
    """Desired state edited in the admin is validated, versioned and sent as a delta."""
    from webapp.devices.models import Device

    edge.connect(lamp)
    edge.take()
    client.force_login(admin_user)
    url = f"/admin/devices/device/{Device.objects.get(identifier=lamp).pk}/change/"
    data = form_data(client.get(url))
    prefix = next(k for k in data if k.endswith("-desired"))
    refused = client.post(url, {**data, prefix: '{"light": {"temperature": 3}}'})
    assert refused.status_code == 200 and b"not writable" in refused.content
    done = client.post(url, {**data, prefix: '{"light": {"brightness": 55}}'})
    assert done.status_code == 302, done.content[:500]
    assert edge.take()[0]["message"]["dataBody"]["delta"] == {"light": {"brightness": 55}}
    shadow = Device.objects.get(identifier=lamp).shadow
    assert shadow.desired == {"light": {"brightness": 55}} and shadow.version == 1
