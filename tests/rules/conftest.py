"""Fixtures of the rule engine tests: Celery run inline, a local HTTP receiver, a device."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from edge.bus.keys import Keys
from tests.support.slow import starts_processes
from webapp.rules import engine
from webapp.telemetry.backends import get_backend
from webapp.telemetry.ingest import IngestWorker


@pytest.fixture(autouse=True)
def eager_celery():
    """Run Celery tasks inline so that a test sees what the worker would do."""
    from config.celery import app

    previous = app.conf.task_always_eager
    app.conf.task_always_eager = True
    engine.forget_indexes()
    yield
    app.conf.task_always_eager = previous
    engine.forget_indexes()


@pytest.fixture(autouse=True)
def outbound_to_local_services(settings):
    """These tests send to the machine's services and a receiver on 127.0.0.1, which an
    administrator allows as OUTBOUND_ALLOWED_NETWORKS would (the platform's own Redis and
    database stay refused: tests/security/test_outbound_*.py)."""
    settings.OUTBOUND_ALLOWED_NETWORKS = ["127.0.0.0/8"]


class _ExclusiveServer(ThreadingHTTPServer):
    """Bound to port 0 without SO_REUSEADDR: with it, Linux may hand out a port another
    socket still holds and `listen()` then fails with "Address already in use" (seen under
    concurrent runs). The kernel picks the port at bind time and the socket keeps it."""

    allow_reuse_address = False
    daemon_threads = True


class Receiver:
    """A real HTTP server on 127.0.0.1 (or another loopback `host`) that records what it is
    sent and answers `status`, `headers` and the JSON `reply`."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.requests: list[dict] = []
        self.status = 200
        self.reply: dict = {}
        self.headers: dict[str, str] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                receiver.requests.append({"path": self.path, "method": self.command,
                                          "headers": dict(self.headers), "body": body})
                payload = json.dumps(receiver.reply).encode()
                self.send_response(receiver.status)
                for name, value in receiver.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_PUT = do_GET = do_POST

            def log_message(self, *args):
                pass

        self.server = _ExclusiveServer((host, 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def json(self, i: int = -1) -> dict:
        return json.loads(self.requests[i]["body"])

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
@starts_processes
def other_redis(tmp_path):
    """A Redis server of its own on a TCP port of 127.0.0.1, for a Redis sink: the
    platform's own Redis (REDIS_URL) is never a destination."""
    from config.embedded_redis import EmbeddedRedis

    # redis-server binds the port itself, after the probe let it go: another process may
    # take it in between, so a failed start is retried on a new port.
    for attempt in range(5):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        server = EmbeddedRedis(tmp_path / f"redis-{attempt}", persistent=False, port=port)
        try:
            url = server.start()
            break
        except RuntimeError:
            server.stop()
            if attempt == 4:
                raise
    yield url
    server.stop()


@pytest.fixture
def thermo(api, redis_prefix, thermo_payload):
    """Product thermo with devices dev-1 and dev-2."""
    assert api.post("/api/v1/products/", thermo_payload, format="json").status_code == 201
    for name in ("dev-1", "dev-2"):
        assert api.post("/api/v1/devices/", {"product": "thermo", "identifier": name},
                        format="json").status_code == 201
    return api


@pytest.fixture
def worker(redis_client, redis_prefix):
    w = IngestWorker(redis_client, Keys(redis_prefix), get_backend(), "rules-test",
                     block_ms=50)
    w.ensure_group()
    return w


def now_ms() -> int:
    return int(time.time() * 1000)


class Feed:
    """Uplink events through the real ingest path: XADD, then the worker processes them."""

    def __init__(self, redis_client, prefix, worker) -> None:
        self.redis = redis_client
        self.prefix = prefix
        self.worker = worker
        self.ts = now_ms()

    def events(self, *events) -> None:
        self.redis.xadd(f"{self.prefix}uplink", {"b": json.dumps(list(events))})
        self.worker.process(self.worker.read())

    def crash_after_hooks(self, *events) -> None:
        """XADD, then store the entry and run its hooks but die before XACK: the entry stays
        in this worker's pending list, as after a crash."""
        from webapp.telemetry.ingest import decode_entries

        self.redis.xadd(f"{self.prefix}uplink", {"b": json.dumps(list(events))})
        batch, _ids = decode_entries(self.worker.read())
        self.worker.store(batch)

    def redeliver(self) -> None:
        """The restarted worker reads its own pending entries first."""
        self.worker.process(self.worker.read())

    def data(self, device="dev-1", service="env", **values) -> int:
        self.ts += 1000
        self.events({"t": "data", "dev": device, "prod": "thermo", "svc": service,
                     "ts": self.ts, "et": None, "v": values})
        return self.ts


@pytest.fixture
def feed(redis_client, redis_prefix, worker):
    return Feed(redis_client, redis_prefix, worker)
