"""Reading device data: telemetry ranges and aggregates, shadow, message log."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from django.utils import timezone

from webapp.core.errors import DomainError
from webapp.core.redis import get_redis, keys
from webapp.devices.models import Device, DeviceShadow
from webapp.telemetry.backends import SeriesQuery, get_backend

_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
MAX_BUCKETS = 100_000


def parse_interval(text: str) -> int:
    match = re.fullmatch(r"(\d+)(ms|s|m|h|d)", text)
    if not match:
        raise DomainError(f"invalid interval {text!r}; use e.g. 1s, 5m, 1h, 1d",
                          code="invalid_interval")
    value = int(match.group(1)) * _UNITS_MS[match.group(2)]
    if value < 1000 or value > 86_400_000:
        raise DomainError("the interval must be between 1s and 1d", code="invalid_interval")
    return value


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat().replace("+00:00", "Z")


def telemetry(device: Device, params: dict[str, Any]) -> dict[str, Any]:
    """`GET /api/v1/devices/{id}/telemetry/` (CONTRACT §4)."""
    end = params.get("end") or timezone.now() + timedelta(seconds=1)
    start = params.get("start") or end - timedelta(days=1)
    if start >= end:
        raise DomainError("start must be before end", code="invalid_range")
    properties = [p for p in (params.get("property") or "").split(",") if p]
    query = SeriesQuery(product=device.product, service=params["service"],
                        devices=[device.identifier], properties=properties,
                        start=_ms(start), end=_ms(end), limit=params.get("limit", 1000),
                        after=params.get("cursor"), descending=params.get("order") == "desc")
    backend = get_backend()
    if params.get("interval"):
        interval = parse_interval(params["interval"])
        if (query.end - query.start) // interval > MAX_BUCKETS:
            raise DomainError("too many intervals in the range; widen the interval",
                              code="invalid_interval")
        rows = backend.aggregate(query, interval, params.get("agg", "avg"))
    else:
        rows = backend.query(query)
    single = properties[0] if len(properties) == 1 else None
    results = []
    for row in rows:
        item: dict[str, Any] = {"ts": iso(row["ts"])}
        if single is not None:
            item["value"] = row.get(single)
        else:
            item.update({k: v for k, v in row.items() if k not in ("ts", "device")})
        results.append(item)
    body: dict[str, Any] = {"device": device.identifier, "service": params["service"],
                            "results": results, "next": None}
    if not params.get("interval") and len(rows) == query.limit:
        body["next"] = rows[-1]["ts"]
    return body


def shadow(device: Device) -> dict[str, Any]:
    """Desired, reported (latest values, from Redis when available) and their delta."""
    row, _ = DeviceShadow.objects.get_or_create(device=device)
    reported: dict[str, Any] = {}
    for service, values in (row.reported or {}).items():
        reported[service] = {p: dict(v) for p, v in values.items()}
    raw = get_redis().hgetall(keys().latest(device.identifier))
    for service, blob in raw.items():
        current = reported.setdefault(service.decode(), {})
        for prop, entry in json.loads(blob).items():
            if current.get(prop, {}).get("ts", 0) <= entry["ts"]:
                current[prop] = entry
    for values in reported.values():
        for entry in values.values():
            if isinstance(entry.get("ts"), int):
                entry["ts"] = iso(entry["ts"])
    desired = row.desired or {}
    delta: dict[str, Any] = {}
    for service, values in desired.items():
        for prop, wanted in values.items():
            have = reported.get(service, {}).get(prop, {}).get("value")
            if have != wanted:
                delta.setdefault(service, {})[prop] = wanted
    return {"device": device.identifier, "desired": desired, "reported": reported,
            "delta": delta, "version": row.version}
