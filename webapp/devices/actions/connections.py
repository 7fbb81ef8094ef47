"""The connection history of devices and their "last seen" time, as ingest reports them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from django.db.models import Case, DateTimeField, F, Q, Value, When

from webapp.core.retention import delete_older_than
from webapp.devices.choices import ConnectStatus
from webapp.devices.models import Device, DeviceConnection

EVENTS = (ConnectStatus.ONLINE.value, ConnectStatus.OFFLINE.value)


def _text(value: Any, limit: int) -> str:
    return str(value)[:limit] if value else ""


def record_connections(events: Iterable[tuple[str, Mapping[str, Any]]]) -> int:
    """Keep the ``status`` events (with the stream entry / position each came in) in their
    devices' connection history, in one insert. Events of unknown devices are skipped, and
    a replayed entry adds no second row (its source is already there). Returns how many
    events were offered for a known device."""
    events = [(source, e) for source, e in events if e.get("s") in EVENTS]
    if not events:
        return 0
    ids = dict(Device.objects.filter(identifier__in={str(e.get("dev")) for _s, e in events})
               .values_list("identifier", "pk"))
    rows = [DeviceConnection(
        device_id=ids[str(e["dev"])], event=e["s"],
        at=datetime.fromtimestamp(int(e["ts"]) / 1000, tz=UTC),
        reason=_text(e.get("reason"), 32), address=_text(e.get("addr"), 64),
        node=_text(e.get("node"), 64),
        # Events written before the edge named the transport all came from MQTT.
        transport=_text(e.get("transport", "mqtt"), 8), source=source or None)
        for source, e in events if str(e.get("dev")) in ids]
    DeviceConnection.objects.bulk_create(rows, ignore_conflicts=True)
    return len(rows)


def touch_last_seen(seen: Mapping[str, datetime]) -> int:
    """Move the devices' "last seen" forward to the given times (never back), in one UPDATE.
    Returns the number of devices matched."""
    if not seen:
        return 0
    later = [When(Q(identifier=identifier) & (Q(last_seen__lt=moment)
                                              | Q(last_seen__isnull=True)),
                  then=Value(moment)) for identifier, moment in seen.items()]
    return Device.objects.filter(identifier__in=list(seen)).update(
        last_seen=Case(*later, default=F("last_seen"), output_field=DateTimeField()))


def expire_connections(days: int, chunk: int = 10_000) -> int:
    """Delete connection history older than `days` (0 keeps it), in chunks so no transaction
    grows large."""
    return delete_older_than(DeviceConnection, "at", days, chunk)
