"""Throttling of failed authentications per client address and per device identifier."""

from __future__ import annotations

from typing import Any


class FailureThrottle:
    """At most ``limit`` failures per key in a fixed window of ``window`` seconds; a key over
    the limit is blocked until its window ends."""

    def __init__(
        self, clock: Any, limit: int = 10, window: float = 60.0, max_keys: int = 100_000
    ) -> None:
        self.clock = clock
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self._failures: dict[str, tuple[float, int]] = {}

    def blocked(self, key: str) -> bool:
        entry = self._failures.get(key)
        if entry is None:
            return False
        started, count = entry
        if self.clock.seconds() - started >= self.window:
            del self._failures[key]
            return False
        return count >= self.limit

    def failed(self, key: str) -> None:
        now = self.clock.seconds()
        entry = self._failures.get(key)
        if entry is None or now - entry[0] >= self.window:
            if len(self._failures) >= self.max_keys:
                self._expire(now)
            self._failures[key] = (now, 1)
        else:
            self._failures[key] = (entry[0], entry[1] + 1)

    def _expire(self, now: float) -> None:
        stale = [
            key for key, (started, _) in self._failures.items() if now - started >= self.window
        ]
        for key in stale:
            del self._failures[key]
        if len(self._failures) >= self.max_keys:
            # Under a flood of distinct keys, forget them all rather than grow without bound.
            self._failures.clear()
