"""Helpers of the devices security tests: the edge's side of the bus driven by hand."""

from __future__ import annotations

from typing import Any

from edge.bus.keys import Keys
from tests.devices.conftest import Edge
from webapp.telemetry.backends import get_backend
from webapp.telemetry.ingest import IngestWorker


def bus_edge(redis_client: Any, redis_prefix: str) -> Edge:
    """What the edge does on the bus (routes, uplink events, downlink reads), by hand, with a
    real ingest worker on the test's Redis prefix (tests/devices/conftest.py)."""
    worker = IngestWorker(redis_client, Keys(redis_prefix), get_backend(), "test", block_ms=50)
    worker.ensure_group()
    return Edge(redis_client, redis_prefix, worker)
