"""The platform's processes as they report themselves in Redis (process snapshots).

Every long-running process (web, ingest, Celery worker and beat, the edge supervisor) writes
its Prometheus text every ~10 s under ``{REDIS_PREFIX}proc:{role}:{host}:{pid}``
(``edge.snapshot``). ``list_processes()`` is what the monitoring page shows; ``snapshots()`` adds
each process's metrics text, which ``GET /metrics`` merges (docs/metrics.md).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from django.conf import settings

from edge.snapshot import SnapshotPublisher, read_snapshots
from webapp.core.redis import get_redis

_publishers: dict[str, SnapshotPublisher] = {}


def snapshots() -> list[dict[str, Any]]:
    """Every process snapshot in Redis with its ``metrics`` text, sorted by role, host, pid."""
    return read_snapshots(get_redis(), settings.REDIS_PREFIX)


def list_processes() -> list[dict[str, Any]]:
    """Every process that reported itself: ``role``, ``host``, ``pid``, ``started`` and
    ``updated`` (unix seconds), ``restarts`` and ``alive`` (reported within the last 30 s).
    A process that stopped reporting disappears 45 s after its last report."""
    return [{k: v for k, v in p.items() if k != "metrics"} for p in snapshots()]


def start_publisher(role: str, render: Callable[[], str] | None = None) -> SnapshotPublisher:
    """Publish this process's snapshot under ``role`` from now on (once per role and pid).
    ``render`` defaults to the process's prometheus-client registry (webapp.core.metrics)."""
    key = f"{role}:{os.getpid()}"
    publisher = _publishers.get(key)
    if publisher is None:
        if render is None:
            from webapp.core.metrics import render_own

            render = render_own
        publisher = SnapshotPublisher(role, render, get_redis, settings.REDIS_PREFIX)
        _publishers[key] = publisher.start()
    return publisher


def stop_publishers() -> None:
    """Write this process's snapshots one last time and stop publishing (at exit; a pool
    process of Celery exits through os._exit, without atexit)."""
    pid = os.getpid()
    for key, publisher in list(_publishers.items()):
        if key.endswith(f":{pid}"):
            publisher.stop()
            del _publishers[key]
