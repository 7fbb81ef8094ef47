"""The configured time-series backend (`TSDB_URL`: `sql` or a TDengine URL)."""

from __future__ import annotations

from functools import lru_cache

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from webapp.telemetry.backends.base import Fill, Point, SeriesQuery, TimeSeriesBackend

__all__ = ["Fill", "Point", "SeriesQuery", "TimeSeriesBackend", "get_backend"]


@lru_cache(maxsize=4)
def _backend(url: str) -> TimeSeriesBackend:
    if url in ("", "sql"):
        from webapp.telemetry.backends.sql import SQLBackend

        return SQLBackend()
    if url.split("://", 1)[0] in ("taosws", "taosrest", "taos", "ws", "wss", "http", "https"):
        from webapp.telemetry.backends.tdengine import TDengineBackend

        return TDengineBackend(url)
    raise ImproperlyConfigured(f"TSDB_URL: unknown time-series backend {url.split(':', 1)[0]!r}")


def get_backend() -> TimeSeriesBackend:
    return _backend(settings.TSDB_URL)
