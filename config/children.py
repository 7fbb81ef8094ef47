"""Child processes that end with the process that started them.

`die_with_parent()` gives a `preexec_fn` for `subprocess.Popen`: the child asks the kernel
(Linux, prctl PR_SET_PDEATHSIG) for a signal when its parent ends, however it ends (SIGKILL, a
crash), so a supervisor killed with -9 leaves no orphan holding `var/`, the ports or the
Redis socket. The kernel sends the signal when the *thread* that forked the child ends: start
such children from the thread that lives as long as the process (the main thread).

A child may not end on that signal (a Celery worker whose broker went away at the same moment
was seen waiting on a lock for good in its warm shutdown), so `Reaper` adds a watchdog: a small
process (this file run as a script) that the supervisor tells which process groups it started
(each child leads a session of its own) over a pipe. When the pipe closes, the supervisor is
gone: the watchdog sends SIGTERM to each child still running (where PR_SET_PDEATHSIG is not
available, this is the only signal), waits `grace` seconds, then SIGKILLs whatever is left in
their process groups, grandchildren included. A group is forgotten as soon as the supervisor
has reaped its leader, so a process group id is never signalled after it could be reused.

Imports nothing from Django (and, run as the watchdog, nothing outside the standard library).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable

# How long the children have, after the supervisor died, to end on their SIGTERM.
REAPER_GRACE = 5.0

PR_SET_PDEATHSIG = 1


def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None


_PRCTL = _prctl()


def supported() -> bool:
    """True where the kernel can signal a child when its parent ends (Linux)."""
    return _PRCTL is not None


def die_with_parent(signum: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A `preexec_fn` that makes the child receive `signum` when this process ends, or None
    where that cannot be done (not Linux, or not on the main thread: the signal would come
    when the calling thread ends, not the process)."""
    if _PRCTL is None or threading.current_thread() is not threading.main_thread():
        return None
    prctl = _PRCTL
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0)
        # The parent may have ended between fork() and prctl(): nobody would signal us.
        if os.getppid() != parent:
            os._exit(1)

    return preexec


class Reaper:
    """The supervisor's side of the watchdog (see the module's docstring)."""

    def __init__(self, grace: float = REAPER_GRACE) -> None:
        self.grace = grace
        self.groups: set[int] = set()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        # -I: the standard library only, whatever the environment says.
        self.process = subprocess.Popen(
            [sys.executable, "-I", os.path.abspath(__file__), str(self.grace)],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, start_new_session=True)
        for group in self.groups:
            self._send(f"+{group}", again=False)

    def watch(self, group: int) -> None:
        """Watch the process group `group` (a child started with start_new_session)."""
        self.groups.add(group)
        self._send(f"+{group}")

    def forget(self, group: int) -> None:
        """The child leading `group` was reaped: never signal that id again."""
        if group in self.groups:
            self.groups.discard(group)
            self._send(f"-{group}")

    def close(self, timeout: float = 10.0) -> None:
        """Every child stopped: end the watchdog (it finds no group left to signal)."""
        process, self.process = self.process, None
        if process is None:
            return
        with contextlib.suppress(OSError):
            process.stdin.close()  # type: ignore[union-attr]
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _send(self, line: str, again: bool = True) -> None:
        if self.process is None:
            return
        try:
            self.process.stdin.write(line.encode() + b"\n")  # type: ignore[union-attr]
            self.process.stdin.flush()  # type: ignore[union-attr]
        except OSError:
            # The watchdog was killed: a new one, told every group that is watched.
            if again:
                with contextlib.suppress(OSError):
                    self.process.wait(1)
                self.start()


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def watchdog(lines: Iterable[str], grace: float) -> list[int]:
    """The watchdog's work: follow `lines` (+group / -group) until they end, then SIGTERM
    the leaders still there and SIGKILL the groups left after `grace` seconds. Returns the
    groups it had to kill."""
    groups: set[int] = set()
    for line in lines:
        line = line.strip()
        if line[:1] == "+" and line[1:].isdigit():
            groups.add(int(line[1:]))
        elif line[:1] == "-" and line[1:].isdigit():
            groups.discard(int(line[1:]))
    for group in groups:
        with contextlib.suppress(OSError):
            os.kill(group, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_group_alive(g) for g in groups):
        time.sleep(0.1)
    killed = [g for g in sorted(groups) if _group_alive(g)]
    for group in killed:
        with contextlib.suppress(OSError):
            os.killpg(group, signal.SIGKILL)
    return killed


if __name__ == "__main__":
    # The terminal's signals are the supervisor's business; the watchdog waits for its pipe.
    for signum in (signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    left = watchdog(sys.stdin, float(sys.argv[1]) if len(sys.argv) > 1 else REAPER_GRACE)
    if left:
        print(f"runplatform watchdog: process groups {left} did not end on SIGTERM within "
              f"the grace period; killed", file=sys.stderr, flush=True)
