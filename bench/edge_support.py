"""Processes for the edge benchmarks: the edge and Mosquitto started by the bench itself, the
load generator (``bench.edge_loadgen``) as subprocesses, and RSS readings from /proc."""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from tests.support.processes import stop_process

ROOT = Path(__file__).resolve().parents[1]
MOSQUITTO = "/usr/sbin/mosquitto"


def free_port() -> int:
    """A free port below the ephemeral range (32768 to 60999 here): the load generators open tens
    of thousands of connections, whose local ports could otherwise take a port chosen for a
    broker before it binds it."""
    low, _high = (
        int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    )
    for _ in range(200):
        port = random.randrange(10_000, max(low, 10_001))
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


def wait_port(port: int, process: subprocess.Popen[Any], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited early with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def rss_kb(pid: int) -> int:
    """VmRSS of one process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid …; comm may contain spaces, so split after the last ')'.
        if int(stat.rpartition(")")[2].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def tree_rss_kb(pid: int) -> int:
    """RSS of a process and its children (the edge supervisor and its workers)."""
    return rss_kb(pid) + sum(rss_kb(child) for child in children(pid))


TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its children (the edge workers)."""
    total = 0.0
    for p in [pid, *children(pid)]:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / TICKS
    return total


@dataclass
class Broker:
    """A broker under test: its port, process and (for the edge) metrics port."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    metrics_port: int | None = None
    log_path: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.process.pid

    def rss_kb(self) -> int:
        return tree_rss_kb(self.process.pid)

    def metrics(self) -> dict[str, float]:
        assert self.metrics_port is not None
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out


@contextmanager
def mosquitto() -> Iterator[Broker]:
    """Mosquitto on a free port with its defaults except: anonymous clients allowed, no
    persistence, no log, and no limit on QoS 1/2 messages in flight or queued per client
    (by default it keeps 20 in flight and drops beyond 1000 queued, which would make the QoS 1
    comparison one of drop policies; the edge drops no QoS 1 message here)."""
    if not os.path.exists(MOSQUITTO):
        raise RuntimeError(f"{MOSQUITTO} is missing (apt-get install mosquitto)")
    workdir = Path(tempfile.mkdtemp(prefix="bench-mosquitto-"))
    port = free_port()
    config = workdir / "mosquitto.conf"
    config.write_text(
        f"listener {port} 127.0.0.1\n"
        "allow_anonymous true\n"
        "max_inflight_messages 0\n"
        "max_queued_messages 0\n"
        "persistence false\n"
        "log_dest none\n"
        "user root\n"
    )
    errors = (workdir / "stderr").open("wb")
    process = subprocess.Popen([MOSQUITTO, "-c", str(config)], stdout=errors, stderr=errors)
    try:
        try:
            wait_port(port, process)
        except RuntimeError as exc:
            raise RuntimeError(f"mosquitto: {exc}: {(workdir / 'stderr').read_text()}") from None
        yield Broker("mosquitto", port, process)
    finally:
        stop_process(process)
        errors.close()
        shutil.rmtree(workdir, ignore_errors=True)


def redis_url() -> str:
    """The Redis the edge uses: ``REDIS_URL``, else the machine's (as CI sets it)."""
    return os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"


@contextmanager
def edge(
    env: dict[str, str] | None = None, workers: int = 1, start_timeout: float = 60.0
) -> Iterator[Broker]:
    """``python -m edge`` on free ports with a key prefix of its own (removed after);
    ``start_timeout`` seconds for it to become healthy (half of it to listen), more for
    dozens of workers starting at once on a busy machine."""
    import redis

    prefix = f"bench{uuid.uuid4().hex[:8]}:"
    port, metrics_port = free_port(), free_port()
    full_env = {
        **os.environ,
        "REDIS_URL": redis_url(),
        "REDIS_PREFIX": prefix,
        "EDGE_MQTT_PORT": str(port),
        "EDGE_METRICS_PORT": str(metrics_port),
        "EDGE_WS_PORT": str(free_port()),
        # The device transports are off unless a bench asks for one (their default ports
        # may be taken by another edge on the machine).
        "EDGE_COAP_PORT": "0",
        "EDGE_HTTP_PORT": "0",
        "EDGE_TCP_PORT": "0",
        "EDGE_UDP_PORT": "0",
        "EDGE_HOST": "127.0.0.1",
        "EDGE_NODE_ID": f"bench-{uuid.uuid4().hex[:6]}",
        "EDGE_WORKERS": str(workers),
        # No log line per connection, as in a deployment of this size.
        "EDGE_LOG_LEVEL": "warn",
        **(env or {}),
    }
    fd, name = tempfile.mkstemp(prefix="bench-edge-", suffix=".log")
    log_path = Path(name)
    with os.fdopen(fd, "wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "edge"],
            cwd=ROOT,
            env=full_env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    r = redis.Redis.from_url(full_env["REDIS_URL"])
    broker = Broker("edge", port, process, metrics_port, log_path, {"prefix": prefix, "redis": r})
    try:
        try:
            wait_port(port, process, start_timeout / 2)
        except RuntimeError as exc:
            raise RuntimeError(f"edge: {exc}:\n{log_path.read_text()[-3000:]}") from None
        deadline = time.monotonic() + start_timeout
        while True:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{metrics_port}/healthz", timeout=5
                ) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"the edge did not become healthy:\n{log_path.read_text()}")
            time.sleep(0.1)
        yield broker
    finally:
        stop_process(process, 60)
        batch = []
        for key in r.scan_iter(f"{prefix}*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                r.delete(*batch)
                batch = []
        if batch:
            r.delete(*batch)
        r.close()
        if os.environ.get("BENCH_KEEP_LOGS"):
            print(f"   edge log: {log_path}", flush=True)
        else:
            log_path.unlink(missing_ok=True)


class LoadGen:
    """One ``bench.edge_loadgen`` process (``module``): JSON lines out, ``stop`` in."""

    module = "bench.edge_loadgen"

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", self.module, *args],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.started = time.time()

    def read(self, timeout: float = 120.0) -> dict[str, Any]:
        """The next JSON line (the generator flushes each one)."""
        stdout: IO[str] | None = self.process.stdout
        assert stdout is not None
        import select

        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"load generator silent for {timeout} s")
            ready, _, _ = select.select([stdout], [], [], remaining)
            if ready:
                line = stdout.readline()
                if not line:
                    raise RuntimeError(f"load generator exited ({self.process.wait()})")
                return dict(json.loads(line))

    def stop(self) -> None:
        stdin = self.process.stdin
        if stdin is not None and not stdin.closed:
            try:
                stdin.write("stop\n")
                stdin.flush()
                stdin.close()
            except BrokenPipeError:
                pass

    def close(self) -> None:
        self.stop()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def rate_between(samples: list[list[float]], start: float, end: float) -> float:
    """Messages per second from ``(time, cumulative count)`` samples between two times."""

    def count_at(moment: float) -> float:
        previous = samples[0]
        for sample in samples:
            if sample[0] >= moment:
                span = sample[0] - previous[0]
                if span <= 0:
                    return sample[1]
                return previous[1] + (sample[1] - previous[1]) * (moment - previous[0]) / span
            previous = sample
        return samples[-1][1]

    if end <= start:
        return 0.0
    return (count_at(end) - count_at(start)) / (end - start)


def save(name: str, results: dict[str, Any]) -> dict[str, Any]:
    """Keep the figures in ``bench/results/{name}.json`` (git-ignored) and return them."""
    directory = ROOT / "bench" / "results"
    directory.mkdir(parents=True, exist_ok=True)
    stamped = {"finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **results}
    (directory / f"{name}.json").write_text(json.dumps(stamped, indent=2) + "\n")
    return results
