"""Ingest under failure, with real processes: the worker killed with SIGKILL and restarted,
two workers sharing the stream while one dies, Redis killed and restarted from its AOF, and the
database unreachable for a while. Every accepted point ends up stored exactly once."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import redis
from django.db import connection

from edge.bus.keys import UPLINK_GROUP
from tests.support.platform import database_url, free_port
from tests.support.waiting import wait_for
from tests.telemetry.conftest import BASE

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]
DEVICES = [f"dev-{i}" for i in range(4)]
# How long the ingest processes may take to store everything on a loaded machine (CI).
SLOW = 240.0


@pytest.fixture
def devices(sensor, admin_user):
    from webapp.devices import actions

    for identifier in DEVICES:
        actions.create_device(acting_user=admin_user, product=sensor, identifier=identifier)
    return sensor


class Ingest:
    """`manage.py ingest` processes of one test, killed at teardown."""

    def __init__(self, prefix: str, redis_url: str, db_url: str | None = None) -> None:
        self.env = {**os.environ, "REDIS_PREFIX": prefix, "REDIS_URL": redis_url,
                    "DATABASE_URL": db_url or database_url(connection.settings_dict),
                    "PYTHONUNBUFFERED": "1", "LOG_LEVEL": "WARNING"}
        self.processes: dict[str, subprocess.Popen] = {}
        self.logs: list[str] = []

    def start(self, consumer: str) -> subprocess.Popen:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "ingest", "--no-republish", "--consumer", consumer,
             "--count", "25", "--block-ms", "200", "--reclaim-idle-ms", "1500"],
            cwd=ROOT, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.processes[consumer] = process
        return process

    def kill(self, consumer: str) -> None:
        """SIGKILL: no chance to finish the batch in hand or to acknowledge anything."""
        process = self.processes.pop(consumer)
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        self.logs.append(process.stdout.read().decode(errors="replace"))

    def stop_all(self) -> None:
        for consumer in list(self.processes):
            self.kill(consumer)


@pytest.fixture
def ingest(redis_prefix, redis_url):
    workers = Ingest(redis_prefix, redis_url)
    yield workers
    workers.stop_all()
    print("\n".join(log[-3000:] for log in workers.logs))


def produce(client: redis.Redis, prefix: str, entries: range) -> None:
    """What the edge does: each entry one data point per device plus a log event."""
    pipe = client.pipeline(transaction=False)
    for i in entries:
        events = [{"t": "data", "dev": dev, "prod": "sensor", "svc": "env", "ts": BASE + i,
                   "et": None, "v": {"humidity": i % 100, "temperature": i / 10}}
                  for dev in DEVICES]
        events.append({"t": "log", "dev": DEVICES[i % 4], "dir": "up",
                       "topic": f"/v1/devices/{DEVICES[i % 4]}/datas", "payload": str(i),
                       "ok": True, "reason": None, "ts": BASE + i})
        pipe.xadd(f"{prefix}uplink", {"b": json.dumps(events)})
        if len(pipe) >= 500:
            pipe.execute()
    pipe.execute()


def stored(product) -> int:
    from webapp.telemetry.backends.sql import table_name

    with connection.cursor() as cursor:
        if table_name(product, "env") not in connection.introspection.table_names(cursor):
            return 0
        cursor.execute(f"SELECT COUNT(*) FROM {table_name(product, 'env')}")  # noqa: S608
        return cursor.fetchone()[0]


def assert_exactly_once(client: redis.Redis, prefix: str, product, entries: int) -> None:
    """Every point of every entry is stored once, every log once, and nothing is pending."""
    from webapp.telemetry.backends import SeriesQuery, get_backend
    from webapp.telemetry.models import DeviceMessage

    wait_for(lambda: stored(product) == entries * len(DEVICES) or None, timeout=SLOW)
    rows = get_backend().query(SeriesQuery(product=product, service="env", devices=DEVICES,
                                           properties=["humidity"], start=BASE,
                                           end=BASE + entries, limit=entries * 10))
    assert sorted((r["device"], r["ts"] - BASE) for r in rows) == sorted(
        (dev, i) for dev in DEVICES for i in range(entries))
    assert all(r["humidity"] == (r["ts"] - BASE) % 100 for r in rows)
    messages = list(DeviceMessage.objects.values_list("payload", flat=True))
    assert sorted(messages, key=int) == [str(i) for i in range(entries)]
    wait_for(lambda: client.xpending(f"{prefix}uplink", UPLINK_GROUP)["pending"] == 0 or None,
             timeout=10)


def test_sigkill_mid_stream_then_restart_loses_and_duplicates_nothing(devices, ingest,
                                                                      redis_client,
                                                                      redis_prefix):
    """kill -9 of the worker in the middle of a backlog; the restarted worker finishes it."""
    entries = 3000
    produce(redis_client, redis_prefix, range(entries))
    ingest.start("c1")
    wait_for(lambda: stored(devices) > 0, timeout=SLOW, interval=0.01)
    ingest.kill("c1")
    at_kill = stored(devices)
    assert 0 < at_kill < entries * len(DEVICES)
    pending = redis_client.xpending(f"{redis_prefix}uplink", UPLINK_GROUP)["pending"]
    assert pending > 0  # read by the dead worker, not acknowledged
    ingest.start("c1")  # same consumer name: it reads its own pending entries first
    assert_exactly_once(redis_client, redis_prefix, devices, entries)


def test_parallel_consumers_take_over_from_a_killed_one(devices, ingest, redis_client,
                                                        redis_prefix):
    """Two workers share the stream; one is killed and the other reclaims its entries."""
    entries = 3000
    ingest.start("c1")
    ingest.start("c2")
    produce(redis_client, redis_prefix, range(entries))

    def consumers():
        try:
            found = redis_client.xinfo_consumers(f"{redis_prefix}uplink", UPLINK_GROUP)
        except redis.ResponseError:  # no worker has created the group yet
            return {}
        return {c["name"].decode() if isinstance(c["name"], bytes) else c["name"]: c
                for c in found}

    # Kill c1 while it holds entries it has read and not acknowledged.
    wait_for(lambda: consumers().get("c1", {}).get("pending", 0) > 0, timeout=SLOW,
             interval=0.005)
    ingest.kill("c1")
    assert stored(devices) < entries * len(DEVICES)
    assert consumers()["c1"]["pending"] > 0
    assert_exactly_once(redis_client, redis_prefix, devices, entries)
    assert consumers()["c1"]["pending"] == 0  # c2 took them over


class OwnRedis:
    """A redis-server of this test (AOF, fsync always) that can be SIGKILLed and restarted."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="tl-redis-")
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [shutil.which("redis-server") or "redis-server", "--port", str(self.port),
             "--bind", "127.0.0.1", "--dir", self.dir, "--appendonly", "yes",
             "--appendfsync", "always", "--save", ""],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: _answers(self.url), timeout=10)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def cleanup(self) -> None:
        if self.process and self.process.poll() is None:
            self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def _answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_timeout=1).ping())
    except redis.RedisError:
        return False


@pytest.fixture
def own_redis():
    server = OwnRedis()
    server.start()
    yield server
    server.cleanup()


def test_redis_killed_and_restarted_loses_nothing(devices, own_redis, redis_prefix):
    """SIGKILL of Redis mid-stream: the stream, the group and its pending entries come back
    from the AOF, the worker reconnects, and everything accepted before and after is stored."""
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is needed for this test")
    client = redis.Redis.from_url(own_redis.url)
    workers = Ingest(redis_prefix, own_redis.url)
    try:
        produce(client, redis_prefix, range(2000))
        workers.start("c1")
        wait_for(lambda: stored(devices) > 0, timeout=SLOW, interval=0.01)
        own_redis.kill()
        assert stored(devices) < 2000 * len(DEVICES)
        time.sleep(1.5)  # the worker sees Redis gone and retries
        own_redis.start()
        client = redis.Redis.from_url(own_redis.url)
        assert client.xlen(f"{redis_prefix}uplink") == 2000  # every accepted entry survived
        produce(client, redis_prefix, range(2000, 2500))
        assert_exactly_once(client, redis_prefix, devices, 2500)
    finally:
        workers.stop_all()
        print("\n".join(log[-3000:] for log in workers.logs))


class Proxy:
    """A TCP proxy to PostgreSQL that can go down (closing every connection) and come back."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = free_port()
        self.sockets: list[socket.socket] = []
        self.listener: socket.socket | None = None
        self.lock = threading.Lock()

    def up(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        with self.lock:
            if self.listener is not None:
                self.listener.close()
                self.listener = None
            for sock in self.sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self.sockets.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def test_database_unavailable_keeps_entries_pending_until_it_returns(devices, redis_client,
                                                                    redis_prefix, redis_url):
    """With the database unreachable nothing is acknowledged; once it is back, all is stored."""
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL: the worker reaches it through a TCP proxy that the "
                    "test takes down (CI runs on PostgreSQL)")
    settings = connection.settings_dict
    proxy = Proxy((settings.get("HOST") or "127.0.0.1", int(settings.get("PORT") or 5432)))
    proxy.up()
    db_url = database_url({**settings, "HOST": "127.0.0.1", "PORT": proxy.port})
    workers = Ingest(redis_prefix, redis_url, db_url)
    try:
        produce(redis_client, redis_prefix, range(500))
        workers.start("c1")
        wait_for(lambda: stored(devices) == 500 * len(DEVICES) or None, timeout=SLOW)
        proxy.down()
        produce(redis_client, redis_prefix, range(500, 1500))
        time.sleep(4)  # the worker reads, fails to write, retries
        assert stored(devices) == 500 * len(DEVICES)
        groups = {g["name"]: g for g in redis_client.xinfo_groups(f"{redis_prefix}uplink")}
        group = groups.get(UPLINK_GROUP.encode()) or groups[UPLINK_GROUP]
        assert group["pending"] + group["lag"] == 1000  # nothing acknowledged while down
        assert group["pending"] > 0  # and the worker did try
        proxy.up()
        assert_exactly_once(redis_client, redis_prefix, devices, 1500)
    finally:
        workers.stop_all()
        proxy.down()
        print("\n".join(log[-3000:] for log in workers.logs))
