"""The uplink stream: events of one reactor turn batched into one ``XADD`` (docs/bus.md)."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, DeferredList, FirstError, gatherResults
from twisted.logger import Logger
from twisted.python.failure import Failure

from edge import fastjson
from edge.mqtt.errors import NotStored

from .client import Commands, RedisError
from .keys import UPLINK_MAXLEN, Keys

log = Logger(namespace="edge.uplink")


class Uplink:
    """Collects events and writes them as one stream entry per reactor turn.

    :meth:`emit_confirmed` returns a Deferred that fires once the entry carrying the events is
    stored in Redis, so that a QoS 1/2 acknowledgement can wait for it. A failed ``XADD`` is
    retried a few times (the ingest worker tolerates duplicates) before its waiters fail.

    With ``wait_replicas`` (behind Redis Sentinel, docs/bus.md "Redis failover") an entry that
    has waiters is followed by ``WAIT`` and ``ROLE`` in the same pipeline, and counts as stored
    only once ``wait_replicas`` replicas have it, or every replica the master has when it has
    fewer: replication is asynchronous, and an entry only the master held would be lost with it
    after the acknowledgement if a replica took over. A master without any replica (the one
    left after a failover) has none to hand over to, so its reply is enough — unless
    ``wait_strict``: then fewer replicas than ``wait_replicas`` is a refusal (a master that
    lost its replica because the replica was promoted, in a manual failover or a partition,
    would otherwise acknowledge alone what the new master never gets); ``WAIT`` asks for
    as many replicas as the last ``ROLE`` listed, so that it does not sit out its timeout for a
    replica that is gone. A replica that does not confirm in time is a failed write (retried,
    then the acknowledgement is refused). ``WAIT`` blocks its connection, so one write is in
    flight at a time then (up to ``max_batch_events`` events, more go out pipelined): what
    arrives meanwhile goes into the next entry.
    """

    retries = 3
    retry_delay = 0.5
    max_batch_events = 10_000

    def __init__(
        self,
        redis: Commands,
        keys: Keys,
        clock: Any,
        maxlen: int = UPLINK_MAXLEN,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 1000,
        wait_strict: bool = False,
    ) -> None:
        self.redis = redis
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = wait_timeout_ms
        self.wait_strict = wait_strict
        # Confirmed writes that fewer replicas than `wait_replicas` acknowledged in time.
        self.unreplicated = 0
        # Replicas of the master as its last ROLE listed them.
        self.replicas = wait_replicas
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

    def flush(self, force: bool = False) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        if not self._events:
            return
        if (
            self.wait_replicas
            and self._writing
            and not force
            and len(self._events) < self.max_batch_events
        ):
            return  # written when the write in flight is done (_done)
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
        xadd = ("XADD", self.key, "MAXLEN", "~", self.maxlen, "*", *fields)
        d: Deferred[Any]
        if waiters and self.wait_replicas:
            replies = self.redis.pipeline(
                [
                    xadd,
                    ("WAIT", min(self.wait_replicas, self.replicas), self.wait_timeout_ms),
                    ("ROLE",),
                ]
            )
            d = gatherResults(replies, consumeErrors=True).addCallback(self._replicated)
        else:
            d = self.redis.execute(*xadd)
        d.addCallbacks(
            self._written,
            self._write_failed,
            callbackArgs=(count, waiters, done),
            errbackArgs=(fields, count, waiters, done, attempt),
        )

    def _replicated(self, replies: list[Any]) -> None:
        _, confirmed, role = replies
        # ROLE on a master: ["master", offset, [[ip, port, offset], ...]], after the WAIT.
        replicas = len(role[2]) if isinstance(role, list) and len(role) > 2 else 0
        self.replicas = replicas
        needed = self.wait_replicas if self.wait_strict else min(self.wait_replicas, replicas)
        if int(confirmed) < needed:
            self.unreplicated += 1
            raise RedisError(
                f"WAIT: {confirmed} of {needed} replica(s) "
                f"acknowledged within {self.wait_timeout_ms} ms"
            )

    def _written(
        self, _: object, count: int, waiters: list[Deferred[None]], done: Deferred[None]
    ) -> None:
        self.entries_written += 1
        self.events_written += count
        for waiter in waiters:
            waiter.callback(None)
        self._done(done)

    def _write_failed(
        self,
        failure: Failure,
        fields: tuple[str | bytes, ...],
        count: int,
        waiters: list[Deferred[None]],
        done: Deferred[None],
        attempt: int,
    ) -> None:
        if failure.check(FirstError):
            failure = failure.value.subFailure
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
        refused = Failure(NotStored(failure.getErrorMessage()))
        for waiter in waiters:
            waiter.errback(refused)
        self._done(done)

    def _done(self, done: Deferred[None]) -> None:
        self._writing.discard(done)
        done.callback(None)
        if self._events and not self._writing:
            self._schedule()

    def drain(self) -> Deferred[Any]:
        """Write what is pending and wait for every write in progress."""
        self.flush(force=True)
        return DeferredList(list(self._writing))
