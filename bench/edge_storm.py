"""The reconnect storm (issue 11, item 4): ``python -m bench edge-storm [--small]
[--devices=N]``.

N devices (default 100,000; ``--small`` 2,000) are written to Redis as webapp publishes them
and connect with their secrets to an edge of ``EDGE_WORKERS`` = one worker per 15,000 devices
(each process stays under the 20,000-file limit), each with a persistent session (MQTT 3.1.1
clean session 0) and one subscription (``/v1/devices/{id}/#``). Then every worker is killed
with SIGKILL at once. The supervisor restarts them; every device reconnects with exponential
backoff and full jitter (``bench.edge_loadgen.backoff_delay``: uniform in
[0, min(30 s, 0.5 s x 2^(attempt-1))], retrying until it is back). Measured and checked:

- the time from the kill until every device has its CONNACK again (and percentiles);
- every reconnect's CONNACK says session present = 1 (the persistent session, kept in Redis by
  edge/bus/sessions.py, survived the kill);
- presence: from the uplink stream (the ``status`` events webapp applies, last writer wins on
  the event time, webapp.devices.actions.record_connect_status) every device ends online, the
  killed connections were reported offline (``node_lost``: a restarted worker reports what its
  killed predecessor held, edge.thinglinks.presence), and every route points at a live node.

The load generator is this module run as ``python -m bench.edge_storm gen …`` (one process
per 15,000 devices, its own loopback source addresses).

It also measures the supervisor's ``/metrics`` with many workers: ``python -m bench.edge_storm
scrape 56`` serves 56 fake worker endpoints (a worker's exposition text) and times scrapes.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import heapq
import json
import os
import select
import signal
import socket
import sys
import time
import urllib.request
from typing import Any

from bench import benchmark

from .edge_connections import DEVICE_SECRET, SECRET_KEY, register_devices
from .edge_loadgen import (
    CONNECTING,
    WAITING,
    Holder,
    _ms,
    _str,
    addresses_needed,
    backoff_delay,
    cpu_seconds,
    emit,
    percentile,
    rss_kb,
    source_addresses,
    vbi,
)
from .edge_support import LoadGen, children, edge, save

PER_PROCESS = 15_000
SUBACK_WAIT = 3
# A device's topic filter: its own namespace (edge.thinglinks.acl).
TOPIC = "/v1/devices/{device}/#"


def persistent_connect(client_id: str, username: str, password: str, keepalive: int) -> bytes:
    """CONNECT 3.1.1 with clean session 0 (a persistent session), user name and password."""
    payload = _str(client_id.encode()) + _str(username.encode()) + _str(password.encode())
    body = _str(b"MQTT") + bytes((4, 0xC0)) + keepalive.to_bytes(2, "big") + payload
    return b"\x10" + vbi(len(body)) + body


def subscribe(device: str) -> bytes:
    body = (1).to_bytes(2, "big") + _str(TOPIC.format(device=device).encode()) + b"\x01"
    return b"\x82" + vbi(len(body)) + body


class StormHolder(Holder):
    """Holds persistent-session devices; after ``storm`` reconnects each one that the broker
    closed, with backoff and jitter, and records its session present flag."""

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.subscribed: set[int] = set()
        self.index_of: dict[int, int] = {}
        self.storm_at = 0.0
        self.storming = False
        self.lost_at: dict[int, float] = {}
        self.lost = 0
        self.back: list[float] = []
        self.last_back_wall = 0.0
        self.present = {0: 0, 1: 0}
        self.stdin = -1
        self.counted: set[int] = set()
        self.stopped = False

    def device(self, index: int) -> str:
        return f"{self.args.user}{index}"

    def packet(self, index: int) -> bytes:
        device = self.device(index)
        return persistent_connect(device, device, self.args.password, self.args.keepalive)

    def on_event(self, fd: int, events: int) -> None:
        entry = self.inflight.get(fd)
        if entry is None or entry[3] == CONNECTING:
            super().on_event(fd, events)
            return
        sock, index, attempt, phase, began, buffer = entry
        try:
            data = sock.recv(64)
        except BlockingIOError:
            return
        except OSError as exc:
            self.fail(fd, index, attempt, errno.errorcode.get(exc.errno or 0, str(exc)))
            return
        if not data:
            self.fail(fd, index, attempt, "closed before CONNACK" if phase == WAITING else "closed")
            return
        buffer += data
        if phase == WAITING:
            if len(buffer) < 4:
                entry[5] = buffer
                return
            if buffer[0] != 0x20 or buffer[3] != 0:
                self.fail(fd, index, attempt, f"CONNACK {buffer[:4].hex()}")
                return
            if self.storming:
                self.present[buffer[2] & 1] += 1
            buffer = buffer[4:]
            if index not in self.subscribed:
                sock.send(subscribe(self.device(index)))
                entry[3], entry[5] = SUBACK_WAIT, buffer
                if len(buffer) < 5:
                    return
        if entry[3] == SUBACK_WAIT:
            if len(buffer) < 5:
                entry[5] = buffer
                return
            if buffer[0] != 0x90 or buffer[4] > 2:
                self.fail(fd, index, attempt, f"SUBACK {buffer[:5].hex()}")
                return
            self.subscribed.add(index)
        self.hold(fd, index, began)

    def hold(self, fd: int, index: int, began: float) -> None:
        sock = self.inflight.pop(fd)[0]
        self.held[fd] = sock
        self.index_of[fd] = index
        now = time.monotonic()
        self.latencies.append(now - began)
        if index in self.lost_at:
            del self.lost_at[index]
            self.back.append(now - self.storm_at)
            self.last_back_wall = time.time()

    def on_held(self, fd: int, sock: socket.socket) -> None:
        try:
            data = sock.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            return  # PINGRESP, a message on the subscription
        self.closed_by_peer += 1
        del self.held[fd]
        index = self.index_of.pop(fd)
        with contextlib.suppress(OSError):
            self.epoll.unregister(fd)
        sock.close()
        now = time.monotonic()
        if self.storming:
            if index not in self.counted:  # each device counts once, however often it drops
                self.counted.add(index)
                self.lost += 1
            self.lost_at[index] = now
        delay = backoff_delay(1, self.args.backoff_base, self.args.backoff_cap, self.rng)
        heapq.heappush(self.retries, (now + delay, index, 1))

    def recover(self, timeout: float) -> dict[str, Any]:
        """After the kill: until every device of this generator was lost and is back."""
        cpu0 = cpu_seconds()
        deadline = time.monotonic() + timeout
        began = self.storm_at
        poll = self.epoll.poll
        last_expire = last_report = time.monotonic()
        expected = self.args.count
        while time.monotonic() < deadline and (
            self.lost < expected or self.lost_at or self.inflight or self.retries
        ):
            now = time.monotonic()
            while self.retries and self.retries[0][0] <= now and self.may_start(now, began):
                _, index, attempt = heapq.heappop(self.retries)
                self.open(index, attempt)
            wait = 0.2
            if self.retries:
                wait = min(wait, max(0.0, self.retries[0][0] - now))
            for fd, events in poll(wait, 4096):
                if fd == self.stdin:
                    self.stopped = True  # the bench gave up (stop, or end of input)
                    break
                self.on_event(fd, events)
            if self.stopped:
                break
            now = time.monotonic()
            if now - last_expire > 0.5:
                self.expire(now)
                last_expire = now
            if now - last_report > 10:
                last_report = now
                print(
                    f"storm {self.sources[0]}…: {self.lost} lost, {len(self.lost_at)} not back,"
                    f" {len(self.inflight)} in flight, {len(self.retries)} waiting to retry",
                    file=sys.stderr,
                    flush=True,
                )
        return {
            "lost": self.lost,
            "back": self.lost - len(self.lost_at),
            "held": len(self.held),
            "not_back": len(self.lost_at),
            "session_present": self.present[1],
            "session_absent": self.present[0],
            "all_back_s": round(max(self.back), 2) if self.back else None,
            "p50_back_s": _round(percentile(self.back, 0.5)),
            "p99_back_s": _round(percentile(self.back, 0.99)),
            "last_back_wall": self.last_back_wall,
            "attempts": self.attempts,
            "failures": self.failures,
            "gave_up": self.gave_up,
            "cpu": round(cpu_seconds() - cpu0, 3),
            "rss_kb": rss_kb(),
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def run_gen(args: argparse.Namespace) -> None:
    """Connect and subscribe, report; then ``storm`` (reconnect what the broker closes,
    report when all are back) and ``stop`` on stdin."""
    holder = StormHolder(args)
    try:
        report = holder.connect_all()
        report["subscribed"] = len(holder.subscribed)
        emit(**report)
        stdin = sys.stdin.fileno()
        holder.epoll.register(stdin, select.EPOLLIN)
        lines = b""
        while True:
            command = None
            for fd, events in holder.epoll.poll(1.0, 4096):
                if fd == stdin:
                    chunk = os.read(stdin, 4096)
                    lines += chunk or b"stop\n"
                    if b"\n" in lines:
                        line, _, lines = lines.partition(b"\n")
                        command = line.decode().strip()
                else:
                    holder.on_event(fd, events)
            if command == "storm":
                holder.stdin = stdin  # any input during the storm stops it
                holder.storming = True
                holder.storm_at = time.monotonic()
                # A device not held now (closed by the broker before, reconnecting) counts
                # as lost at the kill: it is back when it has its CONNACK again.
                held = set(holder.index_of.values())
                for index in range(args.start, args.start + args.count):
                    if index not in held:
                        holder.counted.add(index)
                        holder.lost += 1
                        holder.lost_at[index] = holder.storm_at
                emit(storming=True)
                emit(**holder.recover(args.recover_timeout))
                if holder.stopped:
                    break
            elif command is not None:
                emit(held=len(holder.held))
                break
    finally:
        holder.close()


class StormGen(LoadGen):
    module = "bench.edge_storm"

    def send(self, line: str) -> None:
        stdin = self.process.stdin
        assert stdin is not None
        stdin.write(line + "\n")
        stdin.flush()


def uplink_presence(broker: Any, devices: set[str]) -> dict[str, Any]:
    """Replays the uplink stream's status events as webapp applies them (last writer wins on
    the event time): how many of ``devices`` end online, and how many offline events
    (``node_lost``) the restarted workers sent."""
    r = broker.extra["redis"]
    key = f"{broker.extra['prefix']}uplink"
    state: dict[str, tuple[int, str]] = {}
    history: dict[str, list[tuple[int, str, str, str | None]]] = {}
    node_lost = 0
    start = "-"
    while True:
        entries = r.xrange(key, start, "+", count=2000)
        for _entry, fields in entries:
            for event in json.loads(fields[b"b"]):
                if event.get("t") != "status" or event["dev"] not in devices:
                    continue
                if event["s"] == "offline" and event.get("reason") == "node_lost":
                    node_lost += 1
                history.setdefault(event["dev"], []).append(
                    (event["ts"], event["s"], event["node"], event.get("reason"))
                )
                last = state.get(event["dev"])
                if last is None or last[0] < event["ts"]:
                    state[event["dev"]] = (event["ts"], event["s"])
        if len(entries) < 2000:
            break
        start = "(" + entries[-1][0].decode()
    online = sum(1 for _, s in state.values() if s == "online")
    wrong = [dev for dev, (_, s) in state.items() if s != "online"][:3]
    return {
        "online": online,
        "offline": len(state) - online,
        "node_lost_events": node_lost,
        "offline_examples": {dev: history[dev] for dev in wrong},
    }


def routes_alive(broker: Any, devices: set[str]) -> dict[str, Any]:
    r = broker.extra["redis"]
    prefix = broker.extra["prefix"]
    now = time.time() * 1000
    alive = {
        node.decode()
        for node, raw in r.hgetall(f"{prefix}nodes").items()
        if now - json.loads(raw).get("ts", 0) < 30_000
    }
    routes = {d.decode(): n.decode() for d, n in r.hgetall(f"{prefix}route").items()}
    ours = {d: n for d, n in routes.items() if d in devices}
    conns = 0
    for raw in r.hgetall(f"{prefix}nodes").values():
        conns += int(json.loads(raw).get("conns", 0))
    return {
        "routed": len(ours),
        "routed_to_live_nodes": sum(1 for n in ours.values() if n in alive),
        "connections_in_heartbeats": conns,
    }


def storm(count: int) -> dict[str, Any]:
    workers = max(2, -(-count // PER_PROCESS))
    processes = max(1, -(-count // PER_PROCESS))
    results: dict[str, Any] = {
        "devices": count,
        "workers": workers,
        "load_generator_processes": processes,
        "load_average_before": list(os.getloadavg()),
    }
    env = {"DJANGO_SECRET_KEY": SECRET_KEY}
    devices = {f"bench-dev-{i}" for i in range(count)}
    with edge(env, workers=workers) as broker:
        results["register_devices_s"] = round(register_devices(broker, count), 2)
        share = -(-count // processes)
        per_process = addresses_needed(share)
        generators: list[StormGen] = []
        try:
            for k in range(processes):
                n = min(share, count - share * k)
                sources = source_addresses(k * per_process, per_process)
                generators.append(
                    StormGen(
                        "gen", "--port", str(broker.port), "--count", str(n),
                        "--start", str(k * share), "--source", ",".join(sources),
                        "--password", DEVICE_SECRET, "--inflight", "500",
                        "--attempts", "100000", "--recover-timeout", str(max(600, count / 50)),
                    )
                )  # fmt: skip
            first = [g.read(max(900.0, count / 20)) for g in generators]
            results["connected"] = {
                "held": sum(r["held"] for r in first),
                "subscribed": sum(r["subscribed"] for r in first),
                "seconds": round(max(r["end"] for r in first) - min(r["start"] for r in first), 1),
                "failed_attempts": sum(sum(r["failures"].values()) for r in first),
            }
            if results["connected"]["held"] < count:
                raise RuntimeError(f"only {results['connected']['held']} of {count} connected")
            time.sleep(6)  # sessions persisted, routes written, a heartbeat
            results["before"] = routes_alive(broker, devices)
            pids = children(broker.pid)
            for generator in generators:
                generator.send("storm")
            for generator in generators:
                generator.read(60)
            killed_at = time.time()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            results["workers_killed"] = len(pids)
            reports = [g.read(max(900.0, count / 20)) for g in generators]
            back = [r["last_back_wall"] for r in reports if r["last_back_wall"]]
            results["storm"] = {
                "lost": sum(r["lost"] for r in reports),
                "back": sum(r["back"] for r in reports),
                "not_back": sum(r["not_back"] for r in reports),
                "all_back_after_kill_s": round(max(back) - killed_at, 2) if back else None,
                "p50_back_s": max(r["p50_back_s"] or 0 for r in reports),
                "p99_back_s": max(r["p99_back_s"] or 0 for r in reports),
                "session_present": sum(r["session_present"] for r in reports),
                "session_absent": sum(r["session_absent"] for r in reports),
                "reconnect_attempts": sum(r["attempts"] for r in reports) - count,
                "failed_attempts": _merge([r["failures"] for r in reports]),
                "loadgen_cpu_s": round(sum(r["cpu"] for r in reports), 1),
            }
            deadline = time.monotonic() + 30
            while True:  # the restarted workers' first heartbeats and uplink writes
                time.sleep(2)
                after = routes_alive(broker, devices)
                presence = uplink_presence(broker, devices)
                settled = (
                    after["routed_to_live_nodes"] == count
                    and after["connections_in_heartbeats"] >= count
                    and presence["online"] == count
                )
                if settled or time.monotonic() > deadline:
                    break
            results["after"] = {**after, **presence}
            results["supervisor_metrics"] = scrape_supervisor(broker.metrics_port or 0)
        finally:
            for generator in generators:
                with contextlib.suppress(Exception):
                    generator.close()
    results["load_average_after"] = list(os.getloadavg())
    s = results["storm"]
    problems = []
    if s["back"] != count or s["lost"] != count:
        problems.append(f"{s['back']} of {count} devices back ({s['lost']} lost)")
    if s["session_present"] < count or s["session_absent"]:
        problems.append(f"session present {s['session_present']}, absent {s['session_absent']}")
    a = results["after"]
    if a["online"] != count or a["routed_to_live_nodes"] != count:
        problems.append(f"presence after the storm: {a}")
    results["problems"] = problems
    return results


def _merge(maps: list[dict[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for each in maps:
        for key, value in each.items():
            out[key] = out.get(key, 0) + value
    return out


def scrape_supervisor(port: int, times: int = 5) -> dict[str, Any]:
    """How long the supervisor's /metrics takes (first: a fresh fetch from every worker)."""
    took = []
    for _ in range(times):
        started = time.monotonic()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
            size = len(response.read())
        took.append(time.monotonic() - started)
        time.sleep(1.1)  # past the supervisor's cache: each one a fresh fetch
    return {"scrape_ms_median": _ms(sorted(took)[len(took) // 2]), "bytes": size}


def run(small: bool, devices: int | None = None) -> dict[str, Any]:
    count = devices or (2_000 if small else 100_000)
    results = storm(count)
    name = "edge-storm-small" if small else "edge-storm"
    saved = save(name, results)
    if results["problems"]:
        raise RuntimeError("; ".join(results["problems"]))
    return saved


@benchmark("edge-storm")
def edge_storm(small: bool) -> dict[str, Any]:
    return run(small)


def run_with_options(small: bool, extra: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench edge-storm")
    parser.add_argument("--devices", type=int, default=None)
    return run(small, parser.parse_args(extra).devices)


# -- the supervisor's /metrics with many workers ----------------------------------------------


def run_scrape(args: argparse.Namespace) -> None:
    """A Supervisor (edge.workers) whose ``count`` workers are fake endpoints serving a
    worker's exposition text, in one reactor; prints the time of fresh and cached scrapes."""
    from twisted.internet import reactor as installed
    from twisted.internet.defer import Deferred
    from twisted.web.resource import Resource
    from twisted.web.server import Site

    from edge.metrics import render_metrics
    from edge.workers import Supervisor, Worker

    reactor: Any = installed
    text = render_metrics(worker_samples()).encode()

    class Fake(Resource):
        isLeaf = True

        def render_GET(self, request: Any) -> bytes:
            return text

    supervisor = Supervisor(reactor, {}, args.workers, "127.0.0.1", 0, "scrape")
    if args.fresh_connections:  # as before issue 11: a new connection per worker and scrape
        from twisted.web.client import Agent, HTTPConnectionPool

        supervisor.agent = Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False))
    for index in range(args.workers):
        port = reactor.listenTCP(0, Site(Fake()), interface="127.0.0.1")
        worker = Worker(supervisor, index)
        worker.ready, worker.metrics_port = True, port.getHost().port
        supervisor.workers[index] = worker
    results: dict[str, Any] = {"workers": args.workers, "worker_text_bytes": len(text)}

    async def measure() -> None:
        fresh, cached = [], []
        for _ in range(args.rounds):
            supervisor._collected = None
            started = time.perf_counter()
            body = await Deferred.fromCoroutine(_collect(supervisor))
            fresh.append(time.perf_counter() - started)
            started = time.perf_counter()
            await Deferred.fromCoroutine(_collect(supervisor))
            cached.append(time.perf_counter() - started)
        results["fresh_scrape_ms_median"] = _ms(sorted(fresh)[len(fresh) // 2])
        results["cached_scrape_ms_median"] = _ms(sorted(cached)[len(cached) // 2])
        results["supervisor_text_bytes"] = len(body)
        results["edge_connections_summed"] = next(
            line for line in body.splitlines() if line.startswith("edge_connections ")
        )

    def done(_: object) -> None:
        emit(**results)
        reactor.stop()

    def failed(failure: Any) -> None:
        print(failure.getTraceback(), file=sys.stderr)
        reactor.stop()

    reactor.callWhenRunning(lambda: Deferred.fromCoroutine(measure()).addCallbacks(done, failed))
    reactor.run()


async def _collect(supervisor: Any) -> str:
    text: str = await supervisor.collect()
    return text


def worker_samples() -> list[tuple[Any, ...]]:
    """A worker's samples as edge.service.EdgeService.samples gives them (names and label
    sets of a worker with TLS, WebSocket and the device transports)."""
    samples: list[tuple[Any, ...]] = [
        (f"edge_metric_{i}", "counter", "a worker counter", 1000 + i) for i in range(40)
    ]
    samples.append(("edge_connections", "gauge", "Open MQTT connections", 17_857))
    for budget in range(30):
        samples.append(
            ("edge_budget_refusals_total", "counter", "r", budget, {"budget": f"b{budget}"})
        )
    for transport in ("tcp", "tls", "ws", "wss", "http", "coap", "rawtcp", "rawudp"):
        samples.append(("edge_transport_connections", "gauge", "t", 5, {"transport": transport}))
        samples.append(
            ("edge_transport_accepted_total", "counter", "t", 9, {"transport": transport})
        )
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.edge_storm")
    sub = parser.add_subparsers(dest="mode", required=True)
    gen = sub.add_parser("gen")
    gen.add_argument("--host", default="127.0.0.1")
    gen.add_argument("--port", type=int, required=True)
    gen.add_argument("--count", type=int, default=1000)
    gen.add_argument("--start", type=int, default=0)
    gen.add_argument("--source", default="127.0.0.1")
    gen.add_argument("--inflight", type=int, default=500)
    gen.add_argument("--rate", type=float, default=0.0)
    gen.add_argument("--timeout", type=float, default=30.0)
    gen.add_argument("--attempts", type=int, default=100_000)
    gen.add_argument("--backoff-base", type=float, default=0.5)
    gen.add_argument("--backoff-cap", type=float, default=30.0)
    gen.add_argument("--seed", type=int, default=None)
    gen.add_argument("--user", default="bench-dev-")
    gen.add_argument("--password", required=True)
    gen.add_argument("--client-prefix", default="bench-dev-")
    gen.add_argument("--keepalive", type=int, default=600)
    gen.add_argument("--recover-timeout", type=float, default=600.0)
    scrape = sub.add_parser("scrape")
    scrape.add_argument("workers", type=int, nargs="?", default=56)
    scrape.add_argument("--rounds", type=int, default=7)
    scrape.add_argument("--fresh-connections", action="store_true")
    args = parser.parse_args()
    if args.mode == "gen":
        run_gen(args)
    else:
        run_scrape(args)


if __name__ == "__main__":
    main()
