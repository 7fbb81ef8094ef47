"""Garbage-collector settings for the long-running message processes (edge, ingest).

Both allocate many short-lived containers per message (decoded JSON, events, points) while
holding a large, stable heap (modules, Django, the registry, connections). With the default
thresholds the collector runs every 700 allocations and its older generations walk that whole
heap again and again: measured on the ingest worker, decoding one uplink entry took twice as
long with the collector on as with the start-up heap frozen. Freezing what start-up allocated
and collecting the young generation less often keeps cycles collected at a fraction of the cost.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from collections.abc import Callable

YOUNG_THRESHOLD = 50_000


def tune_gc() -> None:
    """Freeze the heap built so far and raise the young generation's threshold."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)


def _libc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    return trim


_TRIM = _libc_trim()


def release_free_memory() -> bool:
    """Give the C allocator's free pages back to the system (glibc ``malloc_trim``); False
    where there is no such call. After a connect burst the freed per-connect buffers (Redis
    commands, replies, Deferreds) sit between the connections' objects and would stay in
    the process's RSS."""
    if _TRIM is None:
        return False
    _TRIM(0)
    return True


class MemoryTrimmer:
    """Calls :func:`release_free_memory` once the number of connections has moved by at
    least ``threshold`` since the last trim and then settled (changed by less than a tenth of
    that since the previous :meth:`check`); ``check`` is called every few seconds."""

    def __init__(self, count: Callable[[], int], threshold: int = 1000) -> None:
        self.count = count
        self.threshold = threshold
        self.trimmed_at = self.previous = count()
        self.trims = 0

    def check(self) -> None:
        now = self.count()
        settled = abs(now - self.previous) < max(self.threshold // 10, 1)
        self.previous = now
        if settled and abs(now - self.trimmed_at) >= self.threshold:
            self.trimmed_at = now
            if release_free_memory():
                self.trims += 1
