"""Connection history: the edge's ``status`` events kept per device (with reason, address,
node and transport), "last seen" moving on the device's messages, the API and its scope, and
retention."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from tests.devices.conftest import now_ms
from tests.system.conftest import Org, make_device, make_product
from webapp.devices.models import Device, DeviceConnection
from webapp.devices.tasks import sweep_offline
from webapp.telemetry.actions import apply_retention
from webapp.telemetry.ingest import decode_entries

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("commit_hooks")]


@pytest.fixture
def device(api, thermo_payload):
    api.post("/api/v1/products/", thermo_payload, format="json")
    api.post("/api/v1/devices/", {"product": "thermo", "identifier": "dev-1"}, format="json")
    return Device.objects.get(identifier="dev-1")


def status(s: str, ts: int, **extra):
    return {"t": "status", "dev": "dev-1", "s": s, "ts": ts, "node": "node-a",
            "addr": "10.0.0.7:40001", "reason": None, **extra}


def test_status_events_are_kept_with_reason_address_node_and_transport(device, edge, api):
    ts = now_ms()
    edge.uplink(status("online", ts - 2000, transport="coap"))
    edge.uplink(status("offline", ts - 1000, transport="coap", reason="idle"),
                {**status("online", ts), "addr": "10.0.0.8:1883"})  # older edge: no transport
    rows = list(DeviceConnection.objects.filter(device=device).values_list(
        "event", "reason", "address", "node", "transport"))
    assert rows == [("online", "", "10.0.0.8:1883", "node-a", "mqtt"),
                    ("offline", "idle", "10.0.0.7:40001", "node-a", "coap"),
                    ("online", "", "10.0.0.7:40001", "node-a", "coap")]

    body = api.get("/api/v1/devices/dev-1/connections/?page_size=2").json()
    assert body["count"] == 3
    assert [(r["event"], r["transport"]) for r in body["results"]] == [
        ("online", "mqtt"), ("offline", "coap")]
    assert body["results"][1]["reason"] == "idle"
    assert set(body["results"][0]) == {"event", "at", "reason", "address", "node", "transport"}


def test_a_redelivered_entry_adds_no_second_row(device, worker):
    entry = (b"1700000000000-0", {b"b": json.dumps([status("online", now_ms())]).encode()})
    for _ in range(2):
        batch, _ids = decode_entries([entry])
        worker.store(batch)
    assert DeviceConnection.objects.filter(device=device).count() == 1


def test_events_of_unknown_devices_are_skipped(device, edge):
    edge.uplink({**status("online", now_ms()), "dev": "ghost"})
    assert not DeviceConnection.objects.exists()


def test_last_seen_moves_on_data_once_per_interval(device, edge, settings):
    settings.DEVICE_LAST_SEEN_INTERVAL = 30
    ts = now_ms() - 120_000
    edge.uplink(status("online", ts))

    def data(at: int):
        return {"t": "data", "dev": "dev-1", "prod": "thermo", "svc": "env", "ts": at,
                "et": None, "v": {"temperature": 20}, "mid": 1}

    def seen() -> datetime:
        device.refresh_from_db()
        assert device.last_seen is not None
        return device.last_seen

    def at(ms: int) -> datetime:
        return datetime.fromtimestamp(ms / 1000, tz=UTC)

    assert seen() == at(ts)
    edge.uplink(data(ts + 40_000), data(ts + 50_000))  # one write for the batch: the newest
    assert seen() == at(ts + 50_000)
    edge.uplink(data(ts + 60_000))  # within the interval of the last write: skipped
    assert seen() == at(ts + 50_000)
    edge.uplink(data(ts + 90_000))
    assert seen() == at(ts + 90_000)
    # An older status event does not take it back.
    edge.uplink(status("offline", ts + 70_000, reason="keepalive"))
    assert seen() == at(ts + 90_000)
    device.refresh_from_db()
    assert device.connect_status == "offline"


def test_a_device_of_a_stopped_node_gets_an_inferred_disconnect(device, edge):
    edge.connect("dev-1", node="node-gone")  # no heartbeat from this node: it is stale
    assert sweep_offline() == 1
    latest = DeviceConnection.objects.filter(device=device).first()
    assert latest is not None
    assert (latest.event, latest.reason, latest.node, latest.source) == (
        "offline", "node_lost", "node-gone", None)


def test_scoped_operator_cannot_read_another_departments_history(redis_prefix):
    org = Org()
    ours = make_device("ours", make_product("pa", org.a), org.a)
    theirs = make_device("theirs", make_product("pb", org.b), org.b)
    for dev in (ours, theirs):
        DeviceConnection.objects.create(device=dev, event="online", at=timezone.now())
    client = APIClient()
    client.force_authenticate(org.user("op", org.a, ["devices.view_device"], scope="department"))
    assert client.get("/api/v1/devices/theirs/connections/").status_code == 404
    mine = client.get("/api/v1/devices/ours/connections/")
    assert mine.status_code == 200 and mine.json()["count"] == 1


def test_retention_prunes_old_history(device, settings):
    settings.CONNECTION_HISTORY_DAYS = 30
    now = timezone.now()
    DeviceConnection.objects.create(device=device, event="online", at=now - timedelta(days=31))
    DeviceConnection.objects.create(device=device, event="offline", at=now - timedelta(days=1))
    assert apply_retention()["connections"] == 1
    assert list(DeviceConnection.objects.values_list("event", flat=True)) == ["offline"]
    settings.CONNECTION_HISTORY_DAYS = 0
    DeviceConnection.objects.create(device=device, event="online", at=now - timedelta(days=99))
    assert apply_retention()["connections"] == 0
