"""Every change the telemetry app makes: retention policies, and the housekeeping that beat
runs (partitions ahead, rollups, retention, persisting latest values)."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

import redis
from django.conf import settings
from django.db import transaction

from edge import clock
from webapp.core.redis import get_redis, keys
from webapp.core.retention import delete_older_than
from webapp.devices import actions as device_actions
from webapp.devices.models import Device, DeviceShadow
from webapp.products.models import Product
from webapp.telemetry.backends import get_backend
from webapp.telemetry.models import DeviceMessage, RetentionPolicy

log = logging.getLogger(__name__)

DAY_MS = 86_400_000


# retention policies -----------------------------------------------------------------------

@transaction.atomic
def set_retention_policy(*, product: Product,
                         data: dict[str, Any]) -> RetentionPolicy:
    """Create or change the product's retention policy (`raw_days`, `rollups`,
    `rollup_days`); rollups start filling at the next beat run."""
    policy, _created = RetentionPolicy.objects.get_or_create(product=product)
    for field in ("raw_days", "rollups", "rollup_days"):
        if field in data:
            setattr(policy, field, data[field])
    policy.full_clean()
    policy.save()
    return policy


@transaction.atomic
def delete_retention_policy(*, policy: RetentionPolicy) -> None:
    """Back to keeping everything; existing rollup tables stay until dropped by hand."""
    policy.delete()


# housekeeping (Celery beat) -----------------------------------------------------------------

def prepare_partitions(days_ahead: int = 2) -> int:
    """Create the time-series storage of the coming days (PostgreSQL partitions)."""
    backend = get_backend()
    until = clock.now_ms() + days_ahead * DAY_MS
    return sum(backend.prepare_ahead(product, until) for product in Product.objects.all())


def refresh_rollups(now_ms: int | None = None) -> int:
    """Bring every product's rollups up to the last complete bucket."""
    backend = get_backend()
    now_ms = now_ms or clock.now_ms()
    lookback = int(settings.TELEMETRY_ROLLUP_LOOKBACK.total_seconds() * 1000)
    written = 0
    for policy in RetentionPolicy.objects.select_related("product").exclude(rollups=[]):
        intervals = policy.rollup_intervals
        if intervals:
            written += backend.refresh_rollups(policy.product, intervals, now_ms, lookback)
    return written


def apply_retention(now_ms: int | None = None) -> dict[str, int]:
    """Drop raw points and rollup buckets past their product's retention, device messages
    past `TELEMETRY_MESSAGE_DAYS` and connection history past `CONNECTION_HISTORY_DAYS`."""
    backend = get_backend()
    now_ms = now_ms or clock.now_ms()
    dropped = {"raw": 0, "rollups": 0, "messages": 0, "connections": 0}
    for policy in RetentionPolicy.objects.select_related("product"):
        if policy.raw_days:
            dropped["raw"] += backend.expire(policy.product, now_ms - policy.raw_days * DAY_MS)
        if policy.rollup_days and policy.rollup_intervals:
            dropped["rollups"] += backend.expire_rollups(
                policy.product, policy.rollup_intervals, now_ms - policy.rollup_days * DAY_MS)
    dropped["messages"] = expire_messages(settings.TELEMETRY_MESSAGE_DAYS)
    dropped["connections"] = device_actions.expire_connections(settings.CONNECTION_HISTORY_DAYS)
    return dropped


def expire_messages(days: int, chunk: int = 10_000) -> int:
    """Delete device messages older than `days`, in chunks so no transaction grows large."""
    return delete_older_than(DeviceMessage, "ts", days, chunk)


def persist_latest(chunk: int = 500) -> int:
    """Copy the latest values of the devices that changed into their shadow's `reported`.

    The dirty set is renamed before it is read, so values that change meanwhile mark the
    device again for the next run; a run that dies leaves the renamed set, which the next run
    finishes first. Returns the number of devices persisted.
    """
    client = get_redis()
    k = keys()
    working = f"{k.latest_dirty}:working"
    if not client.exists(working):
        try:
            client.rename(k.latest_dirty, working)
        except redis.ResponseError:  # no device changed
            return 0
    devices = sorted(d.decode() for d in client.smembers(working))
    persisted = 0
    for start in range(0, len(devices), chunk):
        persisted += _persist_devices(client, devices[start:start + chunk])
    client.delete(working)
    return persisted


def _persist_devices(client: redis.Redis, identifiers: Sequence[str]) -> int:
    pipe = client.pipeline(transaction=False)
    for identifier in identifiers:
        pipe.hgetall(keys().latest(identifier))
    latest = dict(zip(identifiers, pipe.execute()))
    with transaction.atomic():
        pks = dict(Device.objects.filter(identifier__in=identifiers)
                   .values_list("identifier", "pk"))
        shadows = {s.device_id: s for s in
                   DeviceShadow.objects.select_for_update().filter(device_id__in=pks.values())}
        changed: list[DeviceShadow] = []
        for identifier, pk in pks.items():
            shadow = shadows.get(pk) or DeviceShadow.objects.create(device_id=pk)
            reported = shadow.reported or {}
            dirty = False
            for service, blob in latest.get(identifier, {}).items():
                current = reported.setdefault(service.decode(), {})
                for prop, entry in json.loads(blob).items():
                    old = current.get(prop)
                    newer = not isinstance(old, dict) or old.get("ts", 0) <= entry.get("ts", 0)
                    if newer and old != entry:
                        current[prop] = entry
                        dirty = True
            if dirty:
                shadow.reported = reported
                changed.append(shadow)
        DeviceShadow.objects.bulk_update(changed, ["reported"])
    return len(pks)
