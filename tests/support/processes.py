"""Stopping a child process the suite or a benchmark started: politely first, so it can
flush and close what it holds, then for good if it does not end in time."""

from __future__ import annotations

import signal
import subprocess
from typing import Any


def stop_process(process: subprocess.Popen[Any], timeout: float = 30.0) -> int | None:
    """SIGTERM `process` unless it already ended, give it `timeout` seconds, then kill it;
    returns its exit status."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode
