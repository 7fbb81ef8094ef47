from __future__ import annotations

from collections.abc import Iterator

import pytest

from .edge_process import Client
from .redis_server import redis_server


@pytest.fixture(scope="session")
def edge_redis_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """The session's Redis: the project-wide ``redis_url`` fixture when there is one."""
    try:
        shared = request.getfixturevalue("redis_url")
    except pytest.FixtureLookupError:
        shared = None
    if shared:
        yield shared
        return
    with redis_server() as url:
        yield url


@pytest.fixture
def clients() -> Iterator[list[Client]]:
    """paho clients made by a test, disconnected after it."""
    made: list[Client] = []
    yield made
    for client in made:
        client.close()
