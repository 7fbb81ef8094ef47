"""End-to-end ingest: devices publish QoS 1 `datas` over MQTT (paho, several processes) → edge
(`python -m edge`) → Redis stream → ingest workers → PostgreSQL; points persisted per second,
against a plain COPY of the same rows in the same run; then the query of one device's day at
1-minute averages over 10 million stored points. Method and figures: docs/performance.md.

Environment: BENCH_DATABASE_URL (a PostgreSQL server; the database `tl_bench_ingest` is
created and dropped), REDIS_URL (the machine's Redis), BENCH_INGEST_WORKERS (2),
BENCH_PUBLISHERS (2), BENCH_POINTS_PER_MESSAGE (10).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

from bench import benchmark

ROOT = Path(__file__).resolve().parent.parent
DATABASE = "tl_bench_ingest"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, process: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {port}")


def _django(env: dict[str, str], *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "bench._ingest_django", *args], cwd=ROOT,
                         env=env, capture_output=True, text=True, check=False, timeout=3600)
    if out.returncode:
        raise RuntimeError(f"bench._ingest_django {args[0]} failed:\n{out.stderr[-3000:]}")
    return out.stdout.strip().splitlines()[-1]


def _publisher(port: int, devices: list[tuple[str, str]], messages: int, per_message: int,
               base_ts: int, result: Any) -> None:
    """One process: connect its devices, publish `messages` QoS 1 datas each, wait for every
    PUBACK; report (messages acknowledged, first publish time, last ack time)."""
    import paho.mqtt.client as mqtt

    clients = []
    acked = [0]
    for identifier, secret in devices:
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-{identifier}",
                             protocol=mqtt.MQTTv311)
        client.username_pw_set(identifier, secret)
        client.max_inflight_messages_set(200)
        client.max_queued_messages_set(0)

        def on_publish(c: Any, userdata: Any, mid: int, rc: Any, props: Any) -> None:
            acked[0] += 1

        client.on_publish = on_publish
        client.connect("127.0.0.1", port, keepalive=120)
        client.loop_start()
        clients.append((identifier, client))
    time.sleep(0.5)
    started = time.time()
    for n in range(messages):
        for identifier, client in clients:
            first = base_ts + n * per_message
            body = {"devices": [{"deviceId": identifier, "services": [
                {"serviceCode": "env", "eventTime": first + k,
                 "data": {"temperature": (n + k) % 500 / 10, "humidity": (n + k) % 100}}
                for k in range(per_message)]}]}
            client.publish(f"/v1/devices/{identifier}/datas", json.dumps(body), qos=1)
    total = messages * len(clients)
    deadline = time.monotonic() + 600
    while acked[0] < total and time.monotonic() < deadline:
        time.sleep(0.01)
    finished = time.time()
    for _, client in clients:
        client.disconnect()
        client.loop_stop()
    result.put((acked[0], started, finished))


def run(small: bool) -> dict[str, Any]:
    devices = 40 if small else 400
    messages = 10 if small else 100
    per_message = int(os.environ.get("BENCH_POINTS_PER_MESSAGE", "10"))
    publishers = int(os.environ.get("BENCH_PUBLISHERS", "2"))
    workers = int(os.environ.get("BENCH_INGEST_WORKERS", "2"))
    query_points = 100_000 if small else 10_000_000
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
        db = psycopg.connect(database_url, autocommit=True)

        def stored_points() -> int:
            row = db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()  # noqa: S608
            return int(row[0]) if row else 0

        mqtt_port = _free_port()
        edge_env = {**env, "EDGE_MQTT_PORT": str(mqtt_port), "EDGE_HOST": "127.0.0.1",
                    "EDGE_METRICS_PORT": str(_free_port()), "EDGE_WS_PORT": str(_free_port()),
                    "EDGE_NODE_ID": f"{prefix}n1"}
        edge = subprocess.Popen([sys.executable, "-m", "edge"], cwd=ROOT, env=edge_env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        processes.append(edge)
        _wait_port(mqtt_port, edge)
        for i in range(workers):
            processes.append(subprocess.Popen(
                [sys.executable, "manage.py", "ingest", "--no-republish", "--consumer",
                 f"bench-{i}", "--count", "100"], cwd=ROOT, env=env,
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
                                     base_ts + i * 1_000_000, queue))
            for i, share in enumerate(shares)]
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
        db.close()
        copy = json.loads(_django(env, "copy"))
        copy_rate = copy["rows"] / copy["seconds"] if copy["seconds"] else 0.0
        e2e_rate = stored / e2e_seconds
        query = json.loads(_django(env, "query", str(query_points)))
        return {
            "devices": devices, "messages_per_device": messages,
            "points_per_message": per_message, "publisher_processes": publishers,
            "ingest_workers": workers,
            "messages_acked": acked, "points_expected": expected, "points_stored": stored,
            "publish_to_last_puback_s": round(acked_at - started, 2),
            "publish_to_all_persisted_s": round(e2e_seconds, 2),
            "points_per_s_end_to_end": round(e2e_rate),
            "messages_per_s_end_to_end": round(acked / e2e_seconds),
            "copy_rows_per_s": round(copy_rate),
            "end_to_end_over_copy": round(e2e_rate / copy_rate, 3) if copy_rate else None,
            "query_day_1m_avg": query,
        }
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()
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
