"""What the ThingLinks layer needs of the world around it: the device registry, the uplink
stream and a clock (the broker's). :class:`edge.bus.registry.Registry`,
:class:`edge.bus.uplink.Uplink` and the reactor implement them; tests use in-memory ones."""

from __future__ import annotations

from typing import Any, Protocol

from twisted.internet.defer import Deferred

from edge.bus.registry import AppRecord, DeviceRecord, ProductRecord
from edge.mqtt.session import Clock

__all__ = ["Clock", "Directory", "EventSink"]


class Directory(Protocol):
    """Registry records by identifier: at once when cached, else a Deferred; None when the
    record does not exist."""

    def device(self, identifier: str) -> DeviceRecord | Deferred[DeviceRecord | None] | None: ...

    def product(self, identifier: str) -> ProductRecord | Deferred[ProductRecord | None] | None: ...

    def app(self, key_id: str) -> AppRecord | Deferred[AppRecord | None] | None: ...


class EventSink(Protocol):
    """Where uplink events go (the ``tl:up`` stream)."""

    def emit(self, *events: dict[str, Any]) -> None:
        """Queue ``events``; nobody waits for them to be stored."""
        ...

    def emit_confirmed(self, events: list[dict[str, Any]]) -> Deferred[None]:
        """Queue ``events``; fires once they are stored (a QoS 1/2 message is acknowledged
        only then)."""
        ...
