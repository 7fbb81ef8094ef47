"""One device message through the ThingLinks layer, the same for every transport.

A message is named by who sent it (the authenticated device, or None), the device whose
namespace it is for (``/v1/devices/{device}/…`` on MQTT, the path of an HTTP or CoAP
request), the topic suffix (``datas``, ``events``, ``commandResponse``, ``shadow/update``,
``topo/add``…) and its payload bytes. It goes one way through:

1. **unwrap**: the envelope is checked and decrypted with the topic device's keys, and the
   body parsed (:func:`edge.codecs.thinglinks.read`);
2. **authorize**: every device the message names must exist, be usable (not locked, its
   product enabled) and be the topic device or one of its (or the sender's) sub-devices;
3. **validate** the values against each device's thing model;
4. **answer**: refused data gives the ``datasResponse`` payload for the device;
5. **emit** the uplink events, and the message log entry, to the bus.

The transport sends the answer back its own way (MQTT publishes it on
``/v1/devices/{device}/datasResponse``) and acknowledges the message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from edge.auth import refusal
from edge.bus.registry import DeviceRecord, ProductRecord
from edge.clock import now_ms
from edge.codecs import thinglinks as tl
from edge.deferreds import gather, then

from .interfaces import Clock, Directory, EventSink

log = Logger(namespace="edge")

Context = tl.DeviceContext | tl.DataError


@dataclass(slots=True)
class Handled:
    """What one device message came to (one per message: not frozen, which is several times
    slower to build)."""

    # The device whose namespace the message is in (its answer goes to that device).
    device: str
    # The payload to send back on ``datasResponse`` (refused data), or None.
    answer: bytes | None
    # The events emitted to the bus, the message log entry last.
    events: list[dict[str, Any]]
    # What was refused, each with its reason (``answer`` lists them too).
    errors: list[tl.DataError]
    # How many items (service reports, events, responses) landed.
    accepted: int
    # Fires once the bus stored ``events`` (a confirmed emission), else None.
    stored: Deferred[None] | None = None

    @property
    def rejected(self) -> bool:
        """Nothing landed and something was refused (MQTT answers 0x99 Payload format
        invalid)."""
        return bool(self.errors) and not self.accepted

    @property
    def reason(self) -> str | None:
        """The refusal in one line (the message log's reason), or None."""
        return tl.summarize(self.errors) if self.errors else None


class UplinkPipeline:
    """unwrap → authorize → validate → answer → emit, for messages of any transport."""

    def __init__(self, directory: Directory, sink: EventSink, clock: Clock) -> None:
        self.directory = directory
        self.sink = sink
        self.clock = clock

    def handle(
        self,
        sender: str | None,
        device: str,
        suffix: str,
        payload: bytes,
        confirmed: bool = False,
    ) -> Handled | Deferred[Handled]:
        """Process one message of ``sender`` for ``device`` on ``suffix``; ``confirmed``: the
        result waits until the bus stored its events (``Handled.stored``)."""
        # The topic device's record carries its envelope keys (no object per message).
        result: Any = then(
            self.directory.device(device),
            lambda record: self._unwrapped(
                tl.read(device, suffix, payload, record), sender, payload, confirmed
            ),
        )
        return result  # type: ignore[no-any-return]

    def _unwrapped(
        self, parsed: tl.Parsed, sender: str | None, payload: bytes, confirmed: bool
    ) -> Handled | Deferred[Handled]:
        contexts = gather(
            [self._authorize(name, parsed.device, sender) for name in sorted(parsed.devices)]
        )
        result: Any = then(
            contexts, lambda found: self._conclude(parsed, dict(found), payload, confirmed)
        )
        return result  # type: ignore[no-any-return]

    def _authorize(
        self, device: str, topic_device: str, sender: str | None
    ) -> tuple[str, Context] | Deferred[tuple[str, Context]]:
        """Whether the message may speak for ``device``, and its thing model when it may."""

        def from_record(record: DeviceRecord | None) -> Any:
            if record is None:
                return device, tl.DataError(
                    "unknown_device", f"device {device} does not exist", device
                )
            if device != topic_device and record.gateway not in (
                topic_device,
                sender or topic_device,
            ):
                reason = f"device {device} is not {topic_device} or one of its sub-devices"
                return device, tl.DataError("not_allowed", reason, device)
            if not record.product:
                return device, tl.DeviceContext(device, "", None, "the device has no product")

            def with_product(product: ProductRecord | None) -> tuple[str, Context]:
                # A locked device, or one of a disabled product, is refused here too: a
                # gateway must not report for a sub-device that could not connect itself.
                refused = refusal(record, product)
                if refused is not None:
                    return device, tl.DataError(refused[1], refused[2], device)
                return device, device_context(record, product)

            return then(self.directory.product(record.product), with_product)

        result: Any = then(self.directory.device(device), from_record)
        return result  # type: ignore[no-any-return]

    def _conclude(
        self, parsed: tl.Parsed, contexts: dict[str, Context], payload: bytes, confirmed: bool
    ) -> Handled:
        ts = now_ms(self.clock.seconds)
        outcome = tl.evaluate(parsed, contexts, ts)
        reason = tl.summarize(outcome.errors) if outcome.errors else None
        topic = tl.response_topic(parsed.device, parsed.suffix)
        events = [
            *outcome.events,
            tl.log_event(parsed.device, "up", topic, payload, not outcome.errors, reason, ts),
        ]
        if outcome.errors:
            log.info(
                "{device} {topic}: {reason}",
                device=parsed.device,
                topic=parsed.suffix,
                reason=reason,
            )
        stored = None
        if confirmed:
            stored = self.sink.emit_confirmed(events)
        else:
            self.sink.emit(*events)
        return Handled(
            parsed.device, outcome.response, events, outcome.errors, outcome.accepted, stored
        )


def device_context(record: DeviceRecord, product: ProductRecord | None) -> tl.DeviceContext:
    """What validation needs of a device: its product and the product's thing model."""
    if product is None:
        return tl.DeviceContext(
            record.identifier, record.product, None, f"unknown product {record.product}"
        )
    return tl.DeviceContext(record.identifier, record.product, product.model, product.model_error)
