"""The ingest worker on a real Redis stream and the real database."""

import json
import time

import pytest

from edge.bus.keys import UPLINK_GROUP, Keys
from webapp.devices.models import Device
from webapp.telemetry.actions import persist_latest
from webapp.telemetry.backends import Point, SeriesQuery, get_backend
from webapp.telemetry.ingest import IngestWorker, decode_entries
from webapp.telemetry.models import DeviceMessage

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("commit_hooks")]


@pytest.fixture
def device(api, redis_prefix, thermo_payload):
    api.post("/api/v1/products/", thermo_payload, format="json")
    api.post("/api/v1/devices/", {"product": "thermo", "identifier": "dev-1"}, format="json")
    return Device.objects.get(identifier="dev-1")


@pytest.fixture
def worker(redis_client, redis_prefix):
    w = IngestWorker(redis_client, Keys(redis_prefix), get_backend(), "test-consumer",
                     block_ms=100)
    w.ensure_group()
    return w


def xadd(redis_client, prefix, *events):
    return redis_client.xadd(f"{prefix}uplink", {"b": json.dumps(list(events))})


def now_ms():
    return int(time.time() * 1000)


def series(device, start=0):
    return get_backend().query(SeriesQuery(product=device.product, service="env",
                                           devices=[device.identifier], properties=[],
                                           start=start, end=now_ms() + 10_000))


def test_points_logs_and_status_are_stored_then_acknowledged(device, worker, redis_client,
                                                             redis_prefix):
    """One entry's data, log and status events land, and the entry is acknowledged."""
    ts = now_ms()
    xadd(redis_client, redis_prefix,
         {"t": "status", "dev": "dev-1", "s": "online", "ts": ts - 5, "node": "n1", "addr": ""},
         {"t": "data", "dev": "dev-1", "prod": "thermo", "svc": "env", "ts": ts, "et": None,
          "v": {"temperature": 21.5}, "mid": 1},
         {"t": "log", "dev": "dev-1", "dir": "up", "topic": "/v1/devices/dev-1/datas",
          "payload": "{}", "ok": False, "reason": "temperature=500 is above max 125", "ts": ts})
    assert worker.process(worker.read()) == 1

    rows = series(device)
    assert [(r["ts"], r["temperature"]) for r in rows] == [(ts, 21.5)]
    message = DeviceMessage.objects.get(device_identifier="dev-1")
    assert message.result == "rejected" and "above max" in message.reason
    device.refresh_from_db()
    assert device.connect_status == "online" and device.status == "activated"
    latest = json.loads(redis_client.hget(f"{redis_prefix}latest:dev-1", "env"))
    assert latest["temperature"] == {"value": 21.5, "ts": ts}
    assert redis_client.xpending(f"{redis_prefix}uplink", UPLINK_GROUP)["pending"] == 0
    # Latest values reach SQL through the beat task, not a write per batch.
    assert redis_client.smembers(f"{redis_prefix}latest-dirty") == {b"dev-1"}
    assert persist_latest() == 1
    device.shadow.refresh_from_db()
    assert device.shadow.reported["env"]["temperature"] == {"value": 21.5, "ts": ts}
    assert not redis_client.exists(f"{redis_prefix}latest-dirty")
    assert persist_latest() == 0


def test_redelivery_is_idempotent(device, worker, redis_client, redis_prefix):
    """The same point written twice (a replay after a crash) is stored once, merged."""
    ts = now_ms()
    event = {"t": "data", "dev": "dev-1", "prod": "thermo", "svc": "env", "ts": ts, "et": None,
             "v": {"temperature": 20.0}}
    xadd(redis_client, redis_prefix, event)
    xadd(redis_client, redis_prefix, event, {**event, "v": {"humidity": 40}})
    worker.process(worker.read())
    rows = series(device)
    assert len(rows) == 1
    assert rows[0]["temperature"] == 20.0 and rows[0]["humidity"] == 40


def test_a_replayed_entry_logs_its_messages_once(device, worker, redis_client, redis_prefix):
    """Processing the same stream entries twice (a crash before XACK) adds no log rows."""
    log = {"t": "log", "dev": "dev-1", "dir": "up", "topic": "/v1/devices/dev-1/datas",
           "payload": "{}", "ok": True, "reason": None, "ts": now_ms()}
    xadd(redis_client, redis_prefix, log, log)
    entries = worker.read()
    worker.store(decode_entries(entries)[0])  # stored, then "crashed" before acknowledging
    worker.process(entries)
    assert DeviceMessage.objects.filter(device_identifier="dev-1").count() == 2


def test_parallel_workers_never_lose_each_others_latest_values(device, redis_client,
                                                              redis_prefix, monkeypatch):
    """Two workers merging latest values of one device at once keep both properties."""
    import redis.client

    one = IngestWorker(redis_client, Keys(redis_prefix), get_backend(), "one")
    two = IngestWorker(redis_client, Keys(redis_prefix), get_backend(), "two")
    ts = now_ms()
    temperature = Point("thermo", "env", "dev-1", ts, ts, {"temperature": 1.5})
    humidity = Point("thermo", "env", "dev-1", ts + 1, ts, {"humidity": 7})
    original = redis.client.Pipeline.execute
    interleaved: list[bool] = []

    def read_then_let_the_other_write(pipe, *args, **kwargs):
        result = original(pipe, *args, **kwargs)
        if not interleaved:  # worker one has read; worker two writes before one's CAS
            interleaved.append(True)
            two.update_latest([humidity])
        return result

    monkeypatch.setattr(redis.client.Pipeline, "execute", read_then_let_the_other_write)
    one.update_latest([temperature])
    monkeypatch.undo()
    latest = json.loads(redis_client.hget(f"{redis_prefix}latest:dev-1", "env"))
    assert latest == {"temperature": {"value": 1.5, "ts": ts},
                      "humidity": {"value": 7, "ts": ts + 1}}
    one.update_latest([Point("thermo", "env", "dev-1", ts - 10, ts, {"temperature": 0.0})])
    latest = json.loads(redis_client.hget(f"{redis_prefix}latest:dev-1", "env"))
    assert latest["temperature"]["value"] == 1.5  # an older value never overwrites a newer


def test_entries_trimmed_before_storage_are_reported_and_skipped(device, worker,
                                                                 redis_client, redis_prefix,
                                                                 caplog):
    """A pending entry the edge's MAXLEN trimmed is logged as lost and acknowledged."""
    xadd(redis_client, redis_prefix, {"t": "data", "dev": "dev-1", "prod": "thermo",
                                      "svc": "env", "ts": now_ms(), "et": None,
                                      "v": {"temperature": 5.0}})
    assert len(worker.read()) == 1  # read, not acknowledged
    redis_client.xtrim(f"{redis_prefix}uplink", maxlen=0)
    assert worker.read() == []
    assert "trimmed" in caplog.text
    assert redis_client.xpending(f"{redis_prefix}uplink", UPLINK_GROUP)["pending"] == 0


def test_unacknowledged_entries_of_a_dead_consumer_are_reclaimed(device, redis_client,
                                                                 redis_prefix):
    """Entries read by a consumer that died before acknowledging are taken over."""
    dead = IngestWorker(redis_client, Keys(redis_prefix), get_backend(), "dead", block_ms=100)
    dead.ensure_group()
    xadd(redis_client, redis_prefix, {"t": "data", "dev": "dev-1", "prod": "thermo",
                                      "svc": "env", "ts": now_ms(), "et": None,
                                      "v": {"temperature": 30.0}})
    assert len(dead.read()) == 1  # read, then "crash" without processing
    survivor = IngestWorker(redis_client, Keys(redis_prefix), get_backend(), "survivor",
                            block_ms=100, reclaim_idle_ms=0)
    claimed = survivor.reclaim()
    assert len(claimed) == 1
    survivor.process(claimed)
    assert [r["temperature"] for r in series(device)] == [30.0]
    assert redis_client.xpending(f"{redis_prefix}uplink", UPLINK_GROUP)["pending"] == 0


def test_a_failed_write_leaves_the_entry_pending(device, worker, redis_client, redis_prefix,
                                                 monkeypatch):
    """When the database write fails nothing is acknowledged (the worker goes on with the
    entries behind it); the retry stores it."""
    xadd(redis_client, redis_prefix, {"t": "data", "dev": "dev-1", "prod": "thermo",
                                      "svc": "env", "ts": now_ms(), "et": None,
                                      "v": {"temperature": 1.0}})
    backend = get_backend()
    real_write = backend.write

    def broken(points):
        raise RuntimeError("database is down")

    monkeypatch.setattr(backend, "write", broken)
    worker.retry_delay_s = 0.0
    assert worker.process(worker.read()) == 0
    assert redis_client.xpending(f"{redis_prefix}uplink", UPLINK_GROUP)["pending"] == 1
    assert series(device) == []
    monkeypatch.setattr(backend, "write", real_write)
    worker.process(worker.read())  # our own pending entries come first
    assert [r["temperature"] for r in series(device)] == [1.0]
    assert redis_client.xpending(f"{redis_prefix}uplink", UPLINK_GROUP)["pending"] == 0


def test_out_of_order_status_events(device, worker, redis_client, redis_prefix):
    """An older offline event arriving after a newer online one does not win."""
    ts = now_ms()
    xadd(redis_client, redis_prefix,
         {"t": "status", "dev": "dev-1", "s": "online", "ts": ts, "node": "n"},
         {"t": "status", "dev": "dev-1", "s": "offline", "ts": ts - 1000, "node": "n"})
    worker.process(worker.read())
    device.refresh_from_db()
    assert device.connect_status == "online"
    xadd(redis_client, redis_prefix,
         {"t": "status", "dev": "dev-1", "s": "offline", "ts": ts + 1, "node": "n",
          "reason": "disconnect"})
    worker.process(worker.read())
    device.refresh_from_db()
    assert device.connect_status == "offline"


def test_telemetry_api_reads_what_ingest_wrote(device, worker, api, redis_client, redis_prefix):
    """Raw points and 1-minute averages come back through the REST API with ISO times."""
    base = (now_ms() // 60_000) * 60_000 - 120_000
    for i, value in enumerate([10.0, 20.0, 30.0]):
        xadd(redis_client, redis_prefix, {"t": "data", "dev": "dev-1", "prod": "thermo",
                                          "svc": "env", "ts": base + i * 1000, "et": None,
                                          "v": {"temperature": value}})
    xadd(redis_client, redis_prefix, {"t": "data", "dev": "dev-1", "prod": "thermo",
                                      "svc": "env", "ts": base + 60_000, "et": None,
                                      "v": {"temperature": 50.0}})
    worker.process(worker.read())
    raw = api.get("/api/v1/devices/dev-1/telemetry/",
                  {"service": "env", "property": "temperature"}).json()
    assert [r["value"] for r in raw["results"]] == [10.0, 20.0, 30.0, 50.0]
    assert raw["results"][0]["ts"].endswith("Z")
    avg = api.get("/api/v1/devices/dev-1/telemetry/",
                  {"service": "env", "property": "temperature", "interval": "1m",
                   "agg": "avg"}).json()
    assert [r["value"] for r in avg["results"]] == [20.0, 50.0]
    last = api.get("/api/v1/devices/dev-1/telemetry/",
                   {"service": "env", "property": "temperature", "interval": "1m",
                    "agg": "last"}).json()
    assert [r["value"] for r in last["results"]] == [30.0, 50.0]
    shadow = api.get("/api/v1/devices/dev-1/shadow/").json()
    assert shadow["reported"]["env"]["temperature"]["value"] == 50.0


def test_data_the_database_refuses_is_set_aside_not_retried_forever(device, worker,
                                                                    redis_client, redis_prefix):
    """A value the column cannot hold (text in a double column, a NUL in a text column) is
    refused by PostgreSQL on every retry. The rest of its entry and the next entries are
    stored, the entry is acknowledged, and the refused events wait in `uplink:dead` with the
    database's reason. (SQLite stores such values, so there is nothing to refuse there.)"""
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("only PostgreSQL refuses these values")
    ts = now_ms()
    good = {"t": "data", "dev": "dev-1", "prod": "thermo", "svc": "env", "ts": ts, "et": None,
            "v": {"temperature": 1.5}}
    bad = {**good, "ts": ts + 1, "v": {"temperature": "hot"}}
    nul = {"t": "log", "dev": "dev-1", "dir": "up", "topic": "/v1/devices/dev-1/datas",
           "payload": "a\x00b", "ok": True, "reason": None, "ts": ts}
    xadd(redis_client, redis_prefix, good, bad, nul)
    xadd(redis_client, redis_prefix, {**good, "ts": ts + 2, "v": {"temperature": 2.5}})
    worker.process(worker.read())
    assert [r["temperature"] for r in series(device)] == [1.5, 2.5]
    assert redis_client.xpending(f"{redis_prefix}uplink", UPLINK_GROUP)["pending"] == 0
    dead = redis_client.xrange(f"{redis_prefix}uplink:dead")
    assert [json.loads(fields[b"event"])["t"] for _, fields in dead] == ["data", "log"]
    assert all(fields[b"reason"] for _, fields in dead)
    assert [int(fields[b"position"]) for _, fields in dead] == [1, 2]
