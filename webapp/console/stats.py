"""The dashboard's figures, each within the user's data scope.

Message counts and the latest rejections of the whole platform come from what the ingest hook
keeps in Redis (`webapp.console.live`): the message log has no index on time alone, and a
platform logs every message. A user who sees only part of the devices gets them from the log,
through its (device, time) index.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db.models import Count
from django.utils import timezone

from webapp.console import access
from webapp.core.redis import get_redis, keys
from webapp.devices.choices import ConnectStatus
from webapp.rules.choices import OPEN_ALARM_STATUSES, SEVERITY_RANK, Severity
from webapp.telemetry.choices import MessageResult

WINDOW_MINUTES = 60
LATEST_REJECTED = 10
# How far back a scoped user's latest rejections are looked for.
REJECTED_LOOKBACK = timedelta(days=1)


def device_counts(user: Any) -> dict[str, int]:
    rows = access.devices_for(user).order_by().values("connect_status").annotate(n=Count("pk"))
    counts = dict.fromkeys(ConnectStatus.values, 0)
    for row in rows:
        counts[row["connect_status"]] = row["n"]
    counts["total"] = sum(counts.values())
    return counts


def message_counts(user: Any) -> dict[str, int]:
    """Accepted and rejected device messages of the last hour."""
    counts = {MessageResult.ACCEPTED.value: 0, MessageResult.REJECTED.value: 0}
    if access.sees_everything(user):
        k = keys()
        minute = int(time.time()) // 60
        pipe = get_redis().pipeline(transaction=False)
        for m in range(minute - WINDOW_MINUTES + 1, minute + 1):
            pipe.hgetall(k.console_messages(m))
        for bucket in pipe.execute():
            for result, count in bucket.items():
                name = result.decode()
                if name in counts:
                    counts[name] += int(count)
        return counts
    since = timezone.now() - timedelta(minutes=WINDOW_MINUTES)
    rows = access.messages_for(user).filter(ts__gte=since).order_by().values(
        "result").annotate(n=Count("pk"))
    for row in rows:
        counts[row["result"]] = row["n"]
    return counts


def latest_rejected(user: Any) -> list[dict[str, Any]]:
    """The latest rejected messages: time, device, topic, reason, payload."""
    if access.sees_everything(user):
        raw = get_redis().lrange(keys().console_rejected, 0, LATEST_REJECTED - 1)
        rows = [json.loads(item) for item in raw]
        for row in rows:
            row["ts"] = datetime.fromtimestamp(row["ts"] / 1000, tz=UTC)
        return rows
    since = timezone.now() - REJECTED_LOOKBACK
    messages = access.messages_for(user).filter(
        result=MessageResult.REJECTED, ts__gte=since).order_by("-ts")[:LATEST_REJECTED]
    return [{"ts": m.ts, "device": m.device_identifier, "direction": m.direction,
             "topic": m.topic, "payload": m.payload[:500], "result": m.result,
             "reason": m.reason} for m in messages]


def alarm_counts(user: Any) -> list[dict[str, Any]]:
    """Open (active or acknowledged) alarms by severity, most severe first."""
    rows = access.alarms_for(user).filter(status__in=OPEN_ALARM_STATUSES).order_by().values(
        "severity").annotate(n=Count("pk"))
    found = {row["severity"]: row["n"] for row in rows}
    return [{"severity": value, "label": label, "count": found.get(value, 0)}
            for value, label in sorted(Severity.choices,
                                       key=lambda c: -SEVERITY_RANK.get(c[0], 0))]
