"""The ingest worker: reads the edge's uplink stream as a consumer group and writes it down.

At-least-once: an entry is acknowledged only after everything in it is stored, entries left
pending by a dead consumer are reclaimed with XAUTOCLAIM, and every write is idempotent (time
series upsert on (device, ts), message log keyed by stream entry and position, latest values
compared by time), so a crash of the worker, of Redis or of the database anywhere loses nothing
and duplicates nothing. Several workers share the stream as consumers of one group.

Backpressure: a worker holds at most `count` stream entries at a time (the edge batches the
events of one reactor turn into one entry), so its memory is bounded whatever the backlog; the
backlog itself waits in the stream, which the edge trims at `UPLINK_MAXLEN` entries
(docs/performance.md says how far behind ingest may fall before that matters, and the worker
warns when its group lags by more than half of it).

Poison: an entry whose storing fails by itself (not because the database, Redis or the broker
is unavailable) is retried after `retry_delay_s` while the entries behind it go on, and moved
to the dead-letter stream `uplink:dead` once it has been delivered `INGEST_MAX_DELIVERIES`
times (default 5) and other entries were stored since it first failed (so that an outage
never empties the stream into the dead letters). docs/bus.md describes both streams.

Latest values go to Redis first (`tl:latest:{device}`, compare-and-set so that parallel
workers never lose each other's updates) and are persisted to the shadow's `reported` by the
`telemetry.persist_latest` beat task, not by a database write per device per batch.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
import redis
from django.db import DataError, IntegrityError, connection, transaction

from edge import fastjson
from edge.bus.keys import UPLINK_GROUP, UPLINK_MAXLEN, Keys
from webapp.core import metrics
from webapp.core.redis import group_lag
from webapp.devices import actions as device_actions
from webapp.telemetry import hooks, messagelog
from webapp.telemetry.backends import Point, TimeSeriesBackend
from webapp.telemetry.batch import Batch

log = logging.getLogger(__name__)

RECLAIM_IDLE_MS = 30_000
RETRY_DELAY_S = 2.0
DEFAULT_MAX_DELIVERIES = 5
# What a database raises for data it will never accept (a value its column cannot hold, a
# constraint), as opposed to being unavailable: retrying such a batch cannot succeed.
# (The SQL backend's COPY talks to psycopg directly, so its errors come unwrapped.)
REFUSED_DATA: tuple[type[Exception], ...] = (
    DataError, IntegrityError, psycopg.DataError, psycopg.IntegrityError, ValueError, TypeError)
LAG_CHECK_S = 30.0
Entry = tuple[bytes, dict[bytes, bytes]]
# What an unavailable service raises (PEP 249 drivers, Redis, the Celery broker): the entries
# stay pending and are retried, never dead-lettered, however long it lasts.
OUTAGE: tuple[type[Exception], ...] = (
    redis.ConnectionError, redis.TimeoutError, redis.exceptions.ReadOnlyError,
    redis.exceptions.OutOfMemoryError, OSError)
_OUTAGE_NAMES = frozenset(("OperationalError", "InterfaceError", "ConnectionError",
                           "TimeoutError"))


def is_outage(exc: BaseException) -> bool:
    """Whether `exc` says a service is unavailable rather than that the entry is bad."""
    return isinstance(exc, OUTAGE) or any(
        cls.__name__ in _OUTAGE_NAMES for cls in type(exc).__mro__)


def configured_max_deliveries() -> int:
    """INGEST_MAX_DELIVERIES (a setting or the environment; 5 by default)."""
    from django.conf import settings

    value = getattr(settings, "INGEST_MAX_DELIVERIES", None) or os.environ.get(
        "INGEST_MAX_DELIVERIES") or DEFAULT_MAX_DELIVERIES
    return max(1, int(value))

# Compare-and-set of latest values. KEYS: the dirty set, then one latest hash per update;
# ARGV: four per update (device, service, value expected now or "" for none, new value).
# An update whose hash field changed since it was read is not applied and its position is
# returned, so the caller merges again; applied updates mark their device dirty.
_LATEST_CAS = """
local conflicts = {}
for i = 2, #KEYS do
  local b = (i - 2) * 4
  local current = redis.call('HGET', KEYS[i], ARGV[b + 2]) or ''
  if current == ARGV[b + 3] then
    redis.call('HSET', KEYS[i], ARGV[b + 2], ARGV[b + 4])
    redis.call('SADD', KEYS[1], ARGV[b + 1])
  else
    conflicts[#conflicts + 1] = i - 1
  end
end
return conflicts
"""


def entry_events(entry_id: bytes, fields: dict[bytes, bytes] | None) -> list[Any]:
    """The events of one stream entry ([] when it has none or is not JSON, which is logged)."""
    raw = fields.get(b"b") if fields else None
    if fields is None or raw is None:
        return []
    try:
        # `o`: the edge wrote it with orjson, which reads it back exactly; otherwise
        # (a wide integer, or written by something else) the exact, slower parser.
        events = orjson.loads(raw) if fields.get(b"o") == b"1" else fastjson.loads(raw)
    except ValueError:
        log.error("uplink entry %s is not JSON; skipped", entry_id.decode())
        return []
    return events if isinstance(events, list) else [events]


def add_event(batch: Batch, entry_id: bytes, position: int, event: Any,
              report: bool = True) -> bool:
    """Add one event to `batch`; False (logged when `report`) when it is malformed."""
    try:
        # The message log's key: the same entry replayed gives the same rows.
        batch.add(event, f"{entry_id.decode()}/{position}")
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        if report:
            log.error("uplink event in %s is malformed (%s); skipped", entry_id.decode(), exc)
        return False
    return True


def decode_entries(entries: Iterable[Entry]) -> tuple[Batch, list[bytes]]:
    batch = Batch()
    ids: list[bytes] = []
    for entry_id, fields in entries:
        ids.append(entry_id)
        for position, event in enumerate(entry_events(entry_id, fields)):
            add_event(batch, entry_id, position, event)
    return batch, ids


def latest_by_device(points: list[Point]) -> dict[tuple[str, str], dict[str, dict[str, Any]]]:
    """The newest value of each property per (device, service) in a batch of points."""
    latest: dict[tuple[str, str], dict[str, dict[str, Any]]] = defaultdict(dict)
    for point in points:
        current = latest[(point.device, point.service)]
        for prop, value in point.values.items():
            seen = current.get(prop)
            if seen is None or seen["ts"] <= point.ts:
                current[prop] = {"value": value, "ts": point.ts}
    return latest


def merge_latest(raw: bytes | None, values: dict[str, dict[str, Any]]) -> str | None:
    """The stored JSON with newer values merged in, or None when nothing changes."""
    merged = json.loads(raw) if raw else {}
    changed = False
    for prop, entry in values.items():
        old = merged.get(prop)
        if not isinstance(old, dict) or old.get("ts", 0) < entry["ts"] or (
                old.get("ts", 0) == entry["ts"] and old.get("value") != entry["value"]):
            merged[prop] = entry
            changed = True
    return json.dumps(merged, separators=(",", ":")) if changed else None


class IngestWorker:
    def __init__(self, client: redis.Redis, keys: Keys, backend: TimeSeriesBackend,
                 consumer: str, *, count: int = 200, block_ms: int = 1000,
                 reclaim_idle_ms: int = RECLAIM_IDLE_MS, max_deliveries: int | None = None,
                 retry_delay_s: float = RETRY_DELAY_S) -> None:
        self.redis = client
        self.keys = keys
        self.backend = backend
        self.consumer = consumer
        self.count = count
        self.block_ms = block_ms
        self.reclaim_idle_ms = reclaim_idle_ms
        self.max_deliveries = max_deliveries or configured_max_deliveries()
        self.retry_delay_s = retry_delay_s
        self._cas = client.register_script(_LATEST_CAS)
        self.stored_points = 0
        self.dead_lettered = 0  # entries moved to uplink:dead after failing too often
        # Ids of entries this worker got from a pending list (see Batch.redelivered).
        self._redelivered: set[bytes] = set()
        # Entries that failed by themselves → the number of stores that had succeeded then
        # (one stored since shows that the platform works and the entry is the problem).
        self._failing: dict[bytes, int] = {}
        self._successes = 0
        # Own pending entries (failed ones) are read again from then on (time.monotonic).
        self._retry_at = 0.0
        # Device → the "last seen" (ms) this worker last wrote: written again only when the
        # device's messages are DEVICE_LAST_SEEN_INTERVAL newer, not on every message.
        self._last_seen: dict[str, int] = {}

    def ensure_group(self) -> None:
        try:
            self.redis.xgroup_create(self.keys.uplink, UPLINK_GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def reclaim(self) -> list[Entry]:
        """Take over entries another consumer read but never acknowledged (one batch)."""
        result = self.redis.xautoclaim(self.keys.uplink, UPLINK_GROUP, self.consumer,
                                       min_idle_time=self.reclaim_idle_ms, start_id="0-0",
                                       count=self.count)
        entries = result[1]
        self._redelivered.update(e[0] for e in entries)
        deleted = result[2] if len(result) > 2 else []
        if deleted:
            # Trimmed by the edge's MAXLEN before anyone stored them: the one way to lose
            # data, and why the backlog bound is documented and watched.
            log.error("%d pending uplink entries were trimmed from the stream before being "
                      "stored", len(deleted))
        return [e for e in entries if e[1] is not None]

    def read(self) -> list[Entry]:
        # First our own pending entries (after a restart, or failed ones once their retry is
        # due: meanwhile the entries behind them go on), then new ones.
        pending = self.redis.xreadgroup(
            UPLINK_GROUP, self.consumer, {self.keys.uplink: "0"}, count=self.count
        ) if time.monotonic() >= self._retry_at else None
        if pending and pending[0][1]:
            entries = list(pending[0][1])
            gone = [e[0] for e in entries if not e[1]]
            if gone:
                log.error("%d pending uplink entries were trimmed before being stored",
                          len(gone))
                self.redis.xack(self.keys.uplink, UPLINK_GROUP, *gone)
            live = [e for e in entries if e[1]]
            if live:
                self._redelivered.update(e[0] for e in live)
                return live
        fresh = self.redis.xreadgroup(UPLINK_GROUP, self.consumer, {self.keys.uplink: ">"},
                                      count=self.count, block=self.block_ms)
        return list(fresh[0][1]) if fresh else []

    def process(self, entries: list[Entry]) -> int:
        """Store a group of entries and acknowledge them; returns the points written.

        A database (or Redis, or the broker) that is down raises, and the entries stay
        pending for the retry. A database that refuses the data itself (a value its column
        cannot hold) would refuse it on every retry and stall ingest behind it: then the
        entries are stored one by one, and the events of a refused entry one by one, and
        what is still refused goes to the dead-letter stream `uplink:dead` with the reason —
        kept, not lost. Any other failure (a bug, a handler that raises on some data) is
        narrowed down the same way to the entries that fail by themselves: the others are
        stored, and those are retried later, then dead-lettered (`_retry_or_give_up`)."""
        if not entries:
            return 0
        started = time.perf_counter()
        batch, ids = decode_entries(entries)
        batch.redelivered = self._was_redelivered(ids)
        try:
            written = self.store(batch)
        except REFUSED_DATA as exc:
            log.warning("the database refused a batch of %d entries (%s); storing them one "
                        "by one", len(entries), exc)
            written, ids = self._one_by_one(entries, None)
        except Exception as exc:
            if is_outage(exc):
                raise
            log.warning("storing a batch of %d entries failed (%r); storing them one by one",
                        len(entries), exc)
            written, ids = self._one_by_one(entries, exc)
        else:
            self._successes += 1
            if self._failing:
                for entry_id in ids:
                    self._failing.pop(entry_id, None)
        if ids:
            self.redis.xack(self.keys.uplink, UPLINK_GROUP, *ids)
            self._redelivered.difference_update(ids)
        self.stored_points += written
        metrics.INGEST_BATCHES.inc()
        metrics.INGEST_ENTRIES.inc(len(entries))
        metrics.INGEST_POINTS.inc(written)
        metrics.INGEST_BATCH_LATENCY.observe(time.perf_counter() - started)
        return written

    def _was_redelivered(self, ids: list[bytes]) -> bool:
        return bool(self._redelivered) and any(i in self._redelivered for i in ids)

    def _one_by_one(self, entries: list[Entry], failure: Exception | None
                    ) -> tuple[int, list[bytes]]:
        """Store the entries one at a time; returns the points written and the ids that are
        done (stored, or dead-lettered). `failure`: what the whole batch raised, which is
        what a batch of one entry would raise again."""
        written = 0
        done: list[bytes] = []
        failed: list[tuple[bytes, dict[bytes, bytes], Exception]] = []
        for entry_id, fields in entries:
            if failure is not None and len(entries) == 1:
                error: Exception = failure
            else:
                try:
                    written += self._store_entry(entry_id, fields)
                except Exception as exc:
                    if is_outage(exc):  # acknowledge what is stored, retry the rest
                        if done:
                            self.redis.xack(self.keys.uplink, UPLINK_GROUP, *done)
                            self._redelivered.difference_update(done)
                        self.stored_points += written
                        raise
                    error = exc
                else:
                    done.append(entry_id)
                    self._successes += 1
                    self._failing.pop(entry_id, None)
                    continue
            failed.append((entry_id, fields, error))
            self._failing.setdefault(entry_id, self._successes)
        if failed:
            metrics.INGEST_REFUSED.inc(len(failed))
            done += self._retry_or_give_up(failed)
        return written, done

    def _store_entry(self, entry_id: bytes, fields: dict[bytes, bytes]) -> int:
        """Store one entry; when the database refuses it, its events one by one, and what is
        still refused goes to the dead letters."""
        batch, _ids = decode_entries([(entry_id, fields)])
        batch.redelivered = self._was_redelivered([entry_id])
        try:
            return self.store(batch)
        except REFUSED_DATA:
            metrics.INGEST_REFUSED.inc()
        written = 0
        for position, event in enumerate(entry_events(entry_id, fields)):
            single = Batch(redelivered=batch.redelivered)
            # A malformed event was reported when the entry was decoded above.
            if not add_event(single, entry_id, position, event, report=False):
                continue
            try:
                written += self.store(single)
            except REFUSED_DATA as exc:
                self._dead_letter(entry_id, position, event, exc)
        return written

    def _retry_or_give_up(self, failed: list[tuple[bytes, dict[bytes, bytes], Exception]]
                          ) -> list[bytes]:
        """Entries that failed by themselves: dead-lettered when delivered
        `max_deliveries` times with entries stored since they first failed, else left
        pending for a retry after `retry_delay_s`. Returns the ids dead-lettered."""
        pipe = self.redis.pipeline(transaction=False)
        for entry_id, _fields, _exc in failed:
            pipe.xpending_range(self.keys.uplink, UPLINK_GROUP, min=entry_id, max=entry_id,
                                count=1)
        deliveries = {entry_id: int(reply[0]["times_delivered"]) if reply else 0
                      for (entry_id, _f, _e), reply in zip(failed, pipe.execute())}
        given_up: list[bytes] = []
        for entry_id, fields, exc in failed:
            times = deliveries[entry_id]
            if times >= self.max_deliveries and \
                    self._successes > self._failing.get(entry_id, self._successes):
                reason = f"failed on {times} deliveries: {type(exc).__name__}: {exc}"
                events = entry_events(entry_id, fields) or [
                    (fields.get(b"b") or b"").decode(errors="replace")]
                for position, event in enumerate(events):
                    self._dead_letter(entry_id, position, event, exc, reason=reason)
                self._failing.pop(entry_id, None)
                self.dead_lettered += 1
                given_up.append(entry_id)
            else:
                log.warning("uplink entry %s failed (delivery %d of at most %d: %r); it is "
                            "retried in %.0f s", entry_id.decode(), times,
                            self.max_deliveries, exc, self.retry_delay_s)
                self._retry_at = time.monotonic() + self.retry_delay_s
        if len(self._failing) > 10_000:  # ids taken over by other workers meanwhile
            self._failing.clear()
        return given_up

    def _dead_letter(self, entry_id: bytes, position: int, event: Any,
                     exc: Exception, reason: str | None = None) -> None:
        if reason is None:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else \
                type(exc).__name__
            what = "refused by the database"
        else:
            what = "kept failing"
        reason = reason.strip().splitlines()[0][:500] if reason.strip() else type(exc).__name__
        log.error("uplink event %s/%d of device %s %s (%s); kept in %s",
                  entry_id.decode(), position,
                  event.get("dev") if isinstance(event, dict) else "?", what, reason,
                  self.keys.uplink_dead)
        metrics.INGEST_DEAD_LETTERS.inc()
        self.redis.xadd(self.keys.uplink_dead, {
            "entry": entry_id, "position": str(position), "reason": reason,
            "event": fastjson.dumps(event)}, maxlen=UPLINK_MAXLEN, approximate=True)

    def store(self, batch: Batch) -> int:
        with metrics.INGEST_DB_WRITE.time(), transaction.atomic():
            written = self.backend.write(batch.points) if batch.points else 0
            messagelog.store(batch.messages)
            device_actions.record_connections(batch.connections)
        for event in sorted(batch.statuses, key=lambda e: e["ts"]):
            device_actions.record_connect_status(event["dev"], event["s"], int(event["ts"]))
        self.touch_last_seen(batch)
        self.update_latest(batch.points)
        unclaimed = hooks.run(batch)
        if unclaimed:
            kinds = sorted({str(e.get("t")) for e in unclaimed})
            log.warning("no handler for %d uplink events of kind %s", len(unclaimed),
                        ", ".join(kinds))
        return written

    def touch_last_seen(self, batch: Batch) -> None:
        """Move "last seen" of the devices heard from in the batch: one UPDATE for the batch,
        and a device at most once per `DEVICE_LAST_SEEN_INTERVAL` seconds."""
        from django.conf import settings

        interval = settings.DEVICE_LAST_SEEN_INTERVAL * 1000
        due = {device: ms for device, ms in batch.seen().items()
               if ms - self._last_seen.get(device, 0) >= interval}
        if not due:
            return
        device_actions.touch_last_seen(
            {device: datetime.fromtimestamp(ms / 1000, tz=UTC) for device, ms in due.items()})
        if len(self._last_seen) > 100_000:  # bounded: forgetting only costs an UPDATE
            self._last_seen.clear()
        self._last_seen.update(due)

    def update_latest(self, points: list[Point]) -> None:
        """Merge the batch's newest values into `tl:latest:{device}` (compare-and-set)."""
        pending = latest_by_device(points)
        for _attempt in range(10):
            if not pending:
                return
            order = list(pending)
            pipe = self.redis.pipeline(transaction=False)
            for device, service in order:
                pipe.hget(self.keys.latest(device), service)
            current = pipe.execute()
            keys: list[str] = [self.keys.latest_dirty]
            args: list[str] = []
            tried: list[tuple[str, str]] = []
            for (device, service), raw in zip(order, current):
                new = merge_latest(raw, pending[(device, service)])
                if new is None:
                    continue
                keys.append(self.keys.latest(device))
                args += [device, service, raw.decode() if raw else "", new]
                tried.append((device, service))
            if not tried:
                return
            conflicts = self._cas(keys=keys, args=args)
            pending = {tried[int(i) - 1]: pending[tried[int(i) - 1]] for i in conflicts}
        log.warning("latest values of %d devices kept changing; left to the next batch",
                    len(pending))

    def observe_stream(self) -> None:
        """Set the lag of the uplink stream's consumer group and the entries pending per
        consumer (XINFO GROUPS, XPENDING) in this process's metrics."""
        stream = self.keys.uplink
        label = stream[len(self.keys.prefix):]  # "uplink", as in thinglinks_redis_stream_length
        for group in self.redis.xinfo_groups(stream):
            name = group.get("name")
            name = name.decode() if isinstance(name, bytes) else str(name)
            metrics.INGEST_LAG.labels(label, name).set(group_lag(self.redis, stream, group)[0])
            summary = self.redis.xpending(stream, name)
            counts = {(c.get("name") or b"").decode() if isinstance(c.get("name"), bytes)
                      else str(c.get("name")): int(c.get("pending") or 0)
                      for c in summary.get("consumers") or []}
            for consumer in (self.consumer, *counts):
                metrics.INGEST_PENDING.labels(label, name, consumer).set(counts.get(consumer, 0))

    def check_lag(self) -> None:
        for group in self.redis.xinfo_groups(self.keys.uplink):
            name = group.get("name")
            if name not in (UPLINK_GROUP, UPLINK_GROUP.encode()):
                continue
            lag = group_lag(self.redis, self.keys.uplink, group)[0]
            if lag > UPLINK_MAXLEN // 2:
                log.warning("ingest is %d entries behind; the edge trims the stream at %d",
                            lag, UPLINK_MAXLEN)

    def run(self, stop: Callable[[], bool] | None = None) -> None:
        """Loop until `stop()` returns true (or forever); survives Redis and DB outages."""
        last_reclaim = last_lag = 0.0
        group_ready = False
        while stop is None or not stop():
            try:
                if not group_ready:
                    self.ensure_group()
                    group_ready = True
                now = time.monotonic()
                if now - last_reclaim > self.reclaim_idle_ms / 2000:
                    last_reclaim = now
                    claimed = self.reclaim()
                    if claimed:
                        log.info("reclaimed %d uplink entries from a dead consumer", len(claimed))
                        self.process(claimed)
                        continue
                if now - last_lag > LAG_CHECK_S:
                    last_lag = now
                    self.check_lag()
                self.process(self.read())
            except redis.ConnectionError as exc:
                log.warning("Redis unavailable (%s); retrying in 1 s", exc)
                group_ready = False
                time.sleep(1)
            except redis.ResponseError as exc:
                if "NOGROUP" in str(exc):
                    group_ready = False
                    continue
                raise
            except Exception:
                # Database down or a bug: nothing was acknowledged, so the entries stay
                # pending and are retried; a broken connection is dropped so that the next
                # try opens a new one, and a persistent failure does not spin.
                log.exception("ingest failed; the entries stay pending and will be retried")
                try:
                    connection.close()
                except Exception:
                    log.debug("closing the broken database connection failed", exc_info=True)
                time.sleep(2)
