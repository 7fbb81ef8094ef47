"""Metrics (docs/metrics.md): process snapshots in Redis, GET /metrics and who may read it,
and the counters of ingest, rules and Celery moving with real work on a real Redis."""

from __future__ import annotations

import json
import os
import time
import uuid

import pytest
from django.test import Client
from prometheus_client import REGISTRY, CollectorRegistry, Counter, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from edge.bus.keys import Keys
from edge.metrics import render_metrics
from edge.snapshot import SNAPSHOT_TTL, SnapshotPublisher, snapshot_key, write_snapshot
from webapp.core.processes import list_processes, snapshots
from webapp.telemetry.backends import get_backend
from webapp.telemetry.ingest import IngestWorker

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("commit_hooks")]


def value(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


def families(text: str) -> dict[str, object]:
    """Parsed, and each family's TYPE given once (valid Prometheus text)."""
    types = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")]
    assert len(types) == len(set(types)), sorted(t for t in types if types.count(t) > 1)
    return {f.name: f for f in text_string_to_metric_families(text)}


def samples_of(parsed: dict[str, object], name: str) -> list:
    family = parsed[name]
    return list(family.samples)  # type: ignore[attr-defined]


# -- snapshots -----------------------------------------------------------------------------------

def test_a_publisher_lists_its_process_and_a_silent_one_is_not_alive(redis_client, redis_prefix,
                                                                     monkeypatch):
    monkeypatch.setenv("THINGLINKS_RESTARTS", "3")
    publisher = SnapshotPublisher("ingest", lambda: "# TYPE x gauge\nx 1\n",
                                  lambda: redis_client, redis_prefix, interval=0.05).start()
    try:
        deadline = time.monotonic() + 5
        while not list_processes() and time.monotonic() < deadline:
            time.sleep(0.02)
        [mine] = list_processes()
        assert mine["role"] == "ingest" and mine["pid"] == os.getpid()
        assert mine["restarts"] == 3 and mine["alive"] is True
        assert "metrics" not in mine and abs(mine["updated"] - time.time()) < 5
        assert 0 < redis_client.ttl(publisher.key) <= SNAPSHOT_TTL
    finally:
        publisher.stop(final=False)
    # A process that stopped reporting 60 s ago is listed, not alive, until its key expires.
    write_snapshot(redis_client, redis_prefix, "beat", "", started=time.time() - 100,
                   host="other-host", pid=42, now=time.time() - 60)
    by_role = {p["role"]: p for p in list_processes()}
    assert by_role["beat"]["alive"] is False and by_role["beat"]["host"] == "other-host"
    raw = redis_client.hgetall(snapshot_key(redis_prefix, "beat", "other-host", 42))
    assert set(raw) == {b"role", b"host", b"pid", b"started", b"restarts", b"updated",
                        b"metrics"}


# -- GET /metrics --------------------------------------------------------------------------------

def test_metrics_merges_every_process_into_one_valid_document(redis_client, redis_prefix):
    edge_text = render_metrics([
        ("edge_connections", "gauge", "Open MQTT connections", 7),
        ("edge_worker_restarts_total", "counter", "Times the supervisor restarted the worker",
         2, {"worker": "0"}),
    ])
    other = CollectorRegistry()
    Counter("thinglinks_ingest_points", "Telemetry points stored by ingest",
            registry=other).inc(41)
    write_snapshot(redis_client, redis_prefix, "edge", edge_text, started=time.time(),
                   host="edge-box", pid=10)
    write_snapshot(redis_client, redis_prefix, "ingest", generate_latest(other).decode(),
                   started=time.time(), host="ingest-box", pid=11, restarts=1)
    write_snapshot(redis_client, redis_prefix, "worker", "this is { not prometheus",
                   started=time.time(), host="bad-box", pid=12)
    response = Client(REMOTE_ADDR="127.0.0.1").get("/metrics")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/plain")
    parsed = families(response.content.decode())
    [edge] = samples_of(parsed, "edge_connections")
    assert edge.value == 7 and edge.labels == {"role": "edge", "instance": "edge-box:10"}
    points = {s.labels["instance"]: s.value for s in samples_of(parsed, "thinglinks_ingest_points")
              if s.name == "thinglinks_ingest_points_total"}
    assert points["ingest-box:11"] == 41  # and the web's own counter under its instance
    assert any(i.endswith(f":{os.getpid()}") for i in points)
    up = {s.labels["role"]: s.value for s in samples_of(parsed, "thinglinks_process_up")}
    assert up["edge"] == 1 and up["ingest"] == 1 and up["web"] == 1
    restarts = {s.labels["role"]: s.value
                for s in samples_of(parsed, "thinglinks_process_restarts")}
    assert restarts["ingest"] == 1
    # Measured at scrape time: the host and Redis.
    assert samples_of(parsed, "thinglinks_host_memory_total_bytes")[0].value > 0
    assert {s.labels["period"] for s in samples_of(parsed, "thinglinks_host_load_average")} == \
        {"1m", "5m", "15m"}
    assert samples_of(parsed, "thinglinks_redis_up")[0].value == 1
    assert samples_of(parsed, "thinglinks_redis_used_memory_bytes")[0].value > 0
    streams = {s.labels["stream"] for s in samples_of(parsed, "thinglinks_redis_stream_length")}
    assert streams == {"uplink", "uplink:dead"}
    # The web's requests, labelled by route name: this very scrape's predecessor counted.
    Client(REMOTE_ADDR="127.0.0.1").get("/metrics")
    assert value("thinglinks_http_requests_total",
                 {"view": "metrics", "method": "GET", "status": "200"}) >= 1


def test_metrics_is_open_on_loopback_and_protected_elsewhere(settings, django_user_model,
                                                           redis_prefix):
    settings.METRICS_TOKEN = "m-" + uuid.uuid4().hex
    remote = {"REMOTE_ADDR": "203.0.113.9"}
    assert Client(REMOTE_ADDR="127.0.0.1").get("/metrics").status_code == 200
    assert Client(REMOTE_ADDR="::1").get("/metrics").status_code == 200
    # Forwarded by a proxy on the same host: the client is not local.
    assert Client(REMOTE_ADDR="127.0.0.1").get(
        "/metrics", HTTP_X_FORWARDED_FOR="203.0.113.9").status_code == 401
    assert Client(**remote).get("/metrics").status_code == 401
    assert Client(**remote).get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert Client(**remote).get(
        "/metrics", HTTP_AUTHORIZATION=f"Bearer {settings.METRICS_TOKEN}").status_code == 200
    django_user_model.objects.create_user("plain", password="pw-plain-123")
    django_user_model.objects.create_user("ops", password="pw-ops-123", is_staff=True)
    plain, ops = Client(**remote), Client(**remote)
    plain.login(username="plain", password="pw-plain-123")
    ops.login(username="ops", password="pw-ops-123")
    assert plain.get("/metrics").status_code == 403
    assert ops.get("/metrics").status_code == 200
    # Without a token configured a bearer opens nothing; loopback can be closed too.
    settings.METRICS_TOKEN = ""
    assert Client(**remote).get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 401
    settings.METRICS_LOOPBACK_OPEN = False
    assert Client(REMOTE_ADDR="127.0.0.1").get("/metrics").status_code == 401


# -- ingest, rules, Celery -----------------------------------------------------------------------

@pytest.fixture
def device(api, redis_prefix, thermo_payload):
    api.post("/api/v1/products/", thermo_payload, format="json")
    api.post("/api/v1/devices/", {"product": "thermo", "identifier": "dev-1"}, format="json")
    return "dev-1"


def test_ingest_and_rule_counters_move_with_real_work(api, device, redis_client, redis_prefix):
    from django.db import connection

    rule = api.post("/api/v1/rules/", {
        "name": "hot", "trigger": {"type": "property", "product": "thermo", "service": "env",
                                   "property": "temperature"},
        "condition": {"op": ">", "value": 30},
        "actions": [{"type": "alarm", "severity": "major", "message": "hot"}]},
        format="json").json()
    rid = str(rule["id"])
    worker = IngestWorker(redis_client, Keys(redis_prefix), get_backend(), "metrics-test",
                          block_ms=100)
    worker.ensure_group()
    before = {name: value(name) for name in (
        "thinglinks_ingest_points_total", "thinglinks_ingest_batches_total",
        "thinglinks_ingest_entries_total", "thinglinks_ingest_batch_duration_seconds_count",
        "thinglinks_ingest_db_write_seconds_count", "thinglinks_ingest_dead_letters_total",
        "thinglinks_ingest_refused_entries_total")}
    fired = value("thinglinks_rule_fired_total", {"rule": rid})
    evaluated = value("thinglinks_rule_evaluations_total", {"rule": rid})
    ts = int(time.time() * 1000)
    event = {"t": "data", "dev": device, "prod": "thermo", "svc": "env", "et": None}
    for i, temperature in enumerate((20.0, 35.0, 36.0)):
        redis_client.xadd(f"{redis_prefix}uplink", {"b": json.dumps(
            [{**event, "ts": ts + i, "v": {"temperature": temperature}}])})
    # Read but not yet processed: pending for this consumer, nothing left undelivered.
    entries = worker.read()
    worker.observe_stream()
    assert value("thinglinks_ingest_pending", {"stream": "uplink",
                                               "group": "ingest", "consumer": "metrics-test"}) == 3
    assert value("thinglinks_ingest_stream_lag",
                 {"stream": "uplink", "group": "ingest"}) == 0
    assert worker.process(entries) == 3
    worker.observe_stream()
    assert value("thinglinks_ingest_pending", {"stream": "uplink",
                                               "group": "ingest", "consumer": "metrics-test"}) == 0
    assert value("thinglinks_ingest_points_total") - before["thinglinks_ingest_points_total"] == 3
    assert value("thinglinks_ingest_entries_total") - \
        before["thinglinks_ingest_entries_total"] == 3
    assert value("thinglinks_ingest_batches_total") > before["thinglinks_ingest_batches_total"]
    assert value("thinglinks_ingest_batch_duration_seconds_count") > \
        before["thinglinks_ingest_batch_duration_seconds_count"]
    assert value("thinglinks_ingest_db_write_seconds_count") > \
        before["thinglinks_ingest_db_write_seconds_count"]
    assert value("thinglinks_rule_evaluations_total", {"rule": rid}) - evaluated >= 2
    # Fired once at 35 (an alarm opens), 36 finds it open: not fired again.
    assert value("thinglinks_rule_fired_total", {"rule": rid}) - fired >= 1
    # Lag: entries added and not read yet.
    redis_client.xadd(f"{redis_prefix}uplink", {"b": json.dumps(
        [{**event, "ts": ts + 10, "v": {"temperature": 1.0}}])})
    worker.observe_stream()
    assert value("thinglinks_ingest_stream_lag",
                 {"stream": "uplink", "group": "ingest"}) == 1
    # The web measures it too at scrape time (no role: when no ingest runs, it still shows).
    parsed = families(Client(REMOTE_ADDR="127.0.0.1").get("/metrics").content.decode())
    web_lag = [s for s in samples_of(parsed, "thinglinks_ingest_stream_lag")
               if "role" not in s.labels]
    assert [(s.labels, s.value) for s in web_lag] == [({"stream": "uplink", "group": "ingest"},
                                                       1)]
    worker.process(worker.read())
    if connection.vendor == "postgresql":  # SQLite stores text in a double column
        redis_client.xadd(f"{redis_prefix}uplink", {"b": json.dumps(
            [{**event, "ts": ts + 20, "v": {"temperature": "hot"}}])})
        worker.process(worker.read())
        assert value("thinglinks_ingest_refused_entries_total") > \
            before["thinglinks_ingest_refused_entries_total"]
        assert value("thinglinks_ingest_dead_letters_total") - \
            before["thinglinks_ingest_dead_letters_total"] == 1


def test_celery_task_runs_failures_and_queue_depth(settings, redis_client, redis_prefix):
    from celery import shared_task

    from config.celery import app

    @shared_task(name="tests.metrics.ok")
    def ok() -> int:
        return 1

    @shared_task(name="tests.metrics.boom")
    def boom() -> None:
        raise ValueError("boom")

    runs = value("thinglinks_celery_task_runs_total", {"task": "tests.metrics.ok"})
    failures = value("thinglinks_celery_task_failures_total", {"task": "tests.metrics.boom"})
    ok.apply()
    boom.apply()
    assert value("thinglinks_celery_task_runs_total", {"task": "tests.metrics.ok"}) == runs + 1
    assert value("thinglinks_celery_task_failures_total",
                 {"task": "tests.metrics.boom"}) == failures + 1
    assert value("thinglinks_celery_task_duration_seconds_count",
                 {"task": "tests.metrics.ok"}) >= 1
    # Queue depth: a task sent to a queue of this test's own, through the real broker.
    queue = f"metrics-{uuid.uuid4().hex[:8]}"
    settings.CELERY_TASK_DEFAULT_QUEUE = queue
    prefix = settings.CELERY_BROKER_TRANSPORT_OPTIONS.get("global_keyprefix", "")
    try:
        with app.connection_for_write() as conn:
            ok.apply_async(queue=queue, connection=conn)
            ok.apply_async(queue=queue, connection=conn)
        parsed = families(Client(REMOTE_ADDR="127.0.0.1").get("/metrics").content.decode())
        depth = {s.labels["queue"]: s.value
                 for s in samples_of(parsed, "thinglinks_celery_queue_length")}
        assert depth[queue] == 2
    finally:
        redis_client.delete(f"{prefix}{queue}", f"{prefix}_kombu.binding.{queue}",
                            f"{prefix}_kombu.binding_permanent.{queue}")


def test_snapshots_carry_the_metrics_text(redis_client, redis_prefix):
    write_snapshot(redis_client, redis_prefix, "beat", "# TYPE y gauge\ny 2\n",
                   started=1.0, host="h", pid=1)
    [found] = snapshots()
    assert found["metrics"] == "# TYPE y gauge\ny 2\n" and found["started"] == 1.0
