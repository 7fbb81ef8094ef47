"""Live updates for the console: what the ingest worker pushes to the browsers watching a device.

A browser on a device's page holds a WebSocket (`webapp.console.consumers.DeviceConsumer`),
which joins the Channels group of that device and keeps the device in a Redis sorted set of
watched devices (`Keys.console_watched`, scored by when the watch lapses). After each stored
batch, `on_batch` reads the devices watched now (one round trip, as many as open device pages)
and pushes new values, status changes and log lines only to the groups of those of the batch's
devices, so ingest does nothing more for the devices nobody looks at.

The same round trip counts the batch's messages per minute of ingest and keeps the latest
rejected ones for the dashboard (`webapp.console.stats`), so that the dashboard never scans the
message log of the whole platform.

While a debug page is open (`Keys.console_debug`, read in the same round trip), each batch's
message log lines also go to the debug group (`webapp.console.consumers_debug`), whose sockets
keep only the lines of devices in their user's scope.

Pushing is best effort: a failure is logged and never fails the batch (that would make ingest
retry data that is already stored).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections import defaultdict
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TYPE_CHECKING, Any

from channels.layers import get_channel_layer

from edge.clock import now_ms
from webapp.core.redis import get_redis, keys
from webapp.telemetry.choices import MessageResult

if TYPE_CHECKING:
    from webapp.telemetry.batch import Batch

log = logging.getLogger(__name__)

# A watch lapses this long after the consumer last renewed it (it renews every RENEW_S).
WATCH_TTL_MS = 60_000
RENEW_S = 20.0
# Per device and batch, what one push carries at most (the page shows the newest anyway).
MAX_POINTS = 100
MAX_LOGS = 20
MAX_PAYLOAD = 2000
# The dashboard's window and the latest rejected messages kept for it.
COUNTER_TTL_S = 2 * 3600
REJECTED_KEPT = 20
SEND_TIMEOUT_S = 2.0
# The debug page's stream (`/debug/`): one group for every open stream, which each socket
# filters by its user's scope; what one batch pushes at most.
DEBUG_GROUP = "console.debug"
MAX_DEBUG_LINES = 200
DEBUG_PAYLOAD = 1000


def group_name(identifier: str) -> str:
    """The Channels group of one device (identifiers are valid group-name characters)."""
    return f"console.device.{identifier}"


def watch(identifier: str) -> None:
    """Mark `identifier` as watched for the next WATCH_TTL_MS (never shortens a watch)."""
    get_redis().zadd(keys().console_watched, {identifier: now_ms() + WATCH_TTL_MS}, gt=True)


def watched(identifiers: list[str]) -> list[str]:
    """Those of `identifiers` someone watches now."""
    if not identifiers:
        return []
    scores = get_redis().zmscore(keys().console_watched, identifiers)
    now = now_ms()
    return [i for i, score in zip(identifiers, scores) if score is not None and score > now]


def debug_watch(member: str) -> None:
    """Keep the debug stream `member` (a socket's channel name) open for WATCH_TTL_MS more,
    and forget the streams that lapsed."""
    now = now_ms()
    pipe = get_redis().pipeline(transaction=False)
    pipe.zadd(keys().console_debug, {member: now + WATCH_TTL_MS}, gt=True)
    pipe.zremrangebyscore(keys().console_debug, "-inf", now - WATCH_TTL_MS)
    pipe.execute()


def debug_unwatch(member: str) -> None:
    get_redis().zrem(keys().console_debug, member)


def debug_lines(batch: Batch) -> list[dict[str, Any]]:
    """The batch's message log lines for the debug streams (newest last, at most
    MAX_DEBUG_LINES, payloads cut at DEBUG_PAYLOAD characters)."""
    lines = []
    for message in sorted(batch.messages, key=lambda m: m.ts)[-MAX_DEBUG_LINES:]:
        line = _log_json(message)
        payload = message.payload or ""
        line["payload"] = payload[:DEBUG_PAYLOAD]
        line["truncated"] = line["truncated"] or len(payload) > DEBUG_PAYLOAD
        lines.append(line)
    return lines


def _log_json(message: Any) -> dict[str, Any]:
    payload = message.payload or ""
    return {
        "ts": int(message.ts.timestamp() * 1000),
        "device": message.device_identifier,
        "direction": message.direction,
        "topic": message.topic,
        "payload": payload[:MAX_PAYLOAD],
        "truncated": len(payload) > MAX_PAYLOAD,
        "result": message.result,
        "reason": message.reason,
    }


def updates(batch: Batch, devices: set[str]) -> dict[str, dict[str, Any]]:
    """What each of `devices` gets from `batch`: points, its newest status and log lines."""
    out: dict[str, dict[str, Any]] = defaultdict(lambda: {"points": [], "status": None,
                                                          "logs": []})
    for point in batch.points:
        if point.device in devices:
            out[point.device]["points"].append(
                {"service": point.service, "ts": point.ts, "values": point.values})
    for event in sorted(batch.statuses, key=lambda e: e.get("ts", 0)):
        device = str(event.get("dev"))
        if device in devices:
            out[device]["status"] = {"status": event.get("s"), "ts": event.get("ts")}
    for message in batch.messages:
        if message.device_identifier in devices:
            out[message.device_identifier]["logs"].append(_log_json(message))
    for device, update in out.items():
        # A dashboard's socket follows several devices' groups: each update names its device.
        update["device"] = device
        update["points"] = sorted(update["points"], key=lambda p: p["ts"])[-MAX_POINTS:]
        update["logs"] = sorted(update["logs"], key=lambda m: m["ts"])[-MAX_LOGS:]
    return dict(out)


def on_batch(batch: Batch) -> None:
    """The `after_store` hook: count messages, keep rejections, push to watched devices."""
    try:
        _on_batch(batch)
    except Exception:
        log.warning("console live update failed; the batch is stored all the same",
                    exc_info=True)


def _on_batch(batch: Batch) -> None:
    k = keys()
    now = now_ms()
    pipe = get_redis().pipeline(transaction=False)
    # The watched devices (as many as open device pages), not a lookup per device of the
    # batch: a batch touches far more devices than anyone watches.
    pipe.zrangebyscore(k.console_watched, now, "+inf")
    pipe.zremrangebyscore(k.console_watched, "-inf", now - WATCH_TTL_MS)
    # Whether a debug stream is open (same round trip).
    pipe.zcount(k.console_debug, now, "+inf")
    if batch.messages:
        _count_messages(pipe, batch, now)
    replies = pipe.execute()
    sends: list[tuple[str, dict[str, Any]]] = []
    if replies[2] and batch.messages:
        sends.append((DEBUG_GROUP, {"type": "debug.lines", "lines": debug_lines(batch)}))
    watching = {member.decode() for member in replies[0]}
    if not watching:
        sender.send(sends)
        return
    live = watching & ({p.device for p in batch.points}
                       | {m.device_identifier for m in batch.messages}
                       | {str(s.get("dev")) for s in batch.statuses})
    sends += [(group_name(device), {"type": "device.update", "data": update})
              for device, update in updates(batch, live).items()]
    sender.send(sends)


def _count_messages(pipe: Any, batch: Batch, now: int) -> None:
    """Count the batch's messages in the minute they were ingested, and keep the latest
    rejected ones."""
    k = keys()
    counts: dict[str, int] = defaultdict(int)
    rejected = []
    for message in batch.messages:
        counts[message.result] += 1
        if message.result == MessageResult.REJECTED:
            rejected.append(message)
    bucket = k.console_messages(now // 60_000)
    for result, count in counts.items():
        pipe.hincrby(bucket, result, count)
    pipe.expire(bucket, COUNTER_TTL_S)
    if rejected:
        newest = sorted((_log_json(m) for m in rejected[-REJECTED_KEPT:]),
                        key=lambda m: m["ts"])
        pipe.lpush(k.console_rejected,
                   *[json.dumps(m, separators=(",", ":")) for m in newest])
        pipe.ltrim(k.console_rejected, 0, REJECTED_KEPT - 1)


class _Sender:
    """Runs the channel layer's coroutines on one event loop thread of its own, so that the
    (synchronous) ingest worker reuses the layer's Redis connections batch after batch."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._loop.is_closed():
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="console-live",
                                 daemon=True).start()
                self._loop = loop
            return self._loop

    def send(self, sends: list[tuple[str, dict[str, Any]]]) -> None:
        if not sends:
            return
        future = asyncio.run_coroutine_threadsafe(_group_send_all(sends), self._ensure_loop())
        try:
            future.result(SEND_TIMEOUT_S)
        except FutureTimeout:
            future.cancel()
            log.warning("console live update to %d devices took over %.0f s; dropped",
                        len(sends), SEND_TIMEOUT_S)


async def _group_send_all(sends: list[tuple[str, dict[str, Any]]]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    await asyncio.gather(*(layer.group_send(group, message) for group, message in sends))


sender = _Sender()
