"""Deleting old rows in chunks: retention tasks remove rows older than a number of days a few
thousand at a time, so no single transaction (or lock) grows with the table."""

from __future__ import annotations

from datetime import timedelta

from django.db.models import Model
from django.utils import timezone


def delete_older_than(model: type[Model], field: str, days: int, chunk: int = 10_000) -> int:
    """Delete the rows of ``model`` whose ``field`` is more than ``days`` old (0 keeps them
    all), ``chunk`` rows per statement; returns how many were deleted."""
    if not days:
        return 0
    older = {f"{field}__lt": timezone.now() - timedelta(days=days)}
    deleted = 0
    while True:
        ids = list(model._default_manager.filter(**older).values_list("pk", flat=True)[:chunk])
        if not ids:
            return deleted
        deleted += model._default_manager.filter(pk__in=ids).delete()[0]
