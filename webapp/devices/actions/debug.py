"""Debugging a device (the console's `/debug/` page, docs/console.md "Debugging").

- **publish** a message of the user's own to a device: appended to the downlink stream of the
  edge node holding it, as every message webapp sends (`webapp.devices.downlink`);
- **simulate** a message *from* a device: it goes through the edge's own uplink pipeline
  (`edge.thinglinks.uplink.UplinkPipeline`: envelope, authorization, thing-model validation),
  reading the same registry records from Redis, and its events are appended to the uplink
  stream as the edge appends them, so that ingest stores it like any device message;
- **disconnect** a device now (`kick:{identifier}` on `tl:registry`, docs/bus.md);
- **broadcast** one command to many devices through `send_command`.

Each is written to the operation log (who, which device, the topic and the payload's size,
never the payload). Callers check permissions and the data scope first.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from django.utils.translation import gettext as _
from twisted.internet import task

from edge import fastjson
from edge.bus.keys import UPLINK_MAXLEN
from edge.bus.registry import (
    AppRecord,
    DeviceRecord,
    ProductRecord,
    parse_device,
    parse_product,
)
from edge.codecs.thinglinks import REGISTER, SIMPLE_TOPICS
from edge.thinglinks.uplink import UplinkPipeline
from webapp.core.errors import Conflict, DomainError
from webapp.core.redis import get_redis, keys
from webapp.core.types import Actor
from webapp.devices import downlink
from webapp.devices.actions.commands import carrier, send_command
from webapp.devices.choices import CommandSource
from webapp.devices.models import Device, DeviceCommand
from webapp.system import oplog
from webapp.system.choices import OperationAction

# A debug message's payload, published or simulated (a device message is rarely larger; the
# message log keeps at most 4 KiB of it anyway).
MAX_PAYLOAD_BYTES = 64 * 1024
# Devices one broadcast reaches at most (more: narrow it with a device group).
MAX_BROADCAST_DEVICES = 200
QOS_LEVELS = (0, 1, 2)
# The topic suffixes a device's messages use (`/v1/devices/{id}/{suffix}`): what a simulated
# message may name. Registration needs a connection of its own and is not simulated.
SIMULATED_SUFFIXES = ("datas", "events", "commandResponse", *SIMPLE_TOPICS)
SUFFIX = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*(/[A-Za-z0-9_][A-Za-z0-9_.\-]*)*")
MAX_SUFFIX = 128


def check_suffix(suffix: str) -> str:
    """A topic suffix under the device's own `/v1/devices/{id}/`: plain levels, no
    wildcards, no empty or `..` level."""
    if (not suffix or len(suffix) > MAX_SUFFIX or not SUFFIX.fullmatch(suffix)
            or ".." in suffix.split("/")):
        raise DomainError(_("The topic suffix {suffix!r} is not valid: use levels of letters, "
                            "digits, '_', '-' and '.', separated by '/'.").format(
            suffix=suffix[:MAX_SUFFIX]), code="invalid_topic")
    return suffix


def check_payload(payload: bytes) -> bytes:
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise DomainError(_("The payload has {size} bytes; at most {max} are allowed.").format(
            size=len(payload), max=MAX_PAYLOAD_BYTES), code="payload_too_large")
    return payload


def _audit(device: Device, what: str, **details: Any) -> None:
    oplog.record(OperationAction.OTHER, device, after={"debug": what, **details})


def publish_message(*, device: Device, suffix: str, payload: bytes, qos: int = 1) -> str:
    """Send ``payload`` as is on ``/v1/devices/{identifier}/{suffix}`` to the connected
    device (its gateway's connection carries a sub-device's); returns the topic. Refused
    when the device is offline (nothing is kept for later)."""
    check_suffix(suffix)
    check_payload(payload)
    if qos not in QOS_LEVELS:
        raise DomainError(_("QoS must be 0, 1 or 2."), code="invalid_qos")
    node = downlink.route(carrier(device))
    if node is None:
        raise Conflict(_("Device {identifier} is offline: nothing was sent.").format(
            identifier=device.identifier), code="device_offline")
    topic = downlink.topic(device.identifier, suffix)
    downlink.publish(node, topic, payload, device=device.identifier, qos=qos)
    _audit(device, "publish", topic=topic, qos=qos, bytes=len(payload))
    return topic


@dataclass(frozen=True)
class Simulated:
    """What a simulated device message came to (what the edge would have decided)."""

    topic: str
    accepted: bool
    reason: str | None
    # Items (service reports, events, responses) that landed.
    landed: int
    # The `datasResponse` the device would have been sent, or None.
    answer: str | None


class _RegistryReader:
    """The edge's `Directory`, read synchronously from the registry hashes in Redis."""

    def __init__(self) -> None:
        self.redis = get_redis()
        self.keys = keys()

    @staticmethod
    def _flat(reply: dict[bytes, bytes]) -> list[bytes]:
        return [item for pair in reply.items() for item in pair]

    def device(self, identifier: str) -> DeviceRecord | None:
        return parse_device(identifier, self._flat(self.redis.hgetall(
            self.keys.device(identifier))), None)

    def product(self, identifier: str) -> ProductRecord | None:
        return parse_product(identifier, self._flat(self.redis.hgetall(
            self.keys.product(identifier))), None)

    def app(self, key_id: str) -> AppRecord | None:
        return None


class _UplinkWriter:
    """The edge's `EventSink`: the events go to the uplink stream in one entry, as the edge
    writes them (docs/bus.md "Uplink")."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def emit(self, *events: dict[str, Any]) -> None:
        self.events.extend(events)
        body, exact = fastjson.dumps_checked(list(events))
        fields: dict[str, Any] = {"b": body, "o": "1"} if exact else {"b": body}
        get_redis().xadd(keys().uplink, fields, maxlen=UPLINK_MAXLEN, approximate=True)

    def emit_confirmed(self, events: list[dict[str, Any]]) -> Any:
        self.emit(*events)
        return None


def _clock() -> task.Clock:
    """A clock at now (the pipeline only reads it, for the events' receive time)."""
    clock = task.Clock()
    clock.advance(time.time())
    return clock


def simulate_uplink(*, device: Device, suffix: str, payload: bytes) -> Simulated:
    """Handle ``payload`` as if ``device`` had published it on its own topic ``suffix``:
    validated like a real message, stored and logged (accepted or rejected) by ingest."""
    check_suffix(suffix)
    check_payload(payload)
    if suffix not in SIMULATED_SUFFIXES or suffix == REGISTER:
        raise DomainError(_("Only these topics can be simulated: {suffixes}.").format(
            suffixes=", ".join(SIMULATED_SUFFIXES)), code="invalid_topic")
    pipeline = UplinkPipeline(_RegistryReader(), _UplinkWriter(), _clock())
    handled: Any = pipeline.handle(device.identifier, device.identifier, suffix, payload)
    topic = downlink.topic(device.identifier, suffix)
    _audit(device, "simulate", topic=topic, bytes=len(payload),
           result="rejected" if handled.errors else "accepted")
    return Simulated(topic=topic, accepted=not handled.errors, reason=handled.reason,
                     landed=handled.accepted,
                     answer=handled.answer.decode("utf-8", "replace")
                     if handled.answer else None)


def disconnect_device(*, device: Device) -> bool:
    """End the device's connections now (the edge node holding it closes them, offline
    reason ``kicked``); returns whether it was online. It may connect again at once."""
    online = downlink.route(device.identifier) is not None
    get_redis().publish(keys().registry_channel, f"kick:{device.identifier}")
    _audit(device, "disconnect", online=online)
    return online


@dataclass
class BroadcastResult:
    device: Device
    command: DeviceCommand | None
    error: str = ""


def broadcast_command(*, acting_user: Actor, devices: list[Device], service: str,
                      command: str, params: dict[str, Any] | None) -> list[BroadcastResult]:
    """Send one command to each of ``devices`` (at most MAX_BROADCAST_DEVICES); a device that
    refuses it (locked, invalid for its model) gets its reason, the others a command each."""
    if len(devices) > MAX_BROADCAST_DEVICES:
        raise DomainError(_("A broadcast reaches at most {max} devices; this one would reach "
                            "{count}. Choose a device group.").format(
            max=MAX_BROADCAST_DEVICES, count=len(devices)), code="too_many_devices")
    results = []
    for device in devices:
        try:
            record = send_command(acting_user=acting_user, device=device, service=service,
                                  command=command, params=params, source=CommandSource.ADMIN)
        except DomainError as exc:
            results.append(BroadcastResult(device, None, str(exc.detail)))
        else:
            results.append(BroadcastResult(device, record))
    for result in results:
        _audit(result.device, "broadcast", command=f"{service}.{command}",
               sent=result.command is not None, devices=len(devices))
    return results
