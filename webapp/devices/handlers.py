"""How the device domain takes part in ingest (`webapp.telemetry.hooks`): command responses,
and what a device coming online receives (its waiting commands)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from webapp.devices import actions
from webapp.telemetry.hooks import after_store, on_uplink

if TYPE_CHECKING:
    from webapp.telemetry.ingest import Batch

log = logging.getLogger(__name__)


@on_uplink("cmdrsp")
def command_responses(events: list[dict[str, Any]]) -> None:
    """``/commandResponse``: complete the command whose id the device echoed as ``mid``."""
    for event in events:
        done = actions.complete_command(
            device=str(event.get("dev")), mid=event.get("mid"), service=event.get("svc"),
            command=event.get("cmd"), err=event.get("err"), params=event.get("params"),
            ts=event.get("ts"))
        if done is None:
            log.info("command response from %s (mid %s) matches no open command",
                     event.get("dev"), event.get("mid"))


@after_store
def devices_online(batch: Batch) -> None:
    """A device (or gateway) that connected gets what waited for it."""
    online = sorted({str(e["dev"]) for e in batch.statuses if e.get("s") == "online"})
    if online:
        actions.dispatch_pending(online)
