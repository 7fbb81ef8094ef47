"""Process snapshots: each long-running process publishes its own Prometheus exposition in Redis.

The web's ``GET /metrics`` and the console's monitoring page read them back, so metrics are
collected from every process whatever host or container it runs in (docs/metrics.md).

One Redis hash per process, ``{prefix}proc:{role}:{host}:{pid}``, with the fields ``role``,
``host``, ``pid``, ``started`` (unix seconds), ``restarts`` (``THINGLINKS_RESTARTS``, set by the
supervisor), ``updated`` (unix seconds) and ``metrics`` (Prometheus text). The key expires
``SNAPSHOT_TTL`` seconds after its last write: a process that died disappears by itself.

No Django here: the edge publishes through this module too; the webapp's side is
``webapp.core.processes``.
"""

from __future__ import annotations

import atexit
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

SNAPSHOT_INTERVAL = 10.0
"""Seconds between two writes of a process's snapshot (``THINGLINKS_SNAPSHOT_INTERVAL``)."""
SNAPSHOT_TTL = 45
"""Seconds a snapshot lives after its last write."""
ALIVE_WITHIN = 30.0
"""A process whose snapshot is older than this is reported as not alive."""

FIELDS = ("role", "host", "pid", "started", "restarts", "updated", "metrics")


def hostname() -> str:
    return socket.gethostname()


def snapshot_key(prefix: str, role: str, host: str, pid: int) -> str:
    return f"{prefix}proc:{role}:{host}:{pid}"


def snapshot_pattern(prefix: str) -> str:
    return f"{prefix}proc:*"


def interval_from_env(env: dict[str, str] | None = None) -> float:
    raw = (env if env is not None else os.environ).get("THINGLINKS_SNAPSHOT_INTERVAL", "")
    try:
        value = float(raw) if raw else SNAPSHOT_INTERVAL
    except ValueError:
        return SNAPSHOT_INTERVAL
    return min(max(value, 0.1), 30.0)


def restarts_from_env(env: dict[str, str] | None = None) -> int:
    raw = (env if env is not None else os.environ).get("THINGLINKS_RESTARTS", "0")
    try:
        return max(0, int(raw))
    except ValueError:
        return 0


def write_snapshot(client: Any, prefix: str, role: str, metrics: str, *, started: float,
                   restarts: int = 0, host: str | None = None, pid: int | None = None,
                   ttl: int = SNAPSHOT_TTL, now: float | None = None) -> str:
    """Write one snapshot (a synchronous ``redis.Redis``); returns its key."""
    host = host or hostname()
    pid = pid if pid is not None else os.getpid()
    key = snapshot_key(prefix, role, host, pid)
    mapping = {
        "role": role, "host": host, "pid": str(pid), "started": f"{started:.3f}",
        "restarts": str(restarts), "updated": f"{(now if now is not None else time.time()):.3f}",
        "metrics": metrics,
    }
    pipe = client.pipeline(transaction=True)
    pipe.hset(key, mapping=mapping)
    pipe.expire(key, ttl)
    pipe.execute()
    return key


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


def _number(value: Any, kind: type = float) -> Any:
    try:
        return kind(float(_text(value)))
    except ValueError:
        return kind(0)


def parse_snapshot(raw: dict[Any, Any], *, now: float | None = None,
                   alive_within: float = ALIVE_WITHIN) -> dict[str, Any]:
    """A snapshot hash (bytes or str keys) as a dict with typed fields and ``alive``."""
    fields = {_text(k): v for k, v in raw.items()}
    updated = _number(fields.get("updated"))
    now = time.time() if now is None else now
    return {
        "role": _text(fields.get("role")),
        "host": _text(fields.get("host")),
        "pid": _number(fields.get("pid"), int),
        "started": _number(fields.get("started")),
        "restarts": _number(fields.get("restarts"), int),
        "updated": updated,
        "alive": (now - updated) <= alive_within,
        "metrics": _text(fields.get("metrics")),
    }


def read_snapshots(client: Any, prefix: str, *, now: float | None = None) -> list[dict[str, Any]]:
    """Every snapshot in Redis, sorted by role, host and pid."""
    keys = sorted(set(client.scan_iter(match=snapshot_pattern(prefix), count=500)))
    if not keys:
        return []
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.hgetall(key)
    found = []
    for raw in pipe.execute():
        if raw:
            found.append(parse_snapshot(raw, now=now))
    found.sort(key=lambda p: (p["role"], p["host"], p["pid"]))
    return found


class SnapshotPublisher:
    """Writes this process's snapshot every ``interval`` seconds from a daemon thread, and once
    more at exit (best effort). ``render`` returns the process's Prometheus text; ``client`` is a
    callable returning a synchronous Redis client (so a broken connection is re-made)."""

    def __init__(self, role: str, render: Callable[[], str], client: Callable[[], Any],
                 prefix: str, *, interval: float | None = None) -> None:
        self.role = role
        self.render = render
        self.client = client
        self.prefix = prefix
        self.interval = interval if interval is not None else interval_from_env()
        self.started = time.time()
        self.restarts = restarts_from_env()
        self.host = hostname()
        self.pid = os.getpid()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.key = snapshot_key(prefix, role, self.host, self.pid)

    def publish(self) -> bool:
        if os.getpid() != self.pid:  # a forked child: its own publisher speaks for it
            return False
        try:
            write_snapshot(self.client(), self.prefix, self.role, self.render(),
                           started=self.started, restarts=self.restarts, host=self.host,
                           pid=self.pid)
            return True
        except Exception as exc:  # Redis down, render failed: try again next period
            log.debug("snapshot of %s not written: %s", self.role, exc)
            return False

    def start(self) -> SnapshotPublisher:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"snapshot-{self.role}",
                                            daemon=True)
            self._thread.start()
            atexit.register(self.stop)
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.publish()
            self._stop.wait(self.interval)

    def stop(self, *, final: bool = True) -> None:
        self._stop.set()
        if final:
            self.publish()


# -- the edge's side (Twisted) -------------------------------------------------------------------

CERT_EXPIRY = "edge_tls_certificate_expiry_timestamp_seconds"
_cert_cache: dict[str, tuple[float, float | None]] = {}


def certificate_expiry(path: str) -> float | None:
    """When the first certificate of a PEM file expires (unix seconds), None when it cannot be
    read; read again only when the file changes."""
    try:
        mtime = os.stat(path).st_mtime
    except OSError:
        return None
    cached = _cert_cache.get(path)
    if cached is not None and cached[0] == mtime:
        return cached[1]
    from cryptography import x509

    try:
        with open(path, "rb") as pem:
            certificate = x509.load_pem_x509_certificate(pem.read())
        expiry: float | None = certificate.not_valid_after_utc.timestamp()
    except (OSError, ValueError):
        expiry = None
    _cert_cache[path] = (mtime, expiry)
    return expiry


def certificate_samples(path: str | None) -> list[tuple[Any, ...]]:
    """The ``edge_tls_certificate_expiry_timestamp_seconds`` sample of ``EDGE_TLS_CERT``
    (none without TLS)."""
    if not path:
        return []
    expiry = certificate_expiry(path)
    if expiry is None:
        return []
    return [(CERT_EXPIRY, "gauge", "When the edge's TLS server certificate expires (unix seconds)",
             int(expiry), {"certificate": os.path.basename(path)})]


def sync_client(url: str) -> Any:
    """A synchronous redis-py client of ``REDIS_URL`` (a Sentinel set's master too)."""
    import redis

    from edge.bus.redis_url import RedisAddress, is_sentinel_url

    address = RedisAddress.parse(url)  # rediss://: redis-py reads the same ssl_* options
    if is_sentinel_url(url):
        from redis.sentinel import Sentinel

        tls = address.tls.redis_py_options() if address.tls is not None else {}
        sentinel = Sentinel(
            list(address.sentinels), socket_timeout=5,
            sentinel_kwargs={"username": address.sentinel_username,
                             "password": address.sentinel_password, "socket_timeout": 5,
                             **tls})
        return sentinel.master_for(address.master_name or "", db=address.db,
                                   username=address.username, password=address.password,
                                   socket_timeout=5, socket_connect_timeout=5, **tls)
    return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)


class TwistedSnapshot:
    """Publishes the edge's snapshot from a Twisted process: ``render`` (its exposition text, or
    a Deferred of it) every ``interval`` seconds, written by a synchronous Redis client in the
    reactor's thread pool, and once more before the reactor shuts down."""

    def __init__(self, reactor: Any, role: str, render: Callable[[], Any], redis_url: str,
                 prefix: str, *, interval: float | None = None) -> None:
        self.reactor = reactor
        self.role = role
        self.render = render
        self.redis_url = redis_url
        self.prefix = prefix
        self.interval = interval if interval is not None else interval_from_env()
        self.started = time.time()
        self.restarts = restarts_from_env()
        self._client: Any = None
        self._loop: Any = None

    def client(self) -> Any:
        if self._client is None:
            self._client = sync_client(self.redis_url)
        return self._client

    def start(self) -> TwistedSnapshot:
        from twisted.internet.task import LoopingCall

        self._loop = LoopingCall(self.publish)
        self._loop.clock = self.reactor
        self._loop.start(self.interval, now=True).addErrback(lambda f: None)
        self.reactor.addSystemEventTrigger("before", "shutdown", self.final)
        return self

    def publish(self) -> Any:
        from twisted.internet.defer import maybeDeferred
        from twisted.internet.threads import deferToThreadPool

        def write(text: str) -> Any:
            return deferToThreadPool(
                self.reactor, self.reactor.getThreadPool(), write_snapshot, self.client(),
                self.prefix, self.role, text, started=self.started, restarts=self.restarts)

        d = maybeDeferred(self.render)
        d.addCallback(write)
        d.addErrback(lambda f: log.debug("edge snapshot not written: %s", f.getErrorMessage()))
        return d

    def final(self) -> Any:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        return self.publish()
