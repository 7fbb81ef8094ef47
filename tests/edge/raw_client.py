"""A raw TCP device speaking JSON lines to a running edge, for the end-to-end tests that
start the edge process (alone, or as part of the whole platform)."""

from __future__ import annotations

import json
import socket
from typing import Any


class Lines:
    """A raw TCP connection exchanging JSON lines; a read that times out fails the test."""

    def __init__(self, port: int, timeout: float = 20.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.reader = self.sock.makefile("rb")

    def send(self, message: dict[str, Any]) -> None:
        self.sock.sendall(json.dumps(message).encode() + b"\n")

    def read(self) -> dict[str, Any]:
        line = self.reader.readline()
        assert line, "the edge closed the connection"
        return json.loads(line)  # type: ignore[no-any-return]

    def close(self) -> None:
        self.reader.close()
        self.sock.close()
