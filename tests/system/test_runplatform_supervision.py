"""`manage.py runplatform` (make run) keeps the embedded platform alive and leaves no orphans.

Each test runs the real supervisor in a directory of its own (THINGLINKS_VAR_DIR: SQLite
database, embedded redis-server and its AOF, beat's pid file), without REDIS_URL so that it
starts the embedded Redis, on free ports:

- a kill -9 of the embedded redis-server during a QoS 1 load from a real device (paho): the
  supervisor starts it again from its AOF on the same socket, every acknowledged point is in
  the database afterwards, the device publishes on, and the web, ingest, Celery worker and
  beat recover by themselves (docs/processes.md, "Supervision");
- then a kill -9 of the supervisor: every process it started, grandchildren included (edge
  workers, Celery's pool), ends by itself within seconds (PR_SET_PDEATHSIG, and the watchdog
  for a child that does not end on SIGTERM: tested on its own with such a child);
- SIGHUP (the terminal went away): an orderly stop.

The processes are found by their environment (each inherits THINGLINKS_VAR_DIR=<the test's
directory>) or, for redis-server, their title (its socket's path), so a leftover one is found
whoever its parent is now.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from config.children import Reaper, die_with_parent
from tests.support.platform import ROOT, free_port
from tests.support.point_publisher import PointPublisher
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

DEMO_DEVICE = "demo-001"
DEMO_SECRET = "supervision-test-demo-secret"
# The environment of the test run that must not reach the platform: it runs on its own
# embedded Redis and SQLite database, as `make run` on a fresh checkout does.
DROPPED = ("REDIS_URL", "DATABASE_URL", "PYTEST_VERSION", "PYTEST_CURRENT_TEST", "TSDB_URL",
           "CELERY_TASK_ALWAYS_EAGER", "EDGE_WORKERS", "REDIS_PREFIX", "EMBEDDED_REDIS_FSYNC")
RATE = 400  # QoS 1 points per second: 2 s before the kill, 5 s after (about 3,000)
STARTED = re.compile(r"^\S+ (\w+)\s*\| started \(pid (\d+)")


def platform_processes(var_dir: Path, exclude: int | None = None) -> dict[int, str]:
    """Live processes (not zombies) whose environment or command line names `var_dir`:
    pid → command line."""
    marker = f"THINGLINKS_VAR_DIR={var_dir}".encode()
    found: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == exclude:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                environ = f.read().split(b"\0")
            with open(f"/proc/{entry}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        # redis-server writes its title over its environment: found by its socket's path.
        if (marker in environ or str(var_dir) in cmdline) and state != b"Z":
            found[int(entry)] = cmdline
    return found


@dataclass
class Supervisor:
    var_dir: Path
    process: subprocess.Popen[bytes]
    log_path: Path
    web_port: int
    mqtt_port: int

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def started(self) -> list[tuple[str, int]]:
        """(child, pid) for each start the supervisor logged, in order."""
        return [(m[1], int(m[2])) for m in map(STARTED.match, self.log().splitlines()) if m]

    def pid_of(self, name: str) -> int:
        return [pid for child, pid in self.started() if child == name][-1]

    def children(self) -> dict[int, str]:
        return platform_processes(self.var_dir, exclude=self.process.pid)

    def wait_log(self, text: str, timeout: float = 40.0) -> None:
        wait_for(lambda: self.process.poll() is None and text in self.log(), timeout,
                 interval=0.1, message=lambda: f"waiting for {text!r}:\n{self.log()[-5000:]}")
        assert text in self.log(), self.log()[-5000:]

    def db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.var_dir / "thinglinks.sqlite3", timeout=30)


@contextmanager
def supervisor(tmp_path: Path, only: str = "", **extra: str) -> Iterator[Supervisor]:
    var_dir = tmp_path / "var"
    web_port, mqtt_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k not in DROPPED}
    env.update({
        "THINGLINKS_VAR_DIR": str(var_dir), "THINGLINKS_DEMO_SECRET": DEMO_SECRET,
        # The suite's key (tests/conftest.py); were it missing, a key file of the test's own
        # rather than var/secret_key of the checkout.
        "DJANGO_SECRET_KEY_FILE": str(tmp_path / "secret_key"),
        "WEB_PORT": str(web_port), "EDGE_MQTT_PORT": str(mqtt_port),
        "EDGE_METRICS_PORT": str(free_port()), "EDGE_HOST": "127.0.0.1",
        "EDGE_WS_PORT": "0", "EDGE_HTTP_PORT": "0", "EDGE_COAP_PORT": "0",
        "EDGE_TCP_PORT": "0", "EDGE_UDP_PORT": "0", "CELERY_CONCURRENCY": "2",
        "PYTHONUNBUFFERED": "1", **extra})
    log_path = tmp_path / "runplatform.log"
    argv = [sys.executable, "manage.py", "runplatform", "--web-host", "127.0.0.1"]
    if only:
        argv += ["--only", only]
    with open(log_path, "wb") as log:
        # Its own session (a signal for the test run does not reach it), and it ends if the
        # test run is killed: nothing of it outlives the test.
        process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True, preexec_fn=die_with_parent())
    sup = Supervisor(var_dir, process, log_path, web_port, mqtt_port)
    try:
        sup.wait_log("ThingLinks is up")
        yield sup
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(40)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for pid in platform_processes(var_dir):  # whatever a failed test left
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        print(f"----- runplatform -----\n{log_path.read_text(errors='replace')[-6000:]}")


def demo_device(port: int, rate: float, base: int) -> PointPublisher:
    """The demo device publishing numbered points (QoS 1); point `seq`'s `eventTime` is
    `base + seq` (the time series keeps one row per device and millisecond)."""
    return PointPublisher(port, DEMO_DEVICE, DEMO_SECRET, rate, point=lambda seq: (
        "env", {"temperature": seq % 100, "humidity": (seq // 100) % 100}, base + seq)).start()


def stored_seqs(sup: Supervisor, base: int) -> set[int]:
    with sup.db() as db:
        tables = [r[0] for r in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'tl_ts_%env'")]
        if not tables:
            return set()
        rows = db.execute(f'SELECT ts FROM "{tables[0]}" WHERE device = ?',  # noqa: S608
                          [DEMO_DEVICE]).fetchall()
    return {ts - base for (ts,) in rows}


def task_runs_since(sup: Supervisor, since: float) -> list[tuple[str, str]]:
    """(task, worker) of the runs beat sent and the worker ran after `since` (epoch s)."""
    with sup.db() as db:
        rows = db.execute("SELECT task_name, worker, started FROM system_taskrun").fetchall()
    return [(task, worker) for task, worker, started in rows
            if datetime.fromisoformat(str(started)).replace(tzinfo=UTC).timestamp() > since]


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def healthz(sup: Supervisor) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{sup.web_port}/healthz",
                                    timeout=5) as response:
            return json.loads(response.read())
    except OSError:
        return {}


def test_redis_killed_under_qos1_load_then_the_supervisor_killed(tmp_path):
    """1. kill -9 of the embedded redis-server during a QoS 1 load (about 3,000 points): it is
    started again from its AOF, every PUBACKed point is stored, the device publishes on, and
    nothing else had to be restarted. 2. kill -9 of the supervisor: Redis (the restarted
    one), the edge's supervisor and its 2 workers, ingest, web, the Celery worker and its
    pool of 2, beat — 10 processes — all end by themselves within seconds."""
    # The device's publish budget (100 messages/s by default) raised for a heavier load.
    with supervisor(tmp_path, EDGE_WORKERS="2", EDGE_PUBLISH_RATE="2000",
                    EDGE_PUBLISH_BURST="4000") as sup:
        redis_pid = sup.pid_of("redis")
        sup.wait_log("reading tl:uplink")  # ingest reads the stream
        wait_for(lambda: healthz(sup).get("status") == "ok", 30, interval=0.2)
        wait_for(lambda: listening(sup.mqtt_port), 30, interval=0.2)  # both edge workers
        base = int(time.time() * 1000) - 600_000
        device = demo_device(sup.mqtt_port, RATE, base)
        try:
            time.sleep(2.0)
            os.kill(redis_pid, signal.SIGKILL)
            killed_at, killed_wall = time.monotonic(), time.time()
            wait_for(lambda: sup.pid_of("redis") != redis_pid, 10, interval=0.05)
            restarted_after = time.monotonic() - killed_at
            time.sleep(5.0)
        finally:
            device.stop()
        # The last acknowledgements come back.
        wait_for(lambda: len(device.acked) >= len(device.sent), 20, interval=0.1,
                 message=lambda: f"{len(device.sent) - len(device.acked)} not acknowledged")
        acked = device.acked_seqs()
        after_kill = sorted(at for _mid, at in device.acked if at > killed_at)
        started = time.monotonic()
        wait_for(lambda: not acked - stored_seqs(sup, base), 30, interval=0.25,
                 message=lambda: f"{len(acked - stored_seqs(sup, base))} acknowledged "
                                 f"points not stored")
        stored_after = time.monotonic() - started
        disconnects = device.disconnects  # before our own DISCONNECT
        device.close()
        # Publishing resumed: points sent well after the restart were acknowledged.
        assert device.acked_seqs(after=killed_at + restarted_after + 1)
        # The others recovered by themselves: web answers with Redis ok; beat sent tasks
        # that the worker ran after the restart (both reconnected to the broker): two runs
        # of the 5-second devices.expire_commands, so not only one queued before the kill.
        assert healthz(sup) == {"status": "ok", "database": "ok", "redis": "ok"}

        def expiry_runs() -> list[tuple[str, str]]:
            return [run for run in task_runs_since(sup, killed_wall + restarted_after)
                    if run[0] == "devices.expire_commands"]

        runs = wait_for(lambda: len(expiry_runs()) >= 2 and expiry_runs(), 30, interval=0.5)
        log = sup.log()
        assert "redis  | exited with -9 (SIGKILL); restarting in 0 s" in log
        assert "redis  | started (pid" in log and "restart 1;" in log
        # Only Redis was restarted: every other child reconnected instead of dying.
        assert [n for n, _ in sup.started()].count("redis") == 2
        for name in ("edge", "ingest", "web", "worker", "beat"):
            assert [n for n, _ in sup.started()].count(name) == 1, name
        gap = max(b - a for a, b in zip([killed_at, *after_kill], after_kill, strict=False))
        print(f"figures: sent {len(device.sent)}, acknowledged {len(acked)}, lost 0; redis "
              f"restarted after {restarted_after:.2f} s; longest PUBACK gap {gap:.2f} s; "
              f"device disconnects {disconnects}; all stored {stored_after:.2f} s after "
              f"the load; task runs after the restart: {len(runs)} {runs[:1]}")

        # 2. The supervisor dies without a chance to stop anything.
        before = sup.children()
        assert len(before) >= 10, before
        assert {pid for _, pid in sup.started()[-6:]} <= set(before)
        sup.process.kill()
        sup.process.wait()
        killed_at = time.monotonic()
        wait_for(lambda: not sup.children(), 10, interval=0.1,
                 message=lambda: f"left: {sup.children()}")
        print(f"figures: {len(before)} processes (the watchdog included), all ended "
              f"{time.monotonic() - killed_at:.2f} s after the supervisor's kill -9")


def environ(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/environ", "rb") as f:
        pairs = [item.decode(errors="replace").partition("=") for item in f.read().split(b"\0")]
    return {key: value for key, _, value in pairs if key}


def test_a_restarted_child_is_told_then_sighup_stops_in_order(tmp_path):
    """A child killed -9 is started again, with THINGLINKS_RESTARTS=1 and its role in its
    environment. The terminal goes away (SIGHUP): the supervisor stops its children in order
    and exits 0."""
    with supervisor(tmp_path, only="edge,ingest,beat") as sup:
        sup.wait_log("reading tl:uplink")
        ingest = sup.pid_of("ingest")
        assert environ(ingest)["THINGLINKS_ROLE"] == "ingest"
        assert environ(ingest)["THINGLINKS_RESTARTS"] == "0"
        os.kill(ingest, signal.SIGKILL)
        wait_for(lambda: sup.pid_of("ingest") != ingest, 15, interval=0.1)
        again = sup.pid_of("ingest")
        assert environ(again)["THINGLINKS_ROLE"] == "ingest"
        assert environ(again)["THINGLINKS_RESTARTS"] == "1"
        assert "ingest | exited with -9 (SIGKILL); restarting in 1 s" in sup.log()
        wait_for(lambda: sup.log().count("reading tl:uplink") == 2, 30, interval=0.1)
        sup.process.send_signal(signal.SIGHUP)
        assert sup.process.wait(40) == 0
        log = sup.log()
        order = [line.split("|")[0].split()[-1] for line in log.splitlines()
                 if re.match(r"^\S+ \w+\s*\| stopped \(", line)]
        assert order == ["edge", "ingest", "beat", "redis"], log[-3000:]
        assert not sup.children()


def test_watchdog_kills_the_groups_that_ignore_sigterm(tmp_path):
    """The supervisor's pipe closes (it died): a child that ignores SIGTERM is killed with its
    process group after the grace period; a group the supervisor forgot is left alone."""
    stubborn = ("import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, "
                "signal.SIG_IGN); subprocess.Popen([sys.executable, '-c', "
                "'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                "time.sleep(60)']); time.sleep(60)")
    reaper = Reaper(grace=1.0)
    reaper.start()
    child = subprocess.Popen([sys.executable, "-c", stubborn], start_new_session=True)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                             start_new_session=True)
    try:
        reaper.watch(child.pid)
        reaper.watch(other.pid)
        reaper.forget(other.pid)
        # The grandchild is running (it shares the child's process group).
        grandchild = wait_for(lambda: [p for p in map(int, filter(str.isdigit, os.listdir(
            "/proc"))) if p != child.pid and _pgid(p) == child.pid], 10)
        started = time.monotonic()
        reaper.close()  # what the supervisor's death does to the pipe
        assert child.wait(5) == -signal.SIGKILL
        took = time.monotonic() - started
        assert 0.9 < took < 4, took
        wait_for(lambda: all(_pgid(p) is None for p in grandchild), 5)
        assert other.poll() is None
    finally:
        for process in (child, other):
            process.kill()
            process.wait()


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None
