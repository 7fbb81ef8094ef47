"""Metrics from the real processes (docs/metrics.md): an edge with 2 workers and TLS, ingest,
a Celery worker and beat, and the web; a device reports, a rule fires, and the web's
GET /metrics shows it all, in one valid document that every shipped alert and dashboard
expression finds its metrics in."""

from __future__ import annotations

import datetime
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from django.db import connection
from prometheus_client.parser import text_string_to_metric_families

from tests.support.platform import ROOT, Client, Platform, database_url, datas, free_port
from tests.support.waiting import wait_for
from tests.system.monitoring_files import PROMETHEUS_OWN, every_expr, exposed_names, metric_names

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

EXPIRY = datetime.datetime(2031, 5, 17, 12, 0, tzinfo=datetime.UTC)


def certificate(tmp_path) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edge.example")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC))
            .not_valid_after(EXPIRY).sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "edge.pem", tmp_path / "edge.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=20) as response:  # noqa: S310
        assert response.status == 200
        return response.read().decode()


def samples(text: str, name: str, **labels: str) -> list:
    return [s for family in text_string_to_metric_families(text) for s in family.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]


@pytest.fixture
def platform(transactional_db, django_user_model, redis_url, tmp_path, thermo_payload):
    django_user_model.objects.create_superuser("ops", "", "pw-ops-123")
    cert, key = certificate(tmp_path)
    p = Platform.create(database_url(connection.settings_dict), redis_url)
    p.env.update({"THINGLINKS_SNAPSHOT_INTERVAL": "0.5", "EDGE_WORKERS": "2",
                  "EDGE_TLS_CERT": cert, "EDGE_TLS_KEY": key, "EDGE_TLS_PORT": str(free_port()),
                  "THINGLINKS_RESTARTS": "2"})
    celery = [sys.executable, "-m", "celery", "-A", "config", "--quiet"]
    try:
        p.start_edge()
        p.start_ingest()
        p.spawn("worker", [*celery, "worker", "-l", "WARNING", "--concurrency", "1",
                           "-n", f"metrics-{p.prefix}@%h"])
        p.spawn("beat", [*celery, "beat", "-l", "WARNING",
                         "--pidfile", str(tmp_path / "beat.pid"),
                         "--schedule", str(tmp_path / "beat-schedule")])
        p.start_web()
        p.login("ops", "pw-ops-123")
        assert p.call("POST", "/api/v1/products/", thermo_payload)[0] == 201
        yield p
    finally:
        for process in p.processes.values():  # all at once: Celery takes seconds to stop
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for name, out in p.stop_all().items():
            print(f"----- {name} -----\n{out[-3000:]}")


def test_every_process_reports_in_one_document(platform):
    status, device = platform.call("POST", "/api/v1/devices/",
                                   {"product": "thermo", "identifier": "dev-m1"})
    assert status == 201, device
    status, rule = platform.call("POST", "/api/v1/rules/", {
        "name": "hot", "trigger": {"type": "property", "product": "thermo", "service": "env",
                                   "property": "temperature"},
        "condition": {"op": ">", "value": 30},
        "actions": [{"type": "alarm", "severity": "major", "message": "hot"}]})
    assert status == 201, rule
    client = Client(platform.mqtt_port, "dev-m1", device["secret"])
    assert client.connected() == 0
    for temperature in (21.0, 35.0):
        client.publish("/v1/devices/dev-m1/datas", datas("dev-m1", {"temperature": temperature}))
        # Two points: the time series keeps one row per device and millisecond.
        time.sleep(0.05)
    url = f"http://127.0.0.1:{platform.web_port}/metrics"
    rid = str(rule["id"])

    def reported() -> str | None:
        text = get(url)
        points = samples(text, "thinglinks_ingest_points_total", role="ingest")
        fired = samples(text, "thinglinks_rule_fired_total", role="ingest", rule=rid)
        drained = samples(text, "thinglinks_celery_task_runs_total", role="worker-pool",
                          task="rules.drain_firings")
        edge_in = samples(text, "edge_messages_in_total", role="edge")
        seen.update(points=points, fired=fired, drained=drained, edge_in=edge_in)
        ok = (points and points[0].value >= 2 and fired and fired[0].value >= 1 and drained
              and edge_in and edge_in[0].value >= 2)
        return text if ok else None

    seen: dict = {}
    text = wait_for(reported, timeout=60, interval=0.5, message=lambda: repr(seen))
    client.close()

    # One valid document: each family's TYPE once, and the parser reads it whole.
    types = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")]
    assert len(types) == len(set(types))
    assert list(text_string_to_metric_families(text))
    # No family of a process is dropped by the merge (a gauge `x` and a counter `x_total`
    # are one family to Prometheus: the edge's held publishers once were both).
    assert samples(text, "edge_cluster_publishers_held", role="edge")
    assert samples(text, "edge_cluster_publisher_holds_total", role="edge")
    up = {s.labels["role"]: s.value for s in samples(text, "thinglinks_process_up")}
    assert {"edge", "ingest", "worker", "worker-pool", "beat", "web"} <= set(up)
    assert all(up[role] == 1 for role in ("edge", "ingest", "worker", "worker-pool", "beat"))
    restarts = samples(text, "thinglinks_process_restarts", role="ingest")
    assert restarts and restarts[0].value == 2  # THINGLINKS_RESTARTS, as the supervisor sets it
    [expiry] = samples(text, "edge_tls_certificate_expiry_timestamp_seconds", role="edge")
    assert expiry.value == EXPIRY.timestamp() and expiry.labels["certificate"] == "edge.pem"
    assert samples(text, "edge_worker_up", role="edge", worker="1")[0].value == 1
    assert samples(text, "thinglinks_ingest_db_write_seconds_count", role="ingest")[0].value >= 1
    assert samples(text, "thinglinks_ingest_stream_lag", role="ingest", stream="uplink")
    assert samples(text, "thinglinks_http_requests_total", role="web", view="device-list",
                   method="POST", status="201") or \
        any(s.labels.get("status") == "201" for s in
            samples(text, "thinglinks_http_requests_total", role="web"))

    # The edge's own endpoint keeps serving its metrics, the certificate's expiry included
    # (once, not summed over the 2 workers).
    edge_text = get(f"http://127.0.0.1:{platform.metrics_port}/metrics")
    [own] = samples(edge_text, "edge_tls_certificate_expiry_timestamp_seconds")
    assert own.value == EXPIRY.timestamp()

    # Every metric the shipped alerts and dashboards use is served.
    served = exposed_names(text) | exposed_names(edge_text) | PROMETHEUS_OWN
    missing = {name for expr in every_expr() for name in metric_names(expr)} - served
    assert not missing, missing

    # The supervisor's snapshot is written again every THINGLINKS_SNAPSHOT_INTERVAL, and
    # expires by itself when no longer written.
    import redis

    store = redis.Redis.from_url(platform.env["REDIS_URL"])
    try:
        [key] = list(store.scan_iter(match=f"{platform.prefix}proc:edge:*"))
        first = float(store.hget(key, "updated"))
        wait_for(lambda: float(store.hget(key, "updated")) > first, timeout=10)
        assert 0 < store.ttl(key) <= 45

        # An edge of one process (EDGE_WORKERS=1, as `make run` starts it) publishes itself,
        # its certificate's expiry included.
        env = {**platform.env, "EDGE_WORKERS": "1", "EDGE_NODE_ID": f"{platform.prefix}single",
               **{port: str(free_port()) for port in (
                   "EDGE_MQTT_PORT", "EDGE_METRICS_PORT", "EDGE_WS_PORT", "EDGE_WSS_PORT",
                   "EDGE_TLS_PORT", "EDGE_TCP_PORT", "EDGE_UDP_PORT", "EDGE_HTTP_PORT",
                   "EDGE_COAP_PORT")}}
        single = subprocess.Popen([sys.executable, "-m", "edge"], cwd=ROOT, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        platform.processes["edge-single"] = single

        def single_text() -> str | None:
            raw = store.hget(f"{platform.prefix}proc:edge:{socket.gethostname()}:{single.pid}",
                             "metrics")
            return raw.decode() if raw else None

        text = wait_for(single_text, timeout=30)
        [expiry] = samples(text, "edge_tls_certificate_expiry_timestamp_seconds")
        assert expiry.value == EXPIRY.timestamp()
        assert samples(text, "edge_connections")
    finally:
        store.close()

