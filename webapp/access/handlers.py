"""How this app takes part in ingest (`webapp.telemetry.hooks`): devices registering
themselves."""

from __future__ import annotations

from typing import Any

from webapp.access import actions
from webapp.telemetry.hooks import on_uplink


@on_uplink("register")
def registrations(events: list[dict[str, Any]]) -> None:
    """`register` events (dynamic registration): create the device and answer it."""
    for event in events:
        actions.register_device(event)
