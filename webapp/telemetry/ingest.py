"""The ingest worker: reads the edge's uplink stream as a consumer group and writes it down.

At-least-once: an entry is acknowledged only after everything in it is stored, entries left
pending by a dead consumer are reclaimed with XAUTOCLAIM, and every write is idempotent, so a
crash anywhere loses nothing and duplicates nothing.
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis
from django.db import transaction

from edge.bus.keys import UPLINK_GROUP, Keys
from webapp.devices import actions as device_actions
from webapp.devices.models import DeviceShadow
from webapp.telemetry import hooks
from webapp.telemetry.backends import Point, TimeSeriesBackend
from webapp.telemetry.choices import MessageResult
from webapp.telemetry.models import DeviceMessage

log = logging.getLogger(__name__)

RECLAIM_IDLE_MS = 30_000
Entry = tuple[bytes, dict[bytes, bytes]]


@dataclass
class Batch:
    """The events of a group of stream entries, sorted by kind."""

    points: list[Point] = field(default_factory=list)
    messages: list[DeviceMessage] = field(default_factory=list)
    statuses: list[dict[str, Any]] = field(default_factory=list)
    others: list[dict[str, Any]] = field(default_factory=list)

    def add(self, event: dict[str, Any]) -> None:
        kind = event.get("t")
        if kind == "data":
            ts = event.get("et") or event["ts"]
            self.points.append(Point(product=event["prod"], service=event["svc"],
                                     device=event["dev"], ts=int(ts),
                                     received=int(event["ts"]), values=event["v"]))
        elif kind == "log":
            self.messages.append(DeviceMessage(
                device_identifier=event["dev"][:64],
                ts=datetime.fromtimestamp(event["ts"] / 1000, tz=UTC),
                direction=event.get("dir", "up"),
                topic=event.get("topic", "")[:255],
                payload=event.get("payload", ""),
                result=MessageResult.ACCEPTED if event.get("ok") else MessageResult.REJECTED,
                reason=event.get("reason") or "",
            ))
        elif kind == "status":
            self.statuses.append(event)
        else:
            self.others.append(event)


def decode_entries(entries: Iterable[Entry]) -> tuple[Batch, list[bytes]]:
    batch = Batch()
    ids: list[bytes] = []
    for entry_id, fields in entries:
        ids.append(entry_id)
        raw = fields.get(b"b")
        if raw is None:
            continue
        try:
            events = json.loads(raw)
        except ValueError:
            log.error("uplink entry %s is not JSON; skipped", entry_id.decode())
            continue
        for event in events if isinstance(events, list) else [events]:
            try:
                batch.add(event)
            except (KeyError, TypeError, ValueError) as exc:
                log.error("uplink event in %s is malformed (%s); skipped", entry_id.decode(), exc)
    return batch, ids


class IngestWorker:
    def __init__(self, client: redis.Redis, keys: Keys, backend: TimeSeriesBackend,
                 consumer: str, *, count: int = 200, block_ms: int = 1000) -> None:
        self.redis = client
        self.keys = keys
        self.backend = backend
        self.consumer = consumer
        self.count = count
        self.block_ms = block_ms

    def ensure_group(self) -> None:
        try:
            self.redis.xgroup_create(self.keys.uplink, UPLINK_GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def reclaim(self) -> list[Entry]:
        """Take over entries another consumer read but never acknowledged."""
        claimed: list[Entry] = []
        start = "0-0"
        while True:
            result = self.redis.xautoclaim(self.keys.uplink, UPLINK_GROUP, self.consumer,
                                           min_idle_time=RECLAIM_IDLE_MS, start_id=start,
                                           count=self.count)
            start, entries = result[0], result[1]
            claimed.extend(e for e in entries if e[1] is not None)
            if start in (b"0-0", "0-0") or not entries:
                return claimed

    def read(self) -> list[Entry]:
        # First our own pending entries (after a restart), then new ones.
        pending = self.redis.xreadgroup(UPLINK_GROUP, self.consumer, {self.keys.uplink: "0"},
                                        count=self.count)
        if pending and pending[0][1]:
            return list(pending[0][1])
        fresh = self.redis.xreadgroup(UPLINK_GROUP, self.consumer, {self.keys.uplink: ">"},
                                      count=self.count, block=self.block_ms)
        return list(fresh[0][1]) if fresh else []

    def process(self, entries: list[Entry]) -> int:
        """Store a group of entries and acknowledge them; returns the points written."""
        if not entries:
            return 0
        batch, ids = decode_entries(entries)
        written = self.store(batch)
        self.redis.xack(self.keys.uplink, UPLINK_GROUP, *ids)
        return written

    def store(self, batch: Batch) -> int:
        with transaction.atomic():
            written = self.backend.write(batch.points) if batch.points else 0
            if batch.messages:
                DeviceMessage.objects.bulk_create(batch.messages)
            self._update_reported(batch.points)
        for event in sorted(batch.statuses, key=lambda e: e["ts"]):
            device_actions.record_connect_status(event["dev"], event["s"], int(event["ts"]))
        self._update_latest(batch.points)
        unclaimed = hooks.run(batch)
        if unclaimed:
            kinds = sorted({str(e.get("t")) for e in unclaimed})
            log.warning("no handler for %d uplink events of kind %s", len(unclaimed),
                        ", ".join(kinds))
        return written

    def _latest_by_device(self, points: list[Point]) -> dict[str, dict[str, dict[str, Any]]]:
        latest: dict[str, dict[str, dict[str, Any]]] = defaultdict(lambda: defaultdict(dict))
        for point in sorted(points, key=lambda p: p.ts):
            for prop, value in point.values.items():
                latest[point.device][point.service][prop] = {"value": value, "ts": point.ts}
        return latest

    def _update_reported(self, points: list[Point]) -> None:
        for device, services in self._latest_by_device(points).items():
            shadow = DeviceShadow.objects.select_for_update().filter(
                device__identifier=device).first()
            if shadow is None:
                continue
            reported = shadow.reported or {}
            for service, values in services.items():
                current = reported.setdefault(service, {})
                for prop, entry in values.items():
                    old = current.get(prop)
                    if old is None or old.get("ts", 0) <= entry["ts"]:
                        current[prop] = entry
            shadow.reported = reported
            shadow.save(update_fields=["reported", "updated"])

    def _update_latest(self, points: list[Point]) -> None:
        latest = self._latest_by_device(points)
        if not latest:
            return
        pipe = self.redis.pipeline(transaction=False)
        for device, services in latest.items():
            for service in services:
                pipe.hget(self.keys.latest(device), service)
        current = iter(pipe.execute())
        pipe = self.redis.pipeline(transaction=False)
        for device, services in latest.items():
            for service, values in services.items():
                raw = next(current)
                merged = json.loads(raw) if raw else {}
                for prop, entry in values.items():
                    if merged.get(prop, {}).get("ts", 0) <= entry["ts"]:
                        merged[prop] = entry
                pipe.hset(self.keys.latest(device), service, json.dumps(merged))
        pipe.execute()

    def run(self, stop: Any = None) -> None:
        """Loop until `stop()` returns true (or forever); survives Redis and DB outages."""
        self.ensure_group()
        last_reclaim = 0.0
        while stop is None or not stop():
            try:
                if time.monotonic() - last_reclaim > RECLAIM_IDLE_MS / 1000:
                    last_reclaim = time.monotonic()
                    claimed = self.reclaim()
                    if claimed:
                        log.info("reclaimed %d uplink entries from a dead consumer", len(claimed))
                        self.process(claimed)
                self.process(self.read())
            except redis.ConnectionError as exc:
                log.warning("Redis unavailable (%s); retrying in 1 s", exc)
                time.sleep(1)
            except redis.ResponseError as exc:
                if "NOGROUP" in str(exc):
                    self.ensure_group()
                    continue
                raise
            except Exception:
                # Database down or a bug: nothing was acknowledged, so the entries stay
                # pending and are retried; back off so a persistent failure does not spin.
                log.exception("ingest failed; the entries stay pending and will be retried")
                time.sleep(2)
