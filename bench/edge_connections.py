"""Idle connections held by the edge (docs/performance.md):

(d) ``edge-idle``: N devices authenticated with their secret (registered in Redis as the
    webapp does it), against the default single worker: connects per second and edge RSS per
    connection (VmRSS before and after); then as many anonymous clients
    (``EDGE_ALLOW_ANONYMOUS=1``); Mosquitto holds the same number of anonymous connections for
    comparison;
(e) ``edge-100k``: 100,000 devices held across ``EDGE_WORKERS=6``, the load generator split
    over six processes, each on loopback source addresses of its own (127.2.0.x, bound with
    IP_BIND_ADDRESS_NO_PORT) so that ephemeral ports do not run out and no process exceeds its
    20,000 open files.

The load generator (``bench.edge_loadgen idle``) keeps 1,000 CONNECTs in flight per process
and retries with exponential backoff and jitter; its CPU is reported (``loadgen``) to show
that it is not what sets the connect rate. ``edge-1m`` (bench/edge_1m.py) is the million.

    REDIS_URL=redis://127.0.0.1:6379/0 python -m bench edge-idle [--small]
    REDIS_URL=redis://127.0.0.1:6379/0 python -m bench edge-100k [--small]
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from bench import benchmark
from edge.crypto import encrypt_secret

from .edge_loadgen import addresses_needed, source_addresses
from .edge_support import Broker, LoadGen, cpu_seconds, edge, mosquitto, save

SECRET_KEY = "bench-edge-secret-key"
DEVICE_SECRET = "bench-device-secret"


def register_devices(broker: Broker, count: int) -> float:
    """Write ``count`` devices as webapp publishes them (hash per device, secret encrypted
    with edge.crypto); returns the seconds it took."""
    started = time.monotonic()
    r = broker.extra["redis"]
    prefix = broker.extra["prefix"]
    r.hset(f"{prefix}prod:bench", mapping={"model": json.dumps({"services": {}}), "type": "common"})
    pipe = r.pipeline(transaction=False)
    for i in range(count):
        pipe.hset(
            f"{prefix}dev:bench-dev-{i}",
            mapping={
                "product": "bench",
                "secret": encrypt_secret(DEVICE_SECRET, SECRET_KEY),
                "status": "activated",
                "node_type": "direct",
                "gateway": "",
            },
        )
        if i % 2000 == 1999:
            pipe.execute()
    pipe.execute()
    return time.monotonic() - started


def hold(
    broker: Broker,
    count: int,
    processes: int,
    password: str | None,
    inflight: int = 1000,
    rate: float = 0.0,
    keepalive: int = 600,
    first_address: int = 0,
) -> tuple[list[LoadGen], dict[str, Any]]:
    """Open ``count`` connections from ``processes`` load generators (``bench.edge_loadgen
    idle``: each on loopback source addresses of its own, at most 10,000 connections per
    address, ``inflight`` CONNECTs open at once and ``rate`` new connects/s per process, 0
    for no pacing); returns them (still holding) and the combined figures."""
    share = -(-count // processes)
    per_process = addresses_needed(share)
    generators = []
    for k in range(processes):
        n = min(share, count - share * k)
        if n <= 0:
            break
        sources = source_addresses(first_address + k * per_process, per_process)
        args = [
            "idle",
            "--port",
            str(broker.port),
            "--count",
            str(n),
            "--start",
            str(k * share),
            "--source",
            ",".join(sources),
            "--inflight",
            str(inflight),
            "--rate",
            str(rate),
            "--keepalive",
            str(keepalive),
            "--client-prefix",
            f"bench-{broker.name}-",
        ]
        if password is not None:
            args += ["--password", password]
        generators.append(LoadGen(*args))
    try:
        # On a loaded 2-core machine a connect may take milliseconds: wait long enough.
        reports = [g.read(max(900.0, count / 20)) for g in generators]
    except BaseException:
        for generator in generators:
            generator.close()
        raise
    start = min(r["start"] for r in reports)
    end = max(r["end"] for r in reports)
    held = sum(r["held"] for r in reports)
    failures: dict[str, int] = {}
    for report in reports:
        for key, n in report["failures"].items():
            failures[key] = failures.get(key, 0) + n
    seconds = end - start
    cpu = sum(r.get("cpu", 0.0) for r in reports)
    return generators, {
        "held": held,
        "seconds": round(seconds, 2),
        "connects_per_second": round(held / seconds) if seconds > 0 else None,
        "connect_p50_ms": max(r["p50_ms"] or 0 for r in reports),
        "connect_p99_ms": max(r["p99_ms"] or 0 for r in reports),
        "failed_attempts": failures,
        "gave_up": sum(r.get("gave_up", 0) for r in reports),
        "loadgen": {
            "processes": len(generators),
            "source_addresses": sum(r.get("sources", 1) for r in reports),
            "inflight_per_process": inflight,
            "cpu_seconds": round(cpu, 2),
            # The generator's share of a core while connecting: well below 1 per process
            # means the broker, not the generator, set the pace.
            "cpu_cores_while_connecting": round(cpu / seconds, 2) if seconds > 0 else None,
            "rss_kb": sum(r.get("rss_kb", 0) for r in reports),
        },
    }


def listen_counters() -> dict[str, int]:
    """The kernel's TcpExt counters of refused or dropped connection attempts (machine-wide:
    ListenOverflows/ListenDrops count SYNs or handshakes dropped at a full accept queue, the
    client then resends its SYN after 1 s, 3 s, ...)."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            table = dict(zip(names.split()[1:], (int(v) for v in values.split()[1:]), strict=False))
            wanted = ("ListenOverflows", "ListenDrops", "SyncookiesSent", "TCPReqQFullDrop")
            return {k: table.get(k, 0) for k in wanted}
    return {}


def release(generators: list[LoadGen]) -> int:
    """Close the connections; returns how many the broker had closed meanwhile."""
    closed = 0
    for generator in generators:
        generator.stop()
    for generator in generators:
        try:
            closed += int(generator.read(120).get("closed_by_peer", 0))
        finally:
            generator.close()
    return closed


def settle(pid: int, limit: float = 60.0, idle_cores: float = 0.05) -> float:
    """Wait until the process (and its workers) use less than ``idle_cores`` of CPU over a
    second, at most ``limit`` seconds; returns how long it took."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        cpu = cpu_seconds(pid)
        time.sleep(1.0)
        if cpu_seconds(pid) - cpu < idle_cores:
            break
    return round(time.monotonic() - started, 1)


def measure(broker: Broker, count: int, processes: int, password: str | None) -> dict[str, Any]:
    time.sleep(1.0)
    before = broker.rss_kb()
    cpu_before = cpu_seconds(broker.pid)
    drops_before = listen_counters()
    generators, figures = hold(broker, count, processes, password)
    figures["kernel_listen_drops"] = {
        k: v - drops_before.get(k, 0) for k, v in listen_counters().items()
    }
    broker_cpu = cpu_seconds(broker.pid) - cpu_before
    figures["broker_cpu_ms_per_connect"] = round(1000 * broker_cpu / max(figures["held"], 1), 3)
    if figures["seconds"]:
        figures["broker_cpu_cores_while_connecting"] = round(broker_cpu / figures["seconds"], 2)
    try:
        time.sleep(3.0)  # let allocations settle (registry loads, heartbeat)
        early = broker.rss_kb()
        # Then until the broker is idle: the edge may still be writing the connects' Redis
        # commands (claims, session-store writes, status events) when Redis is slower than
        # the connects (anonymous clients do not wait for a registry lookup); that backlog
        # is not what an idle connection costs. Both figures are kept.
        figures["settled_s"] = settle(broker.pid)
        # The edge gives free C heap pages back once its connection count settles (checked
        # every 2 s, edge.gctune.MemoryTrimmer).
        time.sleep(5.0)
        after = broker.rss_kb()
        if broker.metrics_port is not None:
            figures["edge_connections_metric"] = int(broker.metrics()["edge_connections"])
            deadline = time.monotonic() + 12  # heartbeats come every 5 s
            spread = per_worker(broker)
            while sum(spread.values()) != figures["held"] and time.monotonic() < deadline:
                time.sleep(0.5)
                spread = per_worker(broker)
            figures["connections_per_worker"] = dict(sorted(spread.items()))
        figures.update(
            {
                "rss_before_kb": before,
                "rss_after_kb": after,
                "rss_per_connection_kb": round((after - before) / max(figures["held"], 1), 2),
                "rss_3s_after_kb": early,
                "rss_per_connection_3s_kb": round((early - before) / max(figures["held"], 1), 2),
            }
        )
    finally:
        figures["closed_by_broker_while_held"] = release(generators)
    if figures["held"] < count:
        raise RuntimeError(f"{broker.name} held {figures['held']} of {count} connections")
    return figures


@benchmark("edge-idle")
def idle(small: bool) -> dict[str, Any]:
    count = 500 if small else 15_000
    results: dict[str, Any] = {"connections": count, "load_average": list(os.getloadavg())}
    with mosquitto() as broker:
        results["mosquitto_anonymous"] = measure(broker, count, 1, None)
    env = {"DJANGO_SECRET_KEY": SECRET_KEY}
    with edge(env) as broker:
        results["register_devices_s"] = round(register_devices(broker, count), 2)
        results["edge_device_auth"] = measure(broker, count, 1, DEVICE_SECRET)
    # The same number of anonymous clients (EDGE_ALLOW_ANONYMOUS, development): no dearer.
    with edge({**env, "EDGE_ALLOW_ANONYMOUS": "1"}) as broker:
        results["edge_anonymous"] = measure(broker, count, 1, None)
    results["load_average_after"] = list(os.getloadavg())
    return save("edge-idle-small" if small else "edge-idle", results)


@benchmark("edge-100k")
def hundred_thousand(small: bool) -> dict[str, Any]:
    count = 1_200 if small else 100_000
    workers = 6
    results: dict[str, Any] = {
        "connections": count,
        "workers": workers,
        "load_generator_processes": workers,
        "load_average": list(os.getloadavg()),
    }
    env = {"DJANGO_SECRET_KEY": SECRET_KEY}
    with edge(env, workers=workers) as broker:
        results["register_devices_s"] = round(register_devices(broker, count), 2)
        figures = measure(broker, count, workers, DEVICE_SECRET)
        results["edge_device_auth"] = figures
        if figures.get("edge_connections_metric") != count:
            raise RuntimeError(
                f"the edge reports {figures.get('edge_connections_metric')} of {count}"
            )
    results["load_average_after"] = list(os.getloadavg())
    return save("edge-100k-small" if small else "edge-100k", results)


def per_worker(broker: Broker) -> dict[str, int]:
    """Connections per worker node from the tl:nodes heartbeats."""
    r = broker.extra["redis"]
    beats = r.hgetall(f"{broker.extra['prefix']}nodes")
    return {k.decode(): json.loads(v)["conns"] for k, v in beats.items()}
