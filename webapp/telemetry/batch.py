"""The events ingest hands to the storage and to the hooks of other apps: one `Batch` per group
of stream entries, sorted by kind (`webapp.telemetry.hooks` passes it to `after_store`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from webapp.telemetry.backends import Point
from webapp.telemetry.choices import MessageResult
from webapp.telemetry.messagelog import LoggedMessage


@dataclass
class Batch:
    """The events of a group of stream entries, sorted by kind."""

    points: list[Point] = field(default_factory=list)
    messages: list[LoggedMessage] = field(default_factory=list)
    statuses: list[dict[str, Any]] = field(default_factory=list)
    # The status events again, each with the stream entry / position it came in (the key of
    # its connection history row).
    connections: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    others: list[dict[str, Any]] = field(default_factory=list)
    # Some entries were delivered before (a worker's own pending list after a restart, or
    # taken over from a dead worker): they may have been processed already, up to the XACK.
    redelivered: bool = False

    def add(self, event: dict[str, Any], source: str = "") -> None:
        kind = event.get("t")
        if kind == "data":
            ts = event.get("et") or event["ts"]
            self.points.append(Point(product=event["prod"], service=event["svc"],
                                     device=event["dev"], ts=int(ts),
                                     received=int(event["ts"]), values=event["v"]))
        elif kind == "log":
            self.messages.append(LoggedMessage(
                event["dev"][:64], datetime.fromtimestamp(event["ts"] / 1000, tz=UTC),
                event.get("dir", "up"), event.get("topic", "")[:255], event.get("payload", ""),
                MessageResult.ACCEPTED if event.get("ok") else MessageResult.REJECTED,
                event.get("reason") or "", source or None))
        elif kind == "status":
            self.statuses.append(event)
            self.connections.append((source, event))
        else:
            self.others.append(event)

    def seen(self) -> dict[str, int]:
        """When each device was last heard from in these events (ms): its newest uplink
        message or data point (the time it was received)."""
        latest: dict[str, int] = {}
        for point in self.points:
            if point.received > latest.get(point.device, 0):
                latest[point.device] = point.received
        for message in self.messages:
            if message.direction == "up":
                ms = int(message.ts.timestamp() * 1000)
                if ms > latest.get(message.device_identifier, 0):
                    latest[message.device_identifier] = ms
        return latest
