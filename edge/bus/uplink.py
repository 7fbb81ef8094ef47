"""The uplink stream: events of one reactor turn batched into one ``XADD`` (docs/bus.md)."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, DeferredList
from twisted.logger import Logger
from twisted.python.failure import Failure

from edge import fastjson

from .client import Commands
from .keys import UPLINK_MAXLEN, Keys

log = Logger(namespace="edge.uplink")


class Uplink:
    """Collects events and writes them as one stream entry per reactor turn.

    :meth:`emit_confirmed` returns a Deferred that fires once the entry carrying the events is
    stored in Redis, so that a QoS 1/2 acknowledgement can wait for it. A failed ``XADD`` is
    retried a few times (the ingest worker tolerates duplicates) before its waiters fail.
    """

    retries = 3
    retry_delay = 0.5

    def __init__(
        self, redis: Commands, keys: Keys, clock: Any, maxlen: int = UPLINK_MAXLEN
    ) -> None:
        self.redis = redis
        self.key = keys.uplink
        self.clock = clock
        self.maxlen = maxlen
        self._events: list[dict[str, Any]] = []
        self._waiters: list[Deferred[None]] = []
        self._call: Any = None
        self._writing: set[Deferred[None]] = set()
        self.entries_written = 0
        self.events_written = 0
        self.failures = 0

    @property
    def pending(self) -> int:
        return len(self._events)

    def emit(self, *events: dict[str, Any]) -> None:
        self._events.extend(events)
        self._schedule()

    def emit_confirmed(self, events: list[dict[str, Any]]) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self._events.extend(events)
        self._waiters.append(d)
        self._schedule()
        return d

    def _schedule(self) -> None:
        if self._call is None:
            self._call = self.clock.callLater(0, self.flush)

    def flush(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        if not self._events:
            return
        events, self._events = self._events, []
        waiters, self._waiters = self._waiters, []
        body, exact = fastjson.dumps_checked(events)
        # `o`: written by orjson, so the ingest worker may read it with orjson (docs/bus.md).
        fields = ("b", body, "o", "1") if exact else ("b", body)
        done: Deferred[None] = Deferred()
        self._writing.add(done)
        self._write(fields, len(events), waiters, done, 0)

    def _write(
        self,
        fields: tuple[str | bytes, ...],
        count: int,
        waiters: list[Deferred[None]],
        done: Deferred[None],
        attempt: int,
    ) -> None:
        d = self.redis.execute("XADD", self.key, "MAXLEN", "~", self.maxlen, "*", *fields)
        d.addCallbacks(
            self._written,
            self._write_failed,
            callbackArgs=(count, waiters, done),
            errbackArgs=(fields, count, waiters, done, attempt),
        )

    def _written(
        self, _: object, count: int, waiters: list[Deferred[None]], done: Deferred[None]
    ) -> None:
        self.entries_written += 1
        self.events_written += count
        for waiter in waiters:
            waiter.callback(None)
        self._writing.discard(done)
        done.callback(None)

    def _write_failed(
        self,
        failure: Failure,
        fields: tuple[str | bytes, ...],
        count: int,
        waiters: list[Deferred[None]],
        done: Deferred[None],
        attempt: int,
    ) -> None:
        if attempt < self.retries:
            log.warn("uplink XADD failed ({error}); retrying", error=failure.getErrorMessage())
            self.clock.callLater(
                self.retry_delay, self._write, fields, count, waiters, done, attempt + 1
            )
            return
        self.failures += 1
        log.error(
            "uplink XADD failed, {count} events not stored: {error}",
            count=count,
            error=failure.getErrorMessage(),
        )
        for waiter in waiters:
            waiter.errback(failure)
        self._writing.discard(done)
        done.callback(None)

    def drain(self) -> Deferred[Any]:
        """Write what is pending and wait for every write in progress."""
        self.flush()
        return DeferredList(list(self._writing))
