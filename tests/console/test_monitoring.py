"""The console's monitoring page (`/monitoring/`) and its JSON (`/monitoring/data.json`), against
the real Redis and the real database: permission, and each figure from where it comes."""

from __future__ import annotations

import json
import time

import pytest
from django.db import connection
from django.utils import timezone

from edge.bus.keys import UPLINK_GROUP
from edge.snapshot import write_snapshot
from tests.system.conftest import perms
from webapp.console import monitoring
from webapp.core.redis import group_lag

pytestmark = pytest.mark.django_db

PAGE = "/monitoring/"
DATA = "/monitoring/data.json"


def test_anonymous_users_go_to_the_login_page(client):
    for path in (PAGE, DATA):
        response = client.get(path)
        assert response.status_code == 302
        assert response["Location"].startswith("/login/?next=")


def test_users_without_the_permission_are_refused(world, client_of):
    for user in (world.alice, world.nobody):
        for path in (PAGE, DATA):
            response = client_of(user).get(path)
            assert response.status_code == 403, (user, path)
            assert b"system.view_monitoring" in response.content
    # …and the navigation does not offer the page.
    assert b'href="/monitoring/"' not in client_of(world.alice).get("/").content


def test_the_permission_opens_it_and_superusers_have_it(world, client_of):
    world.alice.roles.first().permissions.add(*perms("system.view_monitoring"))
    for user in (world.alice, world.root):
        page = client_of(user).get(PAGE)
        assert page.status_code == 200, user
        assert b'href="/monitoring/"' in page.content
        assert client_of(user).get(DATA).status_code == 200


def test_built_in_roles_administrators_only(db):
    from webapp.system.defaults import ADMINISTRATOR, OPERATOR, VIEWER, wants

    assert wants(ADMINISTRATOR, "system", "view_monitoring")
    assert not wants(OPERATOR, "system", "view_monitoring")
    assert not wants(VIEWER, "system", "view_monitoring")


def test_json_carries_real_figures(world, client_of, redis_client, redis_prefix, settings):
    r = redis_client
    # Celery's key prefix as a process started with this REDIS_PREFIX computes it.
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {"global_keyprefix": redis_prefix + "celery:"}
    uplink = f"{redis_prefix}uplink"
    # The uplink stream with the ingest group: 3 entries, one read by a consumer and pending.
    r.xgroup_create(uplink, UPLINK_GROUP, id="0", mkstream=True)
    for n in range(3):
        r.xadd(uplink, {"b": json.dumps([{"n": n}])})
    r.xreadgroup(UPLINK_GROUP, "ingest-host-1", {uplink: ">"}, count=1)
    # A process snapshot as the processes write it, an edge supervisor with two workers, and
    # an edge node's heartbeat.
    write_snapshot(r, redis_prefix, "ingest", (
        "# TYPE process_resident_memory_bytes gauge\n"
        "process_resident_memory_bytes 5.24288e+07\n"
        "process_cpu_seconds_total 12.5\n"), started=time.time() - 120, restarts=2,
        host="box", pid=4242)
    write_snapshot(r, redis_prefix, "edge", (
        'edge_worker_up{worker="0"} 1\nedge_worker_up{worker="1"} 0\n'
        'edge_worker_restarts_total{worker="0"} 0.0\n'
        'edge_worker_restarts_total{worker="1"} 3.0\n'), started=time.time(), host="box",
        pid=4300)
    now = int(time.time() * 1000)
    r.hset(f"{redis_prefix}nodes", "box-0", json.dumps(
        {"pid": 4301, "started": now - 60_000, "conns": 17, "ts": now}))
    r.hset(f"{redis_prefix}nodes", "gone-0", json.dumps(
        {"pid": 1, "started": now - 600_000, "conns": 5, "ts": now - 120_000}))
    # A downlink entry waiting for node box-0.
    r.xadd(f"{redis_prefix}down:box-0", {"topic": "t", "payload": b"{}", "qos": "1"})
    # Two waiting Celery tasks on the default queue (kombu's list, under the prefix).
    r.lpush(f"{redis_prefix}celery:celery", "task-1", "task-2")

    response = client_of(world.root).get(DATA)
    assert response.status_code == 200
    assert response["Cache-Control"].startswith("max-age=0")
    data = response.json()

    host = data["host"]
    assert 0 <= host["cpu_percent"] <= 100 and host["cpus"] >= 1
    assert host["memory"]["total"] > host["memory"]["used"] > 0
    assert host["disk"]["total"] > 0 and len(host["load"]) == 3

    procs = data["processes"]["processes"]
    ingest = next(p for p in procs if p["role"] == "ingest")
    assert (ingest["host"], ingest["pid"], ingest["restarts"], ingest["alive"]) == \
        ("box", 4242, 2, True)
    # The process collector's samples, when the process has them.
    assert (ingest["memory"], ingest["cpu_seconds"]) == (52_428_800, 12.5)
    workers = data["processes"]["edge_workers"]
    assert [(w["worker"], w["up"], w["restarts"]) for w in workers] == \
        [(0, True, 0), (1, False, 3)]

    nodes = {n["node"]: n for n in data["edge"]["nodes"]}
    assert nodes["box-0"]["connections"] == 17 and nodes["box-0"]["alive"]
    assert not nodes["gone-0"]["alive"]
    assert data["edge"]["connections"] == 17  # a lost node's connections are not counted
    assert (nodes["box-0"]["downlink"], nodes["gone-0"]["downlink"]) == (1, 0)

    redis = data["redis"]
    assert redis["used_memory"] > 0
    stream = next(s for s in redis["streams"] if s["stream"] == uplink)
    assert stream["length"] == 3
    (group,) = stream["groups"]
    assert (group["name"], group["lag"], group["pending"]) == (UPLINK_GROUP, 2, 1)
    assert group["consumers"][0]["name"] == "ingest-host-1"
    assert group["consumers"][0]["pending"] == 1

    database = data["database"]
    assert database["vendor"] == connection.vendor
    assert database["size"] > 0
    # PostgreSQL: pg_total_relation_size; SQLite: its dbstat table (built in here).
    names = [t["name"] for t in database["tables"]]
    assert 0 < len(names) <= monitoring.LARGEST_TABLES
    assert all(t["size"] > 0 for t in database["tables"])
    assert not any(name.startswith(("pg_", "sqlite_")) for name in names)
    sizes = [t["size"] for t in database["tables"]]
    assert sizes == sorted(sizes, reverse=True)

    celery = data["celery"]
    assert {"name": "celery", "key": f"{redis_prefix}celery:celery", "length": 2} in \
        celery["queues"]

    # The panels as the page shows them, with the same figures.
    html = data["html"]
    assert 'data-testid="process-ingest"' in html and "box-0" in html
    assert 'data-testid="edge-worker-1"' in html


def test_stream_lag_follows_new_entries(world, client_of, redis_client, redis_prefix):
    uplink = f"{redis_prefix}uplink"
    redis_client.xgroup_create(uplink, UPLINK_GROUP, id="$", mkstream=True)
    client = client_of(world.root)

    def lag() -> int:
        streams = client.get(DATA).json()["redis"]["streams"]
        return next(s for s in streams if s["stream"] == uplink)["groups"][0]["lag"]

    assert lag() == 0
    for n in range(5):
        redis_client.xadd(uplink, {"b": json.dumps([{"n": n}])})
    assert lag() == 5
    redis_client.xreadgroup(UPLINK_GROUP, "c1", {uplink: ">"}, count=4)
    assert lag() == 1


def test_lag_counted_without_redis_7(redis_client, redis_prefix):
    """Redis 6 has no `lag` in XINFO GROUPS: it is counted from the last delivered id."""
    uplink = f"{redis_prefix}uplink"
    ids = [redis_client.xadd(uplink, {"n": str(n)}) for n in range(4)]
    assert group_lag(redis_client, uplink, {"last-delivered-id": ids[1]}) == (2, True)
    assert group_lag(redis_client, uplink, {"last-delivered-id": b"0-0"}) == (4, True)


def test_last_task_runs_and_online_users(world, client_of):
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    from webapp.system import sessions
    from webapp.system.choices import LoginChannel, TaskRunStatus
    from webapp.system.models import TaskRun

    every = IntervalSchedule.objects.create(every=30, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.create(name="sweep", task="devices.sweep_offline", interval=every,
                                last_run_at=timezone.now(), total_run_count=7)
    PeriodicTask.objects.create(name="never", task="ota.advance", interval=every)
    TaskRun.objects.create(task_id="t-1", task_name="devices.sweep_offline",
                           status=TaskRunStatus.SUCCESS, runtime=0.25)
    sessions.open_session(world.alice, LoginChannel.ADMIN)
    sessions.open_session(world.alice, LoginChannel.API)

    data = client_of(world.root).get(DATA).json()
    periodic = data["celery"]["periodic"]
    assert [(t["name"], t["total_run_count"]) for t in periodic] == [("sweep", 7)]
    run = data["celery"]["runs"][0]
    assert (run["task"], run["status"], run["runtime"]) == \
        ("devices.sweep_offline", "success", 0.25)
    assert data["users"]["online_users"] >= 1 and data["users"]["sessions"] >= 2
    assert 'data-testid="periodic-sweep"' in data["html"]


def test_a_failing_source_is_reported_and_the_rest_shown(world, client_of, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    from webapp.core import redis as core_redis

    core_redis._client.cache_clear()
    try:
        response = client_of(world.root).get(DATA)
    finally:
        core_redis._client.cache_clear()
    assert response.status_code == 200
    data = response.json()
    assert "error" in data["redis"] and "error" in data["edge"]
    assert "cpu_percent" in data["host"] and data["database"]["size"] > 0
    assert "Not available" in data["html"]


def test_the_page_in_chinese(world, client_of):
    client = client_of(world.root)
    page = client.get(PAGE, HTTP_ACCEPT_LANGUAGE="zh-hans")
    body = page.content.decode()
    assert page.status_code == 200
    assert "平台监控" in body and "内存" in body and "数据库" in body


def test_edge_workers_from_the_metrics_endpoint(monkeypatch, redis_prefix):
    """With no edge supervisor snapshot, the workers come from the edge's /metrics (its own
    EDGE_METRICS_HOST / EDGE_METRICS_PORT), fetched over HTTP."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    text = ('# TYPE edge_worker_up gauge\nedge_worker_up{worker="0"} 1\n'
            'edge_worker_up{worker="1"} 1\n# TYPE edge_worker_restarts_total counter\n'
            'edge_worker_restarts_total{worker="0"} 4\n'
            'edge_worker_restarts_total{worker="1"} 0\n')

    class Metrics(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = text.encode() if self.path == "/metrics" else b""
            self.send_response(200 if body else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Metrics)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("EDGE_METRICS_HOST", "0.0.0.0")  # asked on loopback
        monkeypatch.setenv("EDGE_METRICS_PORT", str(server.server_address[1]))
        found = monitoring.processes()
    finally:
        server.shutdown()
        server.server_close()
    assert [(w["worker"], w["up"], w["restarts"]) for w in found["edge_workers"]] == \
        [(0, True, 4), (1, True, 0)]
    assert found["edge_workers_source"].endswith(f":{server.server_address[1]}/metrics")

    monkeypatch.setenv("EDGE_METRICS_PORT", "0")  # the edge's metrics listener is off
    assert monitoring.processes()["edge_workers"] == []


def test_hostile_names_arrive_escaped_in_the_panels(world, client_of, redis_client,
                                                    redis_prefix):
    """The panels the page swaps in (`html`) come from the server's template with Django's
    autoescaping: a process, host or consumer name holding markup is shown as text."""
    hostile = '<img src=x onerror="alert(1)">'
    write_snapshot(redis_client, redis_prefix, hostile, "", started=time.time(),
                   host="<script>alert(2)</script>", pid=7)
    uplink = f"{redis_prefix}uplink"
    redis_client.xgroup_create(uplink, UPLINK_GROUP, id="0", mkstream=True)
    redis_client.xadd(uplink, {"b": "[]"})
    redis_client.xreadgroup(UPLINK_GROUP, "<b>consumer</b>", {uplink: ">"}, count=1)
    world.alice.roles.first().permissions.add(*perms("system.view_monitoring"))
    html = client_of(world.alice).get(DATA).json()["html"]
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in html
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in html
    assert "&lt;b&gt;consumer&lt;/b&gt;" in html
    assert "<img" not in html and "<script" not in html and "<b>" not in html
