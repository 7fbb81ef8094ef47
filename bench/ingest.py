"""End-to-end ingest: devices publish QoS 1 `datas` over MQTT (one connection per device with
its own credentials, from asyncio processes sending prebuilt packets) → edge
(`python -m edge`) → Redis stream → ingest workers → PostgreSQL; points persisted per second,
against a plain COPY of the same rows in the same run; then the query of one device's day at
1-minute averages over 10 million stored points. Method and figures: docs/performance.md.

Environment: BENCH_DEVICES (1,000; --small 40), BENCH_MESSAGES per device (100; 10),
BENCH_DATABASE_URL (a PostgreSQL server; the database `tl_bench_ingest` is
created and dropped), REDIS_URL (the machine's Redis), BENCH_INGEST_WORKERS (2),
BENCH_PUBLISHERS (2), BENCH_POINTS_PER_MESSAGE (10), BENCH_WINDOW (20 QoS 1 messages in
flight per device), BENCH_QUERY_POINTS (10,000,000; 0 skips
the query), BENCH_RULES (0: alarm thresholds on the product the traffic never crosses, as
in bench.rules_ingest's `quiet` set), BENCH_PROFILE (a directory: profile the edge and ingest
workers there).
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

from bench import benchmark
from bench.edge_loadgen import connect_packet, publish_packet
from bench.edge_support import cpu_seconds, free_port, wait_port
from tests.support.processes import stop_process

ROOT = Path(__file__).resolve().parent.parent
DATABASE = "tl_bench_ingest"
# A point is one timestamped sample of the service (a row); it carries this many property
# values (temperature, humidity), what ThingsBoard counts as data points.
VALUES_PER_POINT = 2


def _machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent not idle so far (all cores, /proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _django(env: dict[str, str], *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "bench._ingest_django", *args], cwd=ROOT,
                         env=env, capture_output=True, text=True, check=False, timeout=3600)
    if out.returncode:
        raise RuntimeError(f"bench._ingest_django {args[0]} failed:\n{out.stderr[-3000:]}")
    return out.stdout.strip().splitlines()[-1]


class _Device(asyncio.Protocol):
    """One device's MQTT 3.1.1 connection: CONNECT with its credentials, then its prebuilt
    QoS 1 PUBLISH packets, at most `window` awaiting their PUBACK at a time."""

    def __init__(self, packets: list[bytes], window: int, done: asyncio.Future[None]) -> None:
        self.packets = packets
        self.window = window
        self.done = done
        self.connected: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: Any = None
        self.sent = self.acked = 0
        self.buffer = b""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data
        position = 0
        while len(buffer) - position >= 2:
            # Every packet the edge sends here (CONNACK, PUBACK) has a one-byte length.
            size = 2 + buffer[position + 1]
            if len(buffer) - position < size:
                break
            kind = buffer[position] >> 4
            if kind == 2:
                if buffer[position + 3] != 0:
                    self.connected.set_exception(RuntimeError(f"CONNACK {buffer[position + 3]}"))
                    return
                self.connected.set_result(None)
            elif kind == 4:
                self.acked += 1
            position += size
        self.buffer = buffer[position:]
        if self.sent:
            self.fill()

    def fill(self) -> None:
        room = min(self.window - (self.sent - self.acked), len(self.packets) - self.sent)
        if room > 0:
            self.transport.write(b"".join(self.packets[self.sent:self.sent + room]))
            self.sent += room
        if self.acked == len(self.packets) and not self.done.done():
            self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.connected.done():
            self.connected.set_exception(RuntimeError(f"connection lost: {exc}"))
        if not self.done.done():
            self.done.set_exception(RuntimeError(f"connection lost: {exc}"))


def _packets(identifier: str, messages: int, per_message: int, base_ts: int) -> list[bytes]:
    """The device's QoS 1 `datas` messages, ThingLinks' body, `per_message` points each."""
    topic = f"/v1/devices/{identifier}/datas"
    packets = []
    for n in range(messages):
        first = base_ts + n * per_message
        body = {"devices": [{"deviceId": identifier, "services": [
            {"serviceCode": "env", "eventTime": first + k,
             "data": {"temperature": (n + k) % 500 / 10, "humidity": (n + k) % 100}}
            for k in range(per_message)]}]}
        packets.append(publish_packet(topic, json.dumps(body).encode(), 1, n % 65535 + 1))
    return packets


def _publisher(port: int, devices: list[tuple[str, str]], messages: int, per_message: int,
               base_ts: int, window: int, result: Any) -> None:
    """One process: connect its devices, publish `messages` QoS 1 datas each (encoded before
    the clock starts), wait for every PUBACK; report (messages acknowledged, first publish
    time, last ack time, CPU seconds spent publishing)."""

    async def main() -> tuple[int, float, float, float]:
        loop = asyncio.get_running_loop()
        clients = []
        for identifier, secret in devices:
            packets = _packets(identifier, messages, per_message, base_ts)
            client = _Device(packets, window, loop.create_future())

            def factory(c: _Device = client) -> _Device:
                return c

            await loop.create_connection(factory, "127.0.0.1", port)
            client.transport.write(connect_packet(f"bench-{identifier}", identifier, secret,
                                                  keepalive=120))
            clients.append(client)
        await asyncio.gather(*(c.connected for c in clients))
        started, cpu_started = time.time(), time.process_time()
        for client in clients:
            client.fill()
        await asyncio.wait_for(asyncio.gather(*(c.done for c in clients)), 600)
        finished = time.time()
        for client in clients:
            client.transport.close()
        return (sum(c.acked for c in clients), started, finished,
                time.process_time() - cpu_started)

    result.put(asyncio.run(main()))


def run(small: bool) -> dict[str, Any]:
    devices = int(os.environ.get("BENCH_DEVICES", 40 if small else 1000))
    messages = int(os.environ.get("BENCH_MESSAGES", 10 if small else 100))
    per_message = int(os.environ.get("BENCH_POINTS_PER_MESSAGE", "10"))
    publishers = int(os.environ.get("BENCH_PUBLISHERS", "2"))
    workers = int(os.environ.get("BENCH_INGEST_WORKERS", "2"))
    window = int(os.environ.get("BENCH_WINDOW", "20"))
    rule_count = int(os.environ.get("BENCH_RULES", "0"))
    query_points = int(os.environ.get("BENCH_QUERY_POINTS", 100_000 if small else 10_000_000))
    server = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    redis_url = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    admin = psycopg.connect(server, autocommit=True)
    admin.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
    admin.execute(f"CREATE DATABASE {DATABASE}")
    database_url = server.rsplit("/", 1)[0] + f"/{DATABASE}"
    prefix = f"bench{uuid.uuid4().hex[:6]}:"
    env = {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": redis_url,
           "REDIS_PREFIX": prefix, "LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1"}
    processes: list[subprocess.Popen] = []
    try:
        setup = json.loads(_django(env, "setup", str(devices)))
        secrets, table = setup["secrets"], setup["table"]
        if rule_count:
            _django(env, "rules", str(rule_count))
        db = psycopg.connect(database_url, autocommit=True)

        def stored_points() -> int:
            row = db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()  # noqa: S608
            return int(row[0]) if row else 0

        mqtt_port = free_port()
        edge_env = {**env, "EDGE_MQTT_PORT": str(mqtt_port), "EDGE_HOST": "127.0.0.1",
                    "EDGE_METRICS_PORT": str(free_port()), "EDGE_WS_PORT": str(free_port()),
                    "EDGE_COAP_PORT": "0", "EDGE_HTTP_PORT": "0",
                    "EDGE_TCP_PORT": "0", "EDGE_UDP_PORT": "0",
                    "EDGE_NODE_ID": f"{prefix}n1"}
        # BENCH_PROFILE=dir: run the edge and the ingest workers under cProfile, one
        # .prof file per process in dir (for `python -m pstats`).
        profile_dir = os.environ.get("BENCH_PROFILE")

        def command(name: str, *args: str) -> list[str]:
            if not profile_dir:
                return [sys.executable, *args]
            return [sys.executable, "-m", "cProfile", "-o",
                    os.path.join(profile_dir, f"{name}.prof"), *args]

        edge = subprocess.Popen(command("edge", "-m", "edge"), cwd=ROOT, env=edge_env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        processes.append(edge)
        wait_port(mqtt_port, edge)
        for i in range(workers):
            processes.append(subprocess.Popen(
                command(f"ingest-{i}", "manage.py", "ingest", "--no-republish", "--consumer",
                 f"bench-{i}", "--count", "100"), cwd=ROOT, env=env,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        import redis

        bus = redis.Redis.from_url(redis_url)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # every worker has joined the group
            try:
                if len(bus.xinfo_consumers(f"{prefix}uplink", "ingest")) >= workers:
                    break
            except redis.ResponseError:
                pass
            time.sleep(0.2)
        expected = devices * messages * per_message
        base_ts = (int(time.time() * 1000) // 86_400_000) * 86_400_000 + 1
        queue: Any = multiprocessing.get_context("spawn").Queue()
        items = sorted(secrets.items())
        shares = [items[i::publishers] for i in range(publishers)]
        procs = [multiprocessing.get_context("spawn").Process(
            target=_publisher, args=(mqtt_port, share, messages, per_message,
                                     base_ts + i * 1_000_000, window, queue))
            for i, share in enumerate(shares)]
        cpu_before = {"edge": cpu_seconds(edge.pid),
                      "ingest": sum(cpu_seconds(p.pid) for p in processes[1:])}
        busy_before = _machine_busy_seconds()
        for p in procs:
            p.start()
        reports = [queue.get(timeout=900) for _ in procs]
        for p in procs:
            p.join()
        started = min(r[1] for r in reports)
        acked_at = max(r[2] for r in reports)
        acked = sum(r[0] for r in reports)
        stored = 0
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            stored = stored_points()
            if stored >= expected:
                break
            time.sleep(0.05)
        persisted_at = time.time()
        e2e_seconds = persisted_at - started
        rule_counters: dict[str, int] = {}
        if rule_count:  # what the rules saw, summed over the rules (rules:stats:{id})
            import redis as redis_lib

            counters = redis_lib.Redis.from_url(redis_url)
            for key in counters.scan_iter(match=f"{prefix}rules:stats:*", count=1000):
                for name, value in counters.hgetall(key).items():
                    rule_counters[name.decode()] = rule_counters.get(name.decode(), 0) + int(value)
        busy = _machine_busy_seconds() - busy_before
        edge_cpu = cpu_seconds(edge.pid) - cpu_before["edge"]
        ingest_cpu = sum(cpu_seconds(p.pid) for p in processes[1:]) - cpu_before["ingest"]
        publishers_cpu = sum(r[3] for r in reports)
        db.close()
        copy = json.loads(_django(env, "copy"))
        copy_rate = copy["rows"] / copy["seconds"] if copy["seconds"] else 0.0
        e2e_rate = stored / e2e_seconds
        query = json.loads(_django(env, "query", str(query_points))) if query_points else None
        return {
            "devices": devices, "messages_per_device": messages,
            "points_per_message": per_message, "publisher_processes": publishers,
            "in_flight_per_device": window, "rules_on_the_product": rule_count,
            "ingest_workers": workers,
            "messages_acked": acked, "points_expected": expected, "points_stored": stored,
            "publish_to_last_puback_s": round(acked_at - started, 2),
            "publish_to_all_persisted_s": round(e2e_seconds, 2),
            "points_per_s_end_to_end": round(e2e_rate),
            "messages_per_s_end_to_end": round(acked / e2e_seconds),
            "values_per_s_end_to_end": round(e2e_rate * VALUES_PER_POINT),
            # Where the machine's CPU went from the first publish to the last stored point
            # (seconds; "other" is PostgreSQL, Redis and the rest of the machine).
            "cpu_s": {"machine": round(busy, 1), "edge": round(edge_cpu, 1),
                      "ingest_workers": round(ingest_cpu, 1),
                      "publishers": round(publishers_cpu, 1),
                      "other": round(busy - edge_cpu - ingest_cpu - publishers_cpu, 1)},
            "rule_counters": rule_counters or None,
            "copy_rows_per_s": round(copy_rate),
            "end_to_end_over_copy": round(e2e_rate / copy_rate, 3) if copy_rate else None,
            "query_day_1m_avg": query,
        }
    finally:
        for process in reversed(processes):
            stop_process(process, 15)
        admin.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        admin.close()
        import redis

        client = redis.Redis.from_url(redis_url)
        stale = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if stale:
            client.delete(*stale)


@benchmark("ingest")
def ingest(small: bool) -> dict[str, Any]:
    return run(small)
