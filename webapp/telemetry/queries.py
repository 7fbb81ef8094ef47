"""Reading device data for the API: raw ranges with cursor pagination, aggregates by interval
(computed by the database, read from rollups over long ranges), latest values and CSV export.

Devices reach these functions already resolved and permission-checked by the views.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.utils import timezone

from webapp.core.errors import DomainError
from webapp.core.redis import get_redis, keys
from webapp.core.spreadsheet import escape_cell
from webapp.core.timestamps import iso
from webapp.devices.models import Device
from webapp.products.models import Product
from webapp.telemetry.backends import Fill, SeriesQuery, get_backend
from webapp.telemetry.backends.base import CALENDAR_INTERVALS, calendar_boundaries
from webapp.telemetry.models import RetentionPolicy

_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
MAX_BUCKETS = 100_000
# Calendar buckets are bound one by one into the statement (two values each).
MAX_CALENDAR_BUCKETS = 1000
MAX_DEVICES = 100
EXPORT_PAGE = 5000


def parse_interval(text: str) -> int:
    match = re.fullmatch(r"(\d+)(ms|s|m|h|d)", text)
    if not match:
        raise DomainError(f"invalid interval {text!r}; use e.g. 1s, 5m, 1h, 1d",
                          code="invalid_interval")
    value = int(match.group(1)) * _UNITS_MS[match.group(2)]
    if value < 1000 or value > 86_400_000:
        raise DomainError("the interval must be between 1s and 1d", code="invalid_interval")
    return value


def parse_zone(name: str | None) -> ZoneInfo:
    """The IANA time zone a request names; when it names none, the zone active for the request
    (the signed-in user's own, else settings.TIME_ZONE)."""
    name = name or timezone.get_current_timezone_name()
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise DomainError(f"unknown time zone {name!r}; use an IANA name like Asia/Shanghai",
                          code="invalid_tz") from exc


def _local_iso(ms: int, zone: ZoneInfo) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=zone).isoformat()


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _rollups(product: Product) -> list[int]:
    policy = RetentionPolicy.objects.filter(product=product).first()
    return policy.rollup_intervals if policy else []


def _series_query(devices: Sequence[Device], params: dict[str, Any]) -> SeriesQuery:
    if not devices:
        raise DomainError("no device given", code="invalid_devices")
    if len(devices) > MAX_DEVICES:
        raise DomainError(f"at most {MAX_DEVICES} devices per query", code="invalid_devices")
    product = devices[0].product
    if any(d.product_id != product.pk for d in devices):
        raise DomainError("the devices of one query must share a product",
                          code="invalid_devices")
    end = params.get("end") or timezone.now() + timedelta(seconds=1)
    start = params.get("start") or end - timedelta(days=1)
    if start >= end:
        raise DomainError("start must be before end", code="invalid_range")
    properties = [p for p in (params.get("property") or "").split(",") if p]
    return SeriesQuery(product=product, service=params["service"],
                       devices=[d.identifier for d in devices], properties=properties,
                       start=_ms(start), end=_ms(end), limit=params.get("limit") or 1000,
                       after=params.get("cursor"), descending=params.get("order") == "desc",
                       rollups=_rollups(product))


def telemetry(device: Device | Sequence[Device], params: dict[str, Any]) -> dict[str, Any]:
    """`GET /api/v1/devices/{id}/telemetry/` (docs/telemetry.md), and the same for several devices
    (`GET /api/v1/telemetry/?devices=a,b`): raw points with a `next` cursor, or aggregates
    by `interval` with `agg` and `fill`."""
    devices = [device] if isinstance(device, Device) else list(device)
    query = _series_query(devices, params)
    backend = get_backend()
    next_cursor = None
    zone: ZoneInfo | None = None
    if params.get("interval"):
        calendar: list[int] = []
        if params["interval"] in CALENDAR_INTERVALS:
            zone = parse_zone(params.get("tz"))
            calendar = calendar_boundaries(query.start, query.end, params["interval"], zone)
            interval = 0
            buckets = (len(calendar) - 1) * len(devices)
            if len(calendar) - 1 > MAX_CALENDAR_BUCKETS:
                raise DomainError(f"at most {MAX_CALENDAR_BUCKETS} calendar intervals per "
                                  f"query; narrow the range", code="invalid_interval")
        else:
            interval = parse_interval(params["interval"])
            buckets = -(-(query.end - query.start) // interval) * len(devices)
        if buckets > MAX_BUCKETS:
            raise DomainError("too many intervals in the range; widen the interval",
                              code="invalid_interval")
        fill = Fill(params.get("fill") or "none", params.get("fill_value"))
        # Every interval of the range: a day at 1-minute averages is 1440 rows, not a page.
        whole = SeriesQuery(**{**_fields(query), "limit": buckets})
        rows = backend.aggregate(whole, interval, params.get("agg") or "avg", fill, calendar)
    else:
        if len(devices) > query.limit:
            raise DomainError("limit must be at least the number of devices",
                              code="invalid_limit")
        rows = backend.query(query)
        if len(rows) == query.limit:
            if len(devices) > 1:
                # Rows of one instant must not straddle two pages: the cursor is a time.
                last = rows[-1]["ts"]
                kept = [r for r in rows if r["ts"] != last]
                rows = kept or rows
            next_cursor = rows[-1]["ts"]
    single = query.properties[0] if len(query.properties) == 1 else None
    results = []
    for row in rows:
        # Calendar buckets start at a local midnight: shown with the zone's offset, and as
        # epoch milliseconds.
        item: dict[str, Any] = (
            {"ts": iso(row["ts"])} if zone is None
            else {"ts": _local_iso(row["ts"], zone), "ts_ms": row["ts"]})
        if len(devices) > 1:
            item["device"] = row["device"]
        if single is not None:
            item["value"] = row.get(single)
        else:
            item.update({k: v for k, v in row.items() if k not in ("ts", "device")})
        results.append(item)
    body: dict[str, Any] = {"service": query.service, "results": results, "next": next_cursor}
    if zone is not None:
        body["tz"] = zone.key
    if len(devices) == 1:
        body["device"] = devices[0].identifier
    else:
        body["devices"] = list(query.devices)
    return body


def _fields(query: SeriesQuery) -> dict[str, Any]:
    return {name: getattr(query, name) for name in SeriesQuery.__dataclass_fields__}


def latest(devices: Sequence[Device], service: str | None = None) -> dict[str, Any]:
    """Latest value of every property of each device: Redis (kept by ingest) first, the time
    series for what Redis lacks (e.g. after Redis lost its data)."""
    client = get_redis()
    pipe = client.pipeline(transaction=False)
    for device in devices:
        pipe.hgetall(keys().latest(device.identifier))
    backend = get_backend()
    results: dict[str, Any] = {}
    for device, raw in zip(devices, pipe.execute()):
        values: dict[str, dict[str, Any]] = {
            s.decode(): json.loads(blob) for s, blob in raw.items()}
        codes = [service] if service else list(
            device.product.services.values_list("code", flat=True))
        for code in codes:
            if code in values:
                continue
            found = backend.latest(SeriesQuery(product=device.product, service=code,
                                               devices=[device.identifier], properties=[],
                                               start=0, end=_ms(timezone.now()) + 1000))
            if found.get(device.identifier):
                values[code] = found[device.identifier]
        results[device.identifier] = {
            code: {p: {"value": e.get("value"), "ts": iso(int(e.get("ts", 0)))}
                   for p, e in props.items()}
            for code, props in sorted(values.items()) if not service or code == service}
    return {"results": results}


def export_csv(devices: Sequence[Device], params: dict[str, Any]) -> Iterator[str]:
    """CSV lines (`device,ts,<properties>`) of a range, read page by page so that any range
    streams in constant memory."""
    query = _series_query(devices, {**params, "limit": EXPORT_PAGE, "cursor": None,
                                    "order": "asc"})
    backend = get_backend()
    first = backend.query(SeriesQuery(**{**_fields(query), "limit": 1}))
    columns = [c for c in (first[0] if first else {}) if c not in ("device", "ts")] or list(
        query.properties)
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def flush() -> str:
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    writer.writerow(["device", "ts", *columns])
    yield flush()
    for device in query.devices:
        after = None
        while True:
            rows = backend.query(SeriesQuery(**{**_fields(query), "devices": [device],
                                                "after": after}))
            for row in rows:
                writer.writerow([device, iso(row["ts"]),
                                 *(_csv_value(row.get(c)) for c in columns)])
            yield flush()
            if len(rows) < query.limit:
                break
            after = rows[-1]["ts"]


def _csv_value(value: Any) -> Any:
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    # A device's text must not become a formula in the spreadsheet that opens the file;
    # numbers stay numbers (a negative temperature is written -3.5).
    return "" if value is None else escape_cell(value)
