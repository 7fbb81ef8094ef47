"""The debug page's WebSocket (`/ws/debug/`): the message log lines of every device the user
may see, live, as ingest stores them (docs/console.md "Debugging").

All open debug sockets share one Channels group (`live.DEBUG_GROUP`); ingest pushes each
batch's lines to it only while one is open (`live.debug_watch`). Each socket keeps only the
lines of the devices in its user's data scope: an identifier it has not seen yet is looked up
in the scope (one query per batch for the new ones), and what it learnt is forgotten every
`live.RENEW_S` seconds, when the login, the permissions and the user are checked again — a
device moved out of scope stops showing within that time. The page's filters (product,
device, direction, result) are applied here too, so that a socket sends only what is shown.
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

PERMISSIONS = ("devices.view_device", "telemetry.view_devicemessage")
# Identifiers a socket remembers (in scope or not) before it starts again.
MAX_KNOWN = 20_000
FILTER_FIELDS = {"product": 64, "device": 64, "direction": 4, "result": 10}


def may_debug(user_id: int | None, session_id: Any) -> int | None:
    """None when the user may watch the debug stream, else the close code to send."""
    from django.contrib.auth import get_user_model

    from webapp.system import sessions

    if user_id is None:
        return CLOSE_UNAUTHENTICATED
    user = get_user_model().objects.filter(pk=user_id, is_active=True).first()
    if user is None or (session_id and not sessions.is_active(session_id)):
        return CLOSE_UNAUTHENTICATED
    if not user.has_perms(PERMISSIONS):
        return CLOSE_FORBIDDEN
    return None


def products_in_scope(user_id: int, identifiers: list[str]) -> dict[str, str | None]:
    """Each identifier → its product's identifier when the device is in the user's scope,
    else None."""
    from django.contrib.auth import get_user_model

    from webapp.console.access import devices_for

    user = get_user_model().objects.filter(pk=user_id, is_active=True).first()
    found: dict[str, str | None] = dict.fromkeys(identifiers)
    if user is None:
        return found
    found.update(devices_for(user).filter(identifier__in=identifiers)
                 .values_list("identifier", "product__identifier"))
    return found


def read_filters(content: dict[str, Any]) -> dict[str, str]:
    """The page's filters, as short strings (anything else is ignored)."""
    filters = {}
    for name, limit in FILTER_FIELDS.items():
        value = content.get(name)
        if isinstance(value, str) and value and len(value) <= limit:
            filters[name] = value
    return filters


def keep(line: dict[str, Any], product: str | None, filters: dict[str, str]) -> bool:
    if product is None:  # out of scope, or no such device
        return False
    if "product" in filters and filters["product"] != product:
        return False
    if "device" in filters and filters["device"] != line.get("device"):
        return False
    if "direction" in filters and filters["direction"] != line.get("direction"):
        return False
    return "result" not in filters or filters["result"] == line.get("result")


class DebugConsumer(ConsoleJsonConsumer):
    renewer: asyncio.Task | None = None
    joined = False

    async def connect(self) -> None:
        from webapp.system.signals import SESSION_ID

        user = self.scope.get("user")
        self.user_id = user.pk if user is not None and user.is_authenticated else None
        session = self.scope.get("session")
        self.session_id = session.get(SESSION_ID) if session is not None else None
        self.known: dict[str, str | None] = {}
        self.filters: dict[str, str] = {}
        refused = await database_sync_to_async(may_debug)(self.user_id, self.session_id)
        if refused is not None:
            await self.close(code=refused)
            return
        await self.channel_layer.group_add(live.DEBUG_GROUP, self.channel_name)
        self.joined = True
        await sync_to_async(live.debug_watch)(self.channel_name)
        await self.accept()
        await self.send_json({"type": "hello"})
        self.renewer = asyncio.create_task(self._renew())

    async def disconnect(self, code: int) -> None:
        if self.renewer is not None:
            self.renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.renewer
        if self.joined:
            await self.channel_layer.group_discard(live.DEBUG_GROUP, self.channel_name)
            await sync_to_async(live.debug_unwatch)(self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if not isinstance(content, dict):
            return
        if content.get("type") == "ping":
            await self.send_json({"type": "pong"})
        elif content.get("type") == "filter":
            self.filters = read_filters(content)
            await self.send_json({"type": "filter", "filters": self.filters})

    async def debug_lines(self, event: dict[str, Any]) -> None:
        lines = [line for line in event.get("lines", []) if isinstance(line, dict)]
        unknown = sorted({str(line.get("device")) for line in lines} - set(self.known))
        if unknown:
            if len(self.known) + len(unknown) > MAX_KNOWN:
                self.known = {}
            assert self.user_id is not None
            self.known.update(await database_sync_to_async(products_in_scope)(
                self.user_id, unknown))
        shown = []
        for line in lines:
            product = self.known.get(str(line.get("device")))
            if keep(line, product, self.filters):
                shown.append({**line, "product": product})
        if shown:
            await self.send_json({"type": "lines", "lines": shown})

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(live.RENEW_S)
            refused = await database_sync_to_async(may_debug)(self.user_id, self.session_id)
            if refused is not None:
                await self.close(code=refused)
                return
            self.known = {}
            await sync_to_async(live.debug_watch)(self.channel_name)
