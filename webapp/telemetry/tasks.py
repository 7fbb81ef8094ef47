"""Telemetry housekeeping run by Celery beat (schedules in config/settings.py)."""

from __future__ import annotations

from celery import shared_task

from webapp.telemetry import actions


@shared_task(name="telemetry.persist_latest")
def persist_latest() -> int:
    """Latest values from Redis into the shadows' `reported`."""
    return actions.persist_latest()


@shared_task(name="telemetry.prepare_partitions")
def prepare_partitions() -> int:
    """Time-series partitions for today and the next two days."""
    return actions.prepare_partitions()


@shared_task(name="telemetry.refresh_rollups")
def refresh_rollups() -> int:
    """Rollups up to the last complete bucket."""
    return actions.refresh_rollups()


@shared_task(name="telemetry.apply_retention")
def apply_retention() -> dict[str, int]:
    """Raw points, rollups and device messages past their retention."""
    return actions.apply_retention()
