"""How the device domain takes part in ingest (`webapp.telemetry.hooks`): command responses,
shadow requests, and what a device coming online receives (its waiting commands and its
shadow delta). They are registered by telemetry (`TelemetryConfig.ready`), not by the device
app, which sits below telemetry.

Handlers never raise for a device's bad input (that would leave the batch pending forever):
they answer the device with the reason. A database or Redis failure does raise, so the batch
is retried; every handler is idempotent."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from edge.codecs import thinglinks as tl
from webapp.devices import actions
from webapp.devices.models import Device
from webapp.telemetry.hooks import after_store, on_uplink

if TYPE_CHECKING:
    from webapp.telemetry.batch import Batch

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


def _command_mid(payload: str) -> int | None:
    """The command id (``head.mid``) of a logged command payload."""
    try:
        mid = json.loads(payload)["head"]["mid"]
    except (ValueError, KeyError, TypeError):
        return None
    return mid if isinstance(mid, int) else None


@after_store
def undelivered_commands(batch: Batch) -> None:
    """A command the edge could not deliver (no subscriber) goes back to pending."""
    mids = []
    for message in batch.messages:
        if (message.direction == "down" and message.result == "rejected"
                and message.topic.endswith("/command")):
            mid = _command_mid(message.payload)
            if mid is not None:
                mids.append(mid)
    actions.undelivered(mids)


@after_store
def commands_delivered_on_request(batch: Batch) -> None:
    """A command the edge kept for a device until it asked (a UDP device in queue mode: its
    first log line says it was queued, and it stays sent) went out: its response is waited
    for from then on."""
    sent_at = {}
    for message in batch.messages:
        if (message.direction == "down" and message.reason == tl.DELIVERED_ON_REQUEST
                and message.topic.endswith("/command")):
            mid = _command_mid(message.payload)
            if mid is not None:
                sent_at[mid] = message.ts
    if sent_at:
        actions.delivered(sent_at)


@after_store
def devices_online(batch: Batch) -> None:
    """A device (or gateway) that connected gets what waited for it."""
    online = sorted({str(e["dev"]) for e in batch.statuses if e.get("s") == "online"})
    if online:
        actions.dispatch_pending(online)
        actions.send_shadow_deltas(online)


def _devices(events: list[dict[str, Any]]) -> dict[str, Device]:
    wanted = {str(e.get("dev")) for e in events}
    return {d.identifier: d for d in Device.objects.select_related("product", "gateway")
            .filter(identifier__in=wanted)}


@on_uplink("shadow")
def shadow_requests(events: list[dict[str, Any]]) -> None:
    """``/shadow/get`` and ``/shadow/update`` from devices."""
    devices = _devices(events)
    for event in events:
        device = devices.get(str(event.get("dev")))
        if device is None:
            continue
        if event.get("op") == "get":
            actions.answer_shadow_get(device, event.get("mid"))
        elif event.get("op") == "update":
            actions.report_shadow(device, event.get("body"), int(event["ts"]), event.get("mid"))


@on_uplink("topo")
def topology_requests(events: list[dict[str, Any]]) -> None:
    """``/topo/add``, ``/delete``, ``/update``, ``/query`` from gateways."""
    devices = _devices(events)
    for event in sorted(events, key=lambda e: e.get("ts", 0)):
        device = devices.get(str(event.get("dev")))
        if device is not None:
            actions.handle_topology_request(device, str(event.get("op")), event.get("body"),
                                            int(event["ts"]), event.get("mid"))
