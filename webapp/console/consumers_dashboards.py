"""The WebSocket of a custom dashboard (`/ws/dashboards/{pk}/`): live values of the devices its
widgets name.

As for the device page (`webapp.console.consumers.DeviceConsumer`), only a signed-in user whose
login is still valid, who may view dashboards and devices and whose data scope reaches the
dashboard gets in. The consumer joins the Channels group of each device of the layout that is
in the user's scope (`live.group_name`) and marks them watched (`live.watch`), so that ingest
pushes their new values. Every `live.RENEW_S` seconds it checks again (user, login,
permissions, scope, and the layout, which may have been edited): it renews the watches, joins
and leaves groups as the layout changed, and closes when the user may no longer look.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async

from webapp.console import live
from webapp.console.consumers import (
    CLOSE_FORBIDDEN,
    CLOSE_UNAUTHENTICATED,
    ConsoleJsonConsumer,
)

# At most this many devices are watched for one dashboard (a layout names at most
# MAX_WIDGETS widgets of MAX_WIDGET_DEVICES devices each).
MAX_WATCHED = 100


def devices_to_watch(user_id: int | None, session_id: Any, pk: int) -> tuple[int | None,
                                                                           list[str]]:
    """(None, the dashboard's devices in the user's scope) or (the close code, [])."""
    from django.contrib.auth import get_user_model

    from webapp.console import dashboards
    from webapp.console.access import devices_for
    from webapp.console.models import Dashboard
    from webapp.system import scope, sessions

    if user_id is None:
        return CLOSE_UNAUTHENTICATED, []
    user = get_user_model().objects.filter(pk=user_id, is_active=True).first()
    if user is None or (session_id and not sessions.is_active(session_id)):
        return CLOSE_UNAUTHENTICATED, []
    if not user.has_perms(["console.view_dashboard", "devices.view_device"]):
        return CLOSE_FORBIDDEN, []
    dashboard = scope.restrict(Dashboard.objects.all(), user).filter(pk=pk).first()
    if dashboard is None:
        return CLOSE_FORBIDDEN, []
    named = sorted(dashboards.layout_devices(dashboard.layout))[:MAX_WATCHED]
    reached = list(devices_for(user).filter(identifier__in=named).order_by(
        "identifier").values_list("identifier", flat=True))
    return None, reached


def watch_all(identifiers: list[str]) -> None:
    for identifier in identifiers:
        live.watch(identifier)


class DashboardConsumer(ConsoleJsonConsumer):
    pk: int
    devices: list[str]
    renewer: asyncio.Task | None = None

    async def connect(self) -> None:
        from webapp.system.signals import SESSION_ID

        self.pk = int(self.scope["url_route"]["kwargs"]["pk"])
        self.devices = []
        user = self.scope.get("user")
        self.user_id = user.pk if user is not None and user.is_authenticated else None
        session = self.scope.get("session")
        self.session_id = session.get(SESSION_ID) if session is not None else None
        refused, devices = await database_sync_to_async(devices_to_watch)(
            self.user_id, self.session_id, self.pk)
        if refused is not None:
            await self.close(code=refused)
            return
        await self._follow(devices)
        await self.accept()
        await self.send_json({"type": "hello", "dashboard": self.pk, "devices": self.devices})
        self.renewer = asyncio.create_task(self._renew())

    async def _follow(self, devices: list[str]) -> None:
        """Join the groups of `devices`, leave those of the devices no longer followed."""
        for gone in set(self.devices) - set(devices):
            await self.channel_layer.group_discard(live.group_name(gone), self.channel_name)
        for new in set(devices) - set(self.devices):
            await self.channel_layer.group_add(live.group_name(new), self.channel_name)
        self.devices = devices
        await sync_to_async(watch_all)(devices)

    async def disconnect(self, code: int) -> None:
        if self.renewer is not None:
            self.renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.renewer
        for device in getattr(self, "devices", []):
            await self.channel_layer.group_discard(live.group_name(device), self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if isinstance(content, dict) and content.get("type") == "ping":
            await self.send_json({"type": "pong"})

    async def device_update(self, event: dict[str, Any]) -> None:
        data = event["data"]
        # Only the devices followed (a group left a moment ago may still deliver one).
        if data.get("device") in self.devices:
            await self.send_json({"type": "update", **data})

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(live.RENEW_S)
            refused, devices = await database_sync_to_async(devices_to_watch)(
                self.user_id, self.session_id, self.pk)
            if refused is not None:
                await self.close(code=refused)
                return
            await self._follow(devices)
