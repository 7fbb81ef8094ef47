"""Webapp's "disconnect this device now" (``kick:{identifier}`` on ``tl:registry``, docs/bus.md):
the device's MQTT connection is closed with 0x98, a device of another transport is dropped, both
go offline with reason ``kicked``, nothing cached changes, and the device may come back."""

from __future__ import annotations

from edge.bus.keys import Keys
from edge.bus.registry import Registry
from edge.mqtt.errors import Reason

from .test_thinglinks_endpoints import Stream, statuses
from .test_thinglinks_mqtt import Edge


def test_a_kicked_mqtt_device_goes_offline_with_the_reason_and_may_reconnect():
    edge = Edge()
    client = edge.client("d1", b"s3cret")
    other = edge.client("gw", b"s3cret", client_id="c2")
    edge.hooks.registry_changed("kick", "d1")
    assert client.closed and not other.closed
    assert Reason.ADMINISTRATIVE_ACTION in [getattr(p, "reason_code", None)
                                            for p in client.received()]
    offline = edge.events("status")[-1]
    assert (offline["dev"], offline["s"], offline["reason"]) == ("d1", "offline", "kicked")
    again = edge.client("d1", b"s3cret", client_id="c3")
    assert not again.closed


def test_a_kicked_device_of_another_transport_is_dropped():
    edge = Edge()
    stream = Stream()
    edge.hooks.endpoints.connect("d1", stream, "10.0.0.1:4000", "tcp")
    edge.hooks.registry_changed("kick", "d1")
    assert stream.closed and statuses(edge)[-1] == ("d1", "offline", "kicked")
    edge.hooks.registry_changed("kick", "nobody-here")  # not connected: nothing happens
    assert len(statuses(edge)) == 2


def test_the_registry_passes_a_kick_on_without_dropping_its_copies():
    seen: list[tuple[str, str]] = []
    registry = Registry(None, Keys("tl:"))  # type: ignore[arg-type]
    registry.on_change = lambda kind, identifier: seen.append((kind, identifier))
    registry.devices.drop = lambda identifier: seen.append(("dropped", identifier))  # type: ignore[method-assign]
    registry.changed(b"kick:d1")
    assert seen == [("kick", "d1")]
