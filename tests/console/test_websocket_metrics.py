"""thinglinks_websocket_consumers / _connections_total (docs/metrics.md): the real device
socket through the real ASGI application counts while it is open, and not when refused."""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync
from prometheus_client import REGISTRY

from tests.console.test_live import headers_of, open_socket

pytestmark = pytest.mark.django_db(transaction=True)


def gauge(name: str) -> float:
    return REGISTRY.get_sample_value(name, {"consumer": "device"}) or 0.0


def test_open_device_sockets_are_counted(world, client_of):
    headers = headers_of(client_of(world.alice))
    opened = gauge("thinglinks_websocket_consumers")
    accepted = gauge("thinglinks_websocket_connections_total")

    async def scenario() -> None:
        socket, connected, _code = await open_socket("/ws/devices/dev-a1/", headers)
        assert connected
        assert gauge("thinglinks_websocket_consumers") == opened + 1
        await socket.receive_json_from(timeout=5)
        await socket.disconnect()

    async_to_sync(scenario)()
    assert gauge("thinglinks_websocket_consumers") == opened
    assert gauge("thinglinks_websocket_connections_total") == accepted + 1

    async def refused() -> None:  # without a login: closed before it is accepted
        _socket, connected, _code = await open_socket("/ws/devices/dev-a1/", headers_of())
        assert not connected

    async_to_sync(refused)()
    assert gauge("thinglinks_websocket_connections_total") == accepted + 1
    assert gauge("thinglinks_websocket_consumers") == opened
