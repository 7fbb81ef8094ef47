"""Helpers of the products, devices and OTA security tests: a scoped operator's API client,
signed in as a real one is, and the edge's side of the bus driven by hand."""

from __future__ import annotations

from typing import Any

from edge.bus.keys import Keys
from tests.devices.conftest import Edge
from tests.system.conftest import PASSWORD, login
from webapp.telemetry.backends import get_backend
from webapp.telemetry.ingest import IngestWorker


def jwt_client(user: Any, password: str = PASSWORD) -> Any:
    """An APIClient holding a JWT of `user`, obtained through `POST /api/v1/auth/token/`."""
    from rest_framework.test import APIClient

    client = APIClient()
    response = login(client, user.username, password)
    assert response.status_code == 200, response.content
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {response.json()['access']}")
    return client


def bus_edge(redis_client: Any, redis_prefix: str) -> Edge:
    """What the edge does on the bus (routes, uplink events, downlink reads), by hand, with a
    real ingest worker on the test's Redis prefix (tests/devices/conftest.py)."""
    worker = IngestWorker(redis_client, Keys(redis_prefix), get_backend(), "test", block_ms=50)
    worker.ensure_group()
    return Edge(redis_client, redis_prefix, worker)
