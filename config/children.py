"""Child processes that end with the process that started them (Linux).

`die_with_parent()` gives a `preexec_fn` for `subprocess.Popen`: the child asks the kernel
(prctl PR_SET_PDEATHSIG) for a signal when its parent ends, however it ends (SIGKILL, a
crash), so a supervisor killed with -9 leaves no orphan holding `var/`, the ports or the
Redis socket. The kernel sends the signal when the *thread* that forked the child ends: start
such children from the thread that lives as long as the process (the main thread).

Imports nothing from Django.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
from collections.abc import Callable

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
