"""The edge as a process beside the test's Django database: webapp's actions publish the
registry (products, devices, API keys) under the test's Redis prefix after commit, and the
edge reads it from there, as in production. tests/security/conftest.py makes the `edge` and
`mqtt_clients` fixtures of them.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import paho.mqtt.client as mqtt

from tests.edge.edge_process import Client, Edge, running_edge


@contextmanager
def webapp_edge(redis_url: str, redis_prefix: str, settings: Any) -> Iterator[Edge]:
    """The edge reading the registry webapp publishes for this test (its Redis prefix,
    its secret key)."""
    with running_edge(redis_url, redis_prefix, {"DJANGO_SECRET_KEY": settings.SECRET_KEY}) as e:
        yield e


class Mqtt(Client):
    """A paho MQTT 5 client that also records PUBACK reason codes."""

    def __init__(self, edge: Edge, client_id: str) -> None:
        super().__init__(edge, client_id, mqtt.MQTTv5)
        self.acks: queue.Queue[int] = queue.Queue()
        self.client.on_publish = lambda _c, _u, _m, rc, _p: self.acks.put(int(rc.value))

    def quiet(self, seconds: float = 1.0) -> list[Any]:
        """What arrived within ``seconds`` (nothing, when the test expects silence)."""
        deadline = time.monotonic() + seconds
        got = []
        while (left := deadline - time.monotonic()) > 0:
            try:
                got.append(self.messages.get(timeout=left))
            except queue.Empty:
                break
        return got

    def disconnected(self, timeout: float = 10.0) -> int:
        """The reason code of the server's DISCONNECT (or of the lost connection)."""
        return int(self.disconnects.get(timeout=timeout).value)


@contextmanager
def mqtt_clients_of(edge: Edge) -> Iterator[Callable[[str], Mqtt]]:
    """A maker of MQTT 5 clients of ``edge``, all disconnected on the way out."""
    made: list[Mqtt] = []

    def make(client_id: str) -> Mqtt:
        made.append(Mqtt(edge, client_id))
        return made[-1]

    yield make
    for c in made:
        c.close()
