"""A million authenticated MQTT connections held on one machine (issue 11, docs/performance.md).

``edge-1m``: N devices (default 1,000,000) written to Redis as webapp publishes them, the edge
with ``EDGE_WORKERS`` chosen so that no worker comes near the 20,000 open files a process may
have, and load generator processes (``bench.edge_loadgen idle``) of at most 18,000 connections
each, on loopback source addresses of their own (``IP_BIND_ADDRESS_NO_PORT``). Every
connection is authenticated with the device's identifier and secret and must be CONNACKed;
after ``--hold`` seconds (60) each generator sends a PINGREQ on each of its connections and
counts the PINGRESPs, and the supervisor's summed ``edge_connections`` must equal N. Reported:
connects/s, CPU of the edge and of the generator, RSS of the edge (supervisor + workers,
after minus before) and of the generator, kernel memory (Slab, SUnreclaim, TCP pages), load
average. Devices and every other key of the run are deleted at the end (``--keep-devices``
keeps the devices for the next run, which then skips writing them).

    REDIS_URL=redis://127.0.0.1:6379/0 python -m bench edge-1m [--devices=N] [--hold=S]
        [--workers=W] [--generators=G] [--inflight=K] [--rate=R] [--keep-devices]
        [--set-sysctl] [--force]
    python -m bench --small edge-1m          # CI: 3,000 devices, 3 workers, 5 s hold
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from bench import benchmark
from edge.crypto import encrypt_secret

from .edge_connections import (
    DEVICE_SECRET,
    SECRET_KEY,
    hold,
    listen_counters,
    per_worker,
    release,
)
from .edge_support import Broker, LoadGen, cpu_seconds, edge, redis_url, save

# A fixed key prefix (not the random one of other benches), so that --keep-devices can leave
# the devices for the next run and a run cleans what an interrupted one left.
PREFIX = "bench1m:"
MARKER = f"{PREFIX}bench:registered"
# Connections per edge worker and per generator process: the 20,000 open files of a process
# less room for the SO_REUSEPORT spread (±1 %), listening sockets, Redis, logs, pipes.
PER_PROCESS = 18_000


def options(argv: list[str], small: bool) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench edge-1m")
    parser.add_argument("--devices", type=int, default=3_000 if small else 1_000_000)
    parser.add_argument("--workers", type=int, default=0, help="EDGE_WORKERS (0: for the limit)")
    parser.add_argument("--generators", type=int, default=0, help="0: for the open-file limit")
    parser.add_argument("--inflight", type=int, default=0, help="CONNECTs in flight per generator")
    parser.add_argument("--rate", type=float, default=0.0, help="connects/s in all (0: unpaced)")
    parser.add_argument("--hold", type=float, default=5.0 if small else 60.0)
    parser.add_argument("--keepalive", type=int, default=3600)
    parser.add_argument("--keep-devices", action="store_true")
    parser.add_argument("--set-sysctl", action="store_true", help="raise what the run needs")
    parser.add_argument("--force", action="store_true", help="run even if memory looks short")
    opts = parser.parse_args(argv)
    per = PER_PROCESS
    if not opts.workers:
        opts.workers = 3 if small else max(1, math.ceil(opts.devices / per))
    if not opts.generators:
        opts.generators = max(1, math.ceil(opts.devices / per))
    if not opts.inflight:
        # 1,000 per process, at most ~6,000 in all: more only lengthens each device's wait
        # (connects/s times wait = in flight) until waits pass the timeouts and devices retry
        # what the edge is still working on.
        opts.inflight = max(50, min(1000, 6_000 // opts.generators))
    return opts


def sysctl(name: str) -> str:
    return Path("/proc/sys", name.replace(".", "/")).read_text().strip()


def write_sysctl(name: str, value: str) -> None:
    Path("/proc/sys", name.replace(".", "/")).write_text(value + "\n")


def check_limits(opts: argparse.Namespace) -> tuple[dict[str, Any], dict[str, str]]:
    """What the machine allows against what the run needs. Raises when a limit is too low
    and ``--set-sysctl`` is not given; with it, raises the sysctls for the run and returns
    their old values (restored afterwards)."""
    n = opts.devices
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:  # for this process and its children (the edge, the generators) only
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    low, high = (int(x) for x in sysctl("net.ipv4.ip_local_port_range").split())
    file_nr = [int(x) for x in sysctl("fs.file-nr").split()]
    limits: dict[str, Any] = {
        "ulimit_n": soft,
        "net.ipv4.ip_local_port_range": [low, high],
        "net.core.somaxconn": int(sysctl("net.core.somaxconn")),
        "net.ipv4.tcp_max_syn_backlog": int(sysctl("net.ipv4.tcp_max_syn_backlog")),
        "fs.file-max": int(sysctl("fs.file-max")),
        "fs.file-nr": file_nr,
        "fs.nr_open": int(sysctl("fs.nr_open")),
        "net.ipv4.tcp_mem": [int(x) for x in sysctl("net.ipv4.tcp_mem").split()],
    }
    conntrack = Path("/proc/sys/net/netfilter/nf_conntrack_count")
    if conntrack.exists():
        limits["net.netfilter.nf_conntrack_count"] = int(conntrack.read_text())
        limits["net.netfilter.nf_conntrack_max"] = int(sysctl("net.netfilter.nf_conntrack_max"))
    per_worker_max = math.ceil(n / opts.workers * 1.03) + 100
    per_generator = math.ceil(n / opts.generators) + 50
    needs: dict[str, Any] = {
        # both ends of every connection are files of this machine
        "fs.file-max": 2 * n + file_nr[0] + 50_000,
        "open files per edge worker": per_worker_max,
        "open files per generator": per_generator,
        "ephemeral ports per source address": 10_000,
    }
    # Memory, from the 200,000 run (docs/performance.md): per connection 2.2 KB of edge RSS,
    # 1.6 KB of generator RSS, ~10 KB of kernel slab (both ends' sockets, files, epoll items),
    # ~0.3 KB of Redis (the device's hash); ~65 MB per edge worker and 25 MB per generator.
    needs["memory_kb"] = int(n * 14.1 + opts.workers * 65_000 + opts.generators * 25_000)
    available = int(
        next(
            line.split()[1]
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemAvailable:")
        )
    )
    limits["MemAvailable_kb"] = available
    limits["needs"] = needs
    problems = []
    if max(per_worker_max, per_generator) > soft:
        problems.append(
            f"ulimit -n is {soft}: use more workers/generators (--workers, --generators)"
        )
    if needs["memory_kb"] > available and not opts.force:
        problems.append(
            f"the run needs about {needs['memory_kb'] // 1024} MB, {available // 1024} MB are"
            " available (--force to try anyway)"
        )
    if high - low + 1 < 10_000:
        problems.append(f"ip_local_port_range {low}-{high} has fewer than 10,000 ports")
    settable: dict[str, str] = {}
    if limits["fs.file-max"] < needs["fs.file-max"]:
        settable["fs.file-max"] = str(needs["fs.file-max"])
    # Connection tracking, when something made the kernel track loopback traffic, drops
    # packets beyond its table.
    if (
        limits.get("net.netfilter.nf_conntrack_count")
        and limits.get("net.netfilter.nf_conntrack_max", 0) < 2 * n + 10_000
    ):
        settable["net.netfilter.nf_conntrack_max"] = str(2 * n + 10_000)
    if problems:
        raise RuntimeError("; ".join(problems))
    old: dict[str, str] = {}
    if settable:
        wanted = ", ".join(f"{k}={v}" for k, v in settable.items())
        if not opts.set_sysctl:
            raise RuntimeError(
                f"the run needs {wanted}: run with --set-sysctl (as root) to "
                "set them for the run (restored afterwards)"
            )
        for name, value in settable.items():
            old[name] = sysctl(name)
            write_sysctl(name, value)
        limits["set_for_the_run"] = settable
    return limits, old


def _register_range(url: str, first: int, last: int) -> None:
    import redis

    r = redis.Redis.from_url(url)
    pipe = r.pipeline(transaction=False)
    for i in range(first, last):
        pipe.hset(
            f"{PREFIX}dev:bench-dev-{i}",
            mapping={
                "product": "bench",
                "secret": encrypt_secret(DEVICE_SECRET, SECRET_KEY),
                "status": "activated",
                "node_type": "direct",
                "gateway": "",
            },
        )
        if (i - first) % 5000 == 4999:
            pipe.execute()
    pipe.execute()
    r.close()


def register(r: Any, count: int, processes: int = 2) -> float | None:
    """Write ``count`` devices as webapp publishes them (hash per device, each secret
    encrypted with edge.crypto), pipelined, in ``processes`` processes; None when a kept
    earlier run's devices are there already."""
    if int(r.get(MARKER) or 0) >= count:
        return None
    started = time.monotonic()
    r.hset(f"{PREFIX}prod:bench", mapping={"model": json.dumps({"services": {}}), "type": "common"})
    step = -(-count // processes)
    ranges = [(k * step, min(count, (k + 1) * step)) for k in range(processes)]
    with ProcessPoolExecutor(processes) as pool:
        for future in [pool.submit(_register_range, redis_url(), a, b) for a, b in ranges]:
            future.result()
    r.set(MARKER, count)
    return round(time.monotonic() - started, 2)


def clean(r: Any, keep_devices: bool) -> int:
    """Delete the run's keys (all of them, or all but the devices); returns how many."""
    deleted = 0
    batch: list[bytes] = []
    for key in r.scan_iter(f"{PREFIX}*", count=5000):
        if keep_devices and (
            key.startswith(f"{PREFIX}dev:".encode())
            or key.startswith(f"{PREFIX}prod:".encode())
            or key == MARKER.encode()
        ):
            continue
        batch.append(key)
        if len(batch) >= 5000:
            deleted += r.unlink(*batch)
            batch = []
    if batch:
        deleted += r.unlink(*batch)
    return deleted


def kernel_memory() -> dict[str, int]:
    """Slab and SUnreclaim (/proc/meminfo) and TCP sockets and their pages (sockstat), KiB."""
    info = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("Slab", "SUnreclaim", "MemAvailable"):
            info[f"{name}_kb"] = int(rest.split()[0])
    for line in Path("/proc/net/sockstat").read_text().splitlines():
        if line.startswith("TCP:"):
            fields = line.split()[1:]
            tcp = dict(zip(fields[::2], (int(v) for v in fields[1::2]), strict=False))
            info["tcp_inuse"] = tcp.get("inuse", 0)
            info["tcp_mem_kb"] = tcp.get("mem", 0) * (os.sysconf("SC_PAGE_SIZE") // 1024)
    return info


def difference(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before.get(k, 0) for k in after}


def ping_all(generators: list[LoadGen], timeout: float) -> dict[str, Any]:
    """Each generator sends a PINGREQ on each of its connections and counts PINGRESPs."""
    for generator in generators:
        stdin = generator.process.stdin
        assert stdin is not None
        stdin.write(f"ping {timeout}\n")
        stdin.flush()
    reports = [g.read(timeout + 120) for g in generators]
    return {
        "pinged": sum(r["pinged"] for r in reports),
        "pongs": sum(r["pongs"] for r in reports),
        "held": sum(r["held"] for r in reports),
        "closed_by_edge": sum(r["closed_by_peer"] for r in reports),
        "loadgen_rss_kb": sum(r["rss_kb"] for r in reports),
        "loadgen_ping_cpu_seconds": round(sum(r["ping_cpu"] for r in reports), 2),
    }


def edge_count(broker: Broker, expected: int, wait: float = 15.0) -> int:
    """The supervisor's summed ``edge_connections`` (waiting up to ``wait`` s for it to
    reach ``expected``)."""
    deadline = time.monotonic() + wait
    while True:
        count = int(broker.metrics()["edge_connections"])
        if count == expected or time.monotonic() > deadline:
            return count
        time.sleep(1.0)


def run(small: bool, argv: list[str]) -> dict[str, Any]:
    opts = options(argv, small)
    n = opts.devices
    limits, old_sysctls = check_limits(opts)
    results: dict[str, Any] = {
        "devices": n,
        "workers": opts.workers,
        "load_generator_processes": opts.generators,
        "inflight_per_generator": opts.inflight,
        "hold_seconds": opts.hold,
        "limits": limits,
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
    }
    print(f"   limits: {json.dumps(limits)}", flush=True)
    env = {"DJANGO_SECRET_KEY": SECRET_KEY, "REDIS_PREFIX": PREFIX}
    import redis

    r = redis.Redis.from_url(redis_url())
    try:
        clean(r, keep_devices=True)  # what an interrupted run left, devices aside
        results["register_devices_s"] = register(r, n)
        print(f"   devices written ({results['register_devices_s']} s)", flush=True)
        # 56 workers importing at once take a while on 2 cores (longer on a busy machine).
        with edge(env, workers=opts.workers, start_timeout=max(60.0, 5.0 * opts.workers)) as broker:
            broker.extra["prefix"] = PREFIX
            time.sleep(3.0)
            rss_before = broker.rss_kb()
            kernel_before = kernel_memory()
            cpu_before = cpu_seconds(broker.pid)
            drops_before = listen_counters()
            rate = opts.rate / opts.generators if opts.rate else 0.0
            generators, figures = hold(
                broker, n, opts.generators, DEVICE_SECRET, opts.inflight, rate, opts.keepalive
            )
            try:
                edge_cpu = cpu_seconds(broker.pid) - cpu_before
                figures["kernel_listen_drops"] = {
                    k: v - drops_before.get(k, 0) for k, v in listen_counters().items()
                }
                figures["edge_cpu_seconds"] = round(edge_cpu, 2)
                if figures["seconds"]:
                    figures["edge_cpu_cores_while_connecting"] = round(
                        edge_cpu / figures["seconds"], 2
                    )
                figures["load_average_after_connect"] = [round(x, 2) for x in os.getloadavg()]
                results["connect"] = figures
                print(f"   connected: {json.dumps(figures)}", flush=True)
                results["edge_connections_after_connect"] = edge_count(broker, n)
                time.sleep(opts.hold)
                results["check"] = ping_all(generators, 300.0 if n > 100_000 else 60.0)
                results["edge_connections_after_hold"] = edge_count(broker, n)
                spread = per_worker(broker)
                results["connections_per_worker"] = {
                    "min": min(spread.values(), default=0),
                    "max": max(spread.values(), default=0),
                    "sum": sum(spread.values()),
                }
                rss_after = broker.rss_kb()
                kernel_after = kernel_memory()
                results["memory"] = {
                    "edge_rss_before_kb": rss_before,
                    "edge_rss_after_kb": rss_after,
                    "edge_rss_per_connection_kb": round((rss_after - rss_before) / n, 2),
                    "loadgen_rss_kb": results["check"]["loadgen_rss_kb"],
                    "loadgen_rss_per_connection_kb": round(
                        results["check"]["loadgen_rss_kb"] / n, 2
                    ),
                    "kernel_before": kernel_before,
                    "kernel_after": kernel_after,
                    "kernel_delta": difference(kernel_after, kernel_before),
                    # both ends of each connection are sockets of this kernel
                    "kernel_slab_per_connection_kb": round(
                        (kernel_after["Slab_kb"] - kernel_before["Slab_kb"]) / n, 2
                    ),
                }
                results["load_average_after_hold"] = [round(x, 2) for x in os.getloadavg()]
            finally:
                results["closed_by_edge_while_held"] = release(generators)
    except BaseException as exc:  # keep what was measured up to the failure (or Ctrl-C)
        results["error"] = f"{type(exc).__name__}: {exc}"
        save("edge-1m-small" if small else f"edge-1m-{n}", results)
        raise
    finally:
        results["deleted_keys"] = clean(r, keep_devices=opts.keep_devices)
        r.close()
        for name, value in old_sysctls.items():
            write_sysctl(name, value)
    check = results.get("check", {})
    problems = []
    if results.get("connect", {}).get("held") != n:
        problems.append(f"{results.get('connect', {}).get('held')} of {n} CONNACKed")
    if check.get("pongs") != n:
        problems.append(f"{check.get('pongs')} of {n} answered a PINGREQ after the hold")
    if results.get("edge_connections_after_hold") != n:
        problems.append(f"the edge counts {results.get('edge_connections_after_hold')} of {n}")
    results["held_every_connection"] = not problems
    save("edge-1m-small" if small else f"edge-1m-{n}", results)
    if problems:
        raise RuntimeError("; ".join(problems))
    return results


@benchmark("edge-1m")
def million(small: bool) -> dict[str, Any]:
    return run(small, [])


# `python -m bench edge-1m --devices=N …`: the options after the name (bench/__main__.py).
run_with_options = run
