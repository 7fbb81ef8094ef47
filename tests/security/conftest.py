"""Fixtures of the security tests: the edge beside the test's Django database, and paho
clients of it (tests/security/access_edge.py), and the rules tests' local HTTP `receiver`.
A test module may define its own `edge`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.edge.edge_process import Edge
from tests.rules.conftest import receiver  # noqa: F401  (a local HTTP receiver, the rules tests')
from tests.security.access_edge import Mqtt, mqtt_clients_of, webapp_edge
from tests.support.slow import starts_processes


@pytest.fixture
@starts_processes
def edge(transactional_db: Any, redis_url: str, redis_prefix: str, settings: Any
         ) -> Iterator[Edge]:
    """The edge on the test's Redis prefix, with webapp's registry published to it."""
    with webapp_edge(redis_url, redis_prefix, settings) as e:
        yield e


@pytest.fixture
def mqtt_clients(edge: Edge) -> Iterator[Callable[[str], Mqtt]]:
    with mqtt_clients_of(edge) as make:
        yield make
