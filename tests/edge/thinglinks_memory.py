"""In-memory stand-ins for what the ThingLinks layer needs (edge.thinglinks.interfaces): a
registry of records and an uplink stream that records what was emitted."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed

from edge.bus.registry import AppRecord, DeviceRecord, ProductRecord
from edge.thingmodel import ThingModel

MODEL = ThingModel.from_json(
    {
        "services": {
            "env": {
                "properties": {
                    "temperature": {"datatype": "decimal", "min": -40, "max": 125},
                    "humidity": {"datatype": "int", "min": 0, "max": 100},
                },
                "events": {"overheat": {"params": {"level": {"datatype": "int"}}}},
            }
        }
    }
)


def device(identifier: str, **fields: Any) -> DeviceRecord:
    values: dict[str, Any] = {
        "product": "thermo",
        "secret": "s3cret",
        "status": "activated",
        "node_type": "direct",
        "gateway": "",
    }
    values.update(fields)
    return DeviceRecord(identifier, **values)


class Directory:
    """The registry as the pipeline sees it; ``deferred``: every answer comes later, as on
    a cache miss."""

    def __init__(self, *devices: DeviceRecord, deferred: bool = False) -> None:
        self.devices = {d.identifier: d for d in devices}
        self.products = {
            "thermo": ProductRecord("thermo", "direct", MODEL, None),
            "off": ProductRecord("off", "direct", MODEL, None, status="disabled"),
            "broken": ProductRecord("broken", "direct", None, "the thing model is invalid"),
        }
        self.apps: dict[str, AppRecord] = {}
        self.deferred = deferred

    def _answer(self, value: Any) -> Any:
        return succeed(value) if self.deferred else value

    def device(self, identifier: str) -> Any:
        return self._answer(self.devices.get(identifier))

    def product(self, identifier: str) -> Any:
        return self._answer(self.products.get(identifier))

    def app(self, key_id: str) -> Any:
        return self._answer(self.apps.get(key_id))


class Sink:
    """The uplink stream: what was emitted, and the confirmations still owed."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.pending: list[Deferred[None]] = []

    def emit(self, *events: dict[str, Any]) -> None:
        self.events.extend(events)

    def emit_confirmed(self, events: list[dict[str, Any]]) -> Deferred[None]:
        self.events.extend(events)
        d: Deferred[None] = Deferred()
        self.pending.append(d)
        return d
