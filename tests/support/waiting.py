"""Waiting for something another process or thread does: one polling loop for the suite."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def wait_for(check: Callable[[], T], timeout: float = 10.0, interval: float = 0.05,
             message: str | Callable[[], str] = "") -> T:
    """Call `check` until it returns something truthy and return that; after `timeout`
    seconds fail with its last answer (and `message`, or what calling it returns)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            said = message() if callable(message) else message
            raise AssertionError(f"not reached in {timeout} s (last: {value!r}) {said}".rstrip())
        time.sleep(interval)


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 30.0,
                  log_path: Path | None = None) -> None:
    """Until `process` listens on `port` of 127.0.0.1; fail at once with its output (its
    stdout pipe, or `log_path`) when it exits first."""

    def output() -> str:
        if log_path is not None:
            return log_path.read_text(errors="replace")
        return process.stdout.read().decode(errors="replace") if process.stdout else ""

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode}:\n{output()[-3000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    tail = output()[-3000:] if log_path is not None else ""
    raise TimeoutError(f"nothing listens on port {port} after {timeout} s\n{tail}".rstrip())
