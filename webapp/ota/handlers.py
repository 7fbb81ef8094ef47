"""How OTA takes part in ingest: the devices' OTA messages, and upgrades waiting for devices
that come online."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from webapp.devices.models import Device
from webapp.ota import actions
from webapp.telemetry.hooks import after_store, on_uplink

if TYPE_CHECKING:
    from webapp.telemetry.batch import Batch


@on_uplink("ota")
def ota_messages(events: list[dict[str, Any]]) -> None:
    """``/topo/otaCommandResponse``, ``otaPull``, ``otaReport``, ``otaReadResponse``."""
    wanted = {str(e.get("dev")) for e in events}
    devices = {d.identifier: d for d in Device.objects.select_related("product", "gateway")
               .filter(identifier__in=wanted)}
    for event in sorted(events, key=lambda e: e.get("ts", 0)):
        device = devices.get(str(event.get("dev")))
        if device is not None:
            actions.handle_message(device, str(event.get("op")), event.get("body"),
                                   int(event["ts"]), event.get("mid"))


@after_store
def upgrades_for_online_devices(batch: Batch) -> None:
    online = sorted({str(e["dev"]) for e in batch.statuses if e.get("s") == "online"})
    if online:
        actions.dispatch_for_devices(online)
