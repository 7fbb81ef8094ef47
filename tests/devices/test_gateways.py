"""Gateways and sub-devices: the ThingLinks topo/add, delete, update and query flows with their
responses, commands through the gateway, and status following the gateway."""

from __future__ import annotations

import pytest

from tests.devices.conftest import now_ms
from webapp.devices.models import Device

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("commit_hooks")]


def topo(op, body, dev="gw-1", mid=None):
    return {"t": "topo", "dev": dev, "prod": "gw", "op": op, "body": body, "ts": now_ms(),
            "mid": mid}


def answer(edge, op, dev="gw-1"):
    [entry] = edge.take()
    assert entry["topic"] == f"/v1/devices/{dev}/topo/{op}Response"
    return entry["message"]


@pytest.fixture
def acme(api, thermo_payload, redis_prefix):
    thermo_payload.update(identifier="acme-t1", manufacturer="acme", model="T1")
    assert api.post("/api/v1/products/", thermo_payload, format="json").status_code == 201


def test_topo_add_creates_sub_devices_and_publishes_them(api, thermo, acme, gateway, edge,
                                                          redis_client, redis_prefix):
    """Sub-devices are created by product identifier or manufacturer+model, and the edge
    learns that the gateway speaks for them."""
    edge.connect("gw-1")
    edge.take()
    edge.uplink(topo("add", {"deviceInfos": [
        {"nodeId": "s-1", "name": "first", "productIdentification": "thermo"},
        {"nodeId": "s-2", "name": "second", "manufacturerId": "acme", "model": "T1"},
    ]}, mid=5))
    message = answer(edge, "add")
    assert message["head"]["mid"] == 5
    body = message["dataBody"]
    assert body["statusCode"] == 0
    assert [d["deviceInfo"]["deviceId"] for d in body["data"]] == ["s-1", "s-2"]
    assert body["data"][1]["deviceInfo"]["productIdentification"] == "acme-t1"

    sub = Device.objects.get(identifier="s-1")
    assert sub.node_type == "sub" and sub.gateway.identifier == "gw-1"
    assert sub.status == "activated" and sub.name == "first"
    published = redis_client.hgetall(f"{redis_prefix}dev:s-2")
    assert published[b"gateway"] == b"gw-1" and published[b"node_type"] == b"sub"
    assert published[b"product"] == b"acme-t1"

    listed = api.get("/api/v1/devices/?gateway=gw-1").json()
    assert [d["identifier"] for d in listed["results"]] == ["s-1", "s-2"]

    # Adding again is harmless.
    edge.uplink(topo("add", {"deviceInfos": [{"nodeId": "s-1", "productIdentification":
                                              "thermo"}]}))
    assert answer(edge, "add")["dataBody"]["statusCode"] == 0
    assert Device.objects.filter(gateway__identifier="gw-1").count() == 2


def test_topo_add_reports_bad_items(api, thermo, gateway, device, edge):
    """Unknown products, taken identifiers and bad node ids fail per item with a reason."""
    edge.connect("gw-1")
    edge.take()
    edge.uplink(topo("add", {"deviceInfos": [
        {"nodeId": "s-1", "productIdentification": "nope"},
        {"nodeId": "dev-1", "productIdentification": "thermo"},
        {"nodeId": "bad id!", "productIdentification": "thermo"},
        {"nodeId": "s-4", "manufacturerId": "x", "model": "y"},
        {"nodeId": "s-5", "productIdentification": "thermo"},
    ]}))
    body = answer(edge, "add")["dataBody"]
    assert body["statusCode"] == 1 and "4 of 5 failed" in body["statusDesc"]
    reasons = [d["statusDesc"] for d in body["data"]]
    assert "unknown product nope" in reasons[0]
    assert "not a sub-device of gw-1" in reasons[1]
    assert "nodeId" in reasons[2]
    assert "no product has manufacturer x" in reasons[3]
    assert reasons[4] == "successful"
    assert Device.objects.get(identifier="dev-1").gateway is None


def test_only_gateways_manage_sub_devices(api, thermo, device, edge):
    """A plain device's topo request is refused with the reason."""
    edge.connect("dev-1")
    edge.uplink(topo("add", {"deviceInfos": [{"nodeId": "s-1", "productIdentification":
                                              "thermo"}]}, dev="dev-1"))
    body = answer(edge, "add", dev="dev-1")["dataBody"]
    assert body["statusCode"] == 1 and "not a gateway" in body["statusDesc"]
    assert not Device.objects.filter(identifier="s-1").exists()
    edge.uplink(topo("add", {"deviceInfos": "nope"}, dev="dev-1"))
    assert answer(edge, "add", dev="dev-1")["dataBody"]["statusCode"] == 1


def test_status_commands_and_shadow_travel_through_the_gateway(api, thermo, gateway, edge):
    """A sub-device's command goes on the gateway's topic; topo/update brings it online and
    the gateway going offline takes it offline."""
    edge.connect("gw-1")
    edge.uplink(topo("add", {"deviceInfos": [{"nodeId": "s-1", "productIdentification":
                                              "thermo"}]}))
    edge.take()
    command = api.post("/api/v1/devices/s-1/commands/", {
        "service": "env", "command": "set_interval", "params": {"seconds": 3}},
        format="json").json()
    assert command["status"] == "sent"
    [entry] = edge.take()
    assert entry["topic"] == "/v1/devices/gw-1/command" and entry["dev"] == "s-1"
    assert entry["message"]["dataBody"]["deviceIdentification"] == "s-1"
    edge.uplink({"t": "cmdrsp", "dev": "gw-1", "mid": command["id"], "svc": "env",
                 "cmd": "set_interval", "err": 0, "params": {"result": "ok"}, "ts": now_ms()})
    assert api.get(f"/api/v1/commands/{command['id']}/").json()["status"] == "succeeded"

    edge.uplink(topo("update", {"deviceStatuses": [{"deviceId": "s-1", "status": "ONLINE"},
                                                   {"deviceId": "ghost", "status": "ONLINE"}]}))
    body = answer(edge, "update")["dataBody"]
    assert [d["statusCode"] for d in body["data"]] == [0, 1]
    assert "unknown sub-device ghost" in body["data"][1]["statusDesc"]
    assert api.get("/api/v1/devices/s-1/").json()["connect_status"] == "online"

    edge.disconnect("gw-1")
    assert api.get("/api/v1/devices/s-1/").json()["connect_status"] == "offline"
    waiting = api.post("/api/v1/devices/s-1/commands/", {
        "service": "env", "command": "set_interval", "params": {"seconds": 4}},
        format="json").json()
    assert waiting["status"] == "pending"
    edge.connect("gw-1")
    [entry] = edge.take()
    assert entry["message"]["head"]["mid"] == waiting["id"]
    assert entry["topic"] == "/v1/devices/gw-1/command"


def test_topo_query_and_delete(api, thermo, gateway, edge, redis_client, redis_prefix):
    """query answers with the sub-devices' info; delete removes only the gateway's own."""
    assert api.post("/api/v1/devices/", {"product": "thermo", "identifier": "other"},
                    format="json").status_code == 201
    edge.connect("gw-1")
    edge.uplink(topo("add", {"deviceInfos": [
        {"nodeId": "s-1", "productIdentification": "thermo"},
        {"nodeId": "s-2", "productIdentification": "thermo"}]}))
    edge.take()
    edge.uplink(topo("query", {"deviceIds": ["s-2", "other"]}))
    data = answer(edge, "query")["dataBody"]["data"]
    assert data[0]["deviceInfo"]["deviceId"] == "s-2"
    assert data[0]["deviceInfo"]["gatewayId"] == "gw-1"
    assert data[0]["deviceInfo"]["nodeType"] == "SUB"
    assert data[1]["statusCode"] == 1  # not this gateway's
    edge.uplink(topo("query", {}))
    assert len(answer(edge, "query")["dataBody"]["data"]) == 2

    edge.uplink(topo("delete", {"deviceIds": ["s-1", "other"]}))
    body = answer(edge, "delete")["dataBody"]
    assert [d["statusCode"] for d in body["data"]] == [0, 1]
    assert not Device.objects.filter(identifier="s-1").exists()
    assert Device.objects.filter(identifier="other").exists()
    assert not redis_client.exists(f"{redis_prefix}dev:s-1")


def test_api_creates_sub_devices_under_gateways_only(api, thermo, gateway, device,
                                                     redis_client, redis_prefix):
    """A device created with `gateway` is a sub-device; the gateway must be a gateway."""
    response = api.post("/api/v1/devices/", {"product": "thermo", "identifier": "s-9",
                                             "gateway": "gw-1"}, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["node_type"] == "sub"
    assert redis_client.hget(f"{redis_prefix}dev:s-9", "gateway") == b"gw-1"
    refused = api.post("/api/v1/devices/", {"product": "thermo", "identifier": "s-10",
                                            "gateway": "dev-1"}, format="json")
    assert refused.status_code == 400 and "gateway" in refused.json()["errors"]
    detached = api.patch("/api/v1/devices/s-9/", {"gateway": None}, format="json").json()
    assert detached["node_type"] == "direct" and detached["gateway"] is None
