"""The console's WebSocket: live values, status and log lines of one device
(`/ws/devices/{identifier}/`).

Only a signed-in user whose login is still valid, who may view devices and whose data scope
reaches the device gets in; the check is repeated every `live.RENEW_S` seconds (with the user
read again), so a revoked login, a lost permission or a device moved out of scope ends the
stream within that time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from webapp.console import live

# Close codes (4000-4999 are the application's): not signed in, not allowed or out of scope.
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403


def may_watch(user_id: int | None, session_id: Any, identifier: str) -> int | None:
    """None when the user may watch the device, else the close code to send."""
    from django.contrib.auth import get_user_model

    from webapp.console.access import devices_for
    from webapp.system import sessions

    if user_id is None:
        return CLOSE_UNAUTHENTICATED
    user = get_user_model().objects.filter(pk=user_id, is_active=True).first()
    if user is None or (session_id and not sessions.is_active(session_id)):
        return CLOSE_UNAUTHENTICATED
    if not user.has_perm("devices.view_device"):
        return CLOSE_FORBIDDEN
    if not devices_for(user).filter(identifier=identifier).exists():
        return CLOSE_FORBIDDEN
    return None


class ConsoleJsonConsumer(AsyncJsonWebsocketConsumer):
    """A JSON consumer that ignores the frames it cannot read (binary, not JSON, nested too
    deeply): Channels' own raises, which ends the consumer without `disconnect` — its
    renewing task and its groups would outlive the socket, one more for each such frame a
    page sends."""

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None,
                      **kwargs: Any) -> None:
        if not text_data:
            return
        try:
            content = json.loads(text_data)
        except (ValueError, RecursionError):
            return
        await self.receive_json(content, **kwargs)


class DeviceConsumer(ConsoleJsonConsumer):
    identifier: str
    group: str
    renewer: asyncio.Task | None = None

    async def connect(self) -> None:
        from webapp.system.signals import SESSION_ID

        self.identifier = self.scope["url_route"]["kwargs"]["identifier"]
        user = self.scope.get("user")
        self.user_id = user.pk if user is not None and user.is_authenticated else None
        session = self.scope.get("session")
        self.session_id = session.get(SESSION_ID) if session is not None else None
        refused = await database_sync_to_async(may_watch)(self.user_id, self.session_id,
                                                          self.identifier)
        if refused is not None:
            await self.close(code=refused)
            return
        self.group = live.group_name(self.identifier)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await sync_to_async(live.watch)(self.identifier)
        await self.accept()
        await self.send_json({"type": "hello", "device": self.identifier})
        self.renewer = asyncio.create_task(self._renew())

    async def disconnect(self, code: int) -> None:
        if self.renewer is not None:
            self.renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.renewer
        if getattr(self, "group", None):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if isinstance(content, dict) and content.get("type") == "ping":
            await self.send_json({"type": "pong"})

    async def device_update(self, event: dict[str, Any]) -> None:
        await self.send_json({"type": "update", **event["data"]})

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(live.RENEW_S)
            refused = await database_sync_to_async(may_watch)(self.user_id, self.session_id,
                                                              self.identifier)
            if refused is not None:
                await self.close(code=refused)
                return
            await sync_to_async(live.watch)(self.identifier)
