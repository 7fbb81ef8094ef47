"""The device WebSocket (`/ws/devices/{identifier}/`) through the real ASGI application, fed by
the real ingest worker: who may connect, what a batch pushes, and that ingest pushes only to
watched devices."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.conf import settings

from config.asgi import application
from tests.console.conftest import data_event, log_event, now_ms, status_event
from webapp.console import live

pytestmark = pytest.mark.django_db(transaction=True)


def headers_of(client=None, origin: bytes = b"http://testserver") -> list[tuple[bytes, bytes]]:
    headers = [(b"origin", origin)]
    if client is not None:
        cookie = client.cookies[settings.SESSION_COOKIE_NAME].value
        headers.append((b"cookie", f"{settings.SESSION_COOKIE_NAME}={cookie}".encode()))
    return headers


async def open_socket(path: str, headers) -> tuple[WebsocketCommunicator, bool, int | None]:
    communicator = WebsocketCommunicator(application, path, headers=headers)
    connected, code = await communicator.connect(timeout=10)
    if not connected:
        # The server's disconnect, as Daphne sends it after a close: the refused consumer ends
        # now instead of being cancelled when the test's event loop closes (asyncio.run then
        # waited for it for ever, now and then: make test-fast).
        await communicator.disconnect(timeout=5)
    return communicator, connected, code


def test_a_watcher_receives_values_status_and_log_lines_of_an_ingest_batch(world, client_of,
                                                                          ingest):
    """After the ingest worker stores a batch, the device's watchers get the new values,
    the status change and the log lines."""
    headers = headers_of(client_of(world.alice))

    async def scenario() -> None:
        socket, connected, _code = await open_socket("/ws/devices/dev-a1/", headers)
        assert connected
        assert await socket.receive_json_from(timeout=5) == {"type": "hello",
                                                             "device": "dev-a1"}
        ts = now_ms()
        await database_sync_to_async(ingest.send)(
            status_event("dev-a1", "online", ts - 10),
            data_event("dev-a1", "thermo-a", {"temperature": 23.5, "humidity": 41}, ts),
            log_event("dev-a1", False, "temperature=500 is above max 125", ts))
        update = await socket.receive_json_from(timeout=10)
        assert update["type"] == "update"
        assert update["points"] == [{"service": "env", "ts": ts,
                                     "values": {"temperature": 23.5, "humidity": 41}}]
        assert update["status"] == {"status": "online", "ts": ts - 10}
        [line] = update["logs"]
        assert line["result"] == "rejected" and "above max" in line["reason"]
        assert line["topic"] == "/v1/devices/dev-a1/datas"
        await database_sync_to_async(ingest.send)(
            data_event("dev-b1", "thermo-b", {"temperature": 1.0}))
        assert await socket.receive_nothing(timeout=0.5)  # another device's data
        await socket.disconnect()

    async_to_sync(scenario)()


@pytest.mark.parametrize(("who", "path", "origin", "code"), [
    (None, "/ws/devices/dev-a1/", b"http://testserver", 4401),
    ("nobody", "/ws/devices/dev-a1/", b"http://testserver", 4403),
    ("alice", "/ws/devices/dev-b1/", b"http://testserver", 4403),
    ("bob", "/ws/devices/dev-a1/", b"http://testserver", 4403),
    ("alice", "/ws/devices/no-such-device/", b"http://testserver", 4403),
    ("alice", "/ws/devices/dev-a1/", b"http://evil.example", None),
])
def test_sockets_are_refused_without_login_permission_scope_or_origin(world, client_of, who,
                                                                     path, origin, code):
    """Anonymous users, users without `devices.view_device`, devices of another department
    and pages of other sites are refused before the handshake completes."""
    client = client_of(getattr(world, who)) if who else None
    headers = headers_of(client, origin)

    async def scenario() -> None:
        _socket, connected, close_code = await open_socket(path, headers)
        assert not connected
        if code is not None:
            assert close_code == code

    async_to_sync(scenario)()
    assert not live.watched(["dev-a1", "dev-b1"])


def test_ingest_pushes_only_to_watched_devices(world, ingest, redis_client, redis_prefix):
    """A device nobody watches costs ingest one sorted-set lookup and no push; a watched one
    is pushed to; a lapsed watch stops the pushes."""
    group = live.group_name("dev-b1")

    async def scenario() -> None:
        layer = get_channel_layer()
        channel = await layer.new_channel()
        await layer.group_add(group, channel)
        await database_sync_to_async(ingest.send)(
            data_event("dev-b1", "thermo-b", {"temperature": 5.0}))
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(layer.receive(channel), 0.5)
        await sync_to_async(live.watch)("dev-b1")
        assert await sync_to_async(live.watched)(["dev-a1", "dev-b1"]) == ["dev-b1"]
        await database_sync_to_async(ingest.send)(
            data_event("dev-b1", "thermo-b", {"temperature": 6.0}))
        message = await asyncio.wait_for(layer.receive(channel), 5)
        assert message["type"] == "device.update"
        assert message["data"]["points"][0]["values"] == {"temperature": 6.0}
        await sync_to_async(redis_client.zadd)(f"{redis_prefix}console:watched",
                                               {"dev-b1": now_ms() - 1})
        await database_sync_to_async(ingest.send)(
            data_event("dev-b1", "thermo-b", {"temperature": 7.0}))
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(layer.receive(channel), 0.5)

    async_to_sync(scenario)()


def test_a_revoked_login_closes_the_socket(world, client_of, monkeypatch):
    """The consumer checks the login again while the socket is open: a forced logout by an
    administrator closes it."""
    from webapp.system import actions
    from webapp.system.models import LoginSession

    monkeypatch.setattr(live, "RENEW_S", 0.2)
    headers = headers_of(client_of(world.alice))

    async def scenario() -> None:
        socket, connected, _code = await open_socket("/ws/devices/dev-a1/", headers)
        assert connected
        await socket.receive_json_from(timeout=5)
        session = await database_sync_to_async(
            LoginSession.objects.filter(user=world.alice, revoked__isnull=True).get)()
        await database_sync_to_async(actions.force_logout)(acting_user=world.root,
                                                            session=session)
        closed = await socket.receive_output(timeout=5)
        assert closed == {"type": "websocket.close", "code": 4401}

    async_to_sync(scenario)()


def test_a_watch_is_renewed_while_the_socket_is_open(world, client_of, monkeypatch,
                                                     redis_client, redis_prefix):
    """The consumer renews its device's watch, so a long-open page keeps getting updates."""
    monkeypatch.setattr(live, "RENEW_S", 0.2)
    headers = headers_of(client_of(world.alice))

    async def scenario() -> None:
        socket, connected, _code = await open_socket("/ws/devices/dev-a1/", headers)
        assert connected
        await socket.receive_json_from(timeout=5)
        key = f"{redis_prefix}console:watched"
        await sync_to_async(redis_client.zadd)(key, {"dev-a1": now_ms() + 100})
        # Renewed every 0.2 s: wait until it is (up to 10 s on a loaded machine).
        for _ in range(100):
            await asyncio.sleep(0.1)
            score = await sync_to_async(redis_client.zscore)(key, "dev-a1")
            if score > now_ms() + live.WATCH_TTL_MS / 2:
                break
        assert score > now_ms() + live.WATCH_TTL_MS / 2
        await socket.disconnect()

    async_to_sync(scenario)()
