"""Devices of the transports without MQTT subscriptions (edge.thinglinks.endpoints), in
memory: the downlink reaches their endpoint, a mailbox keeps commands for the next poll,
leases make such a device online and offline, and a locked device is dropped."""

from __future__ import annotations

from twisted.internet.defer import Deferred

from edge.thinglinks.endpoints import Downlink

from .test_thinglinks_mqtt import Edge
from .thinglinks_memory import device

COMMAND = b"/v1/devices/d1/command"


class Stream:
    """A connection endpoint (raw TCP after login) that records what it was given."""

    def __init__(self) -> None:
        self.sent: list[Downlink] = []
        self.closed = False

    def deliver(self, message: Downlink) -> str | None:
        self.sent.append(message)
        return None

    def close(self) -> None:
        self.closed = True


def statuses(edge: Edge) -> list[tuple[str, str, str | None]]:
    return [(e["dev"], e["s"], e.get("reason")) for e in edge.events("status")]


def test_a_connected_stream_gets_its_commands_and_presence_follows_the_connection():
    edge = Edge()
    stream = Stream()
    edge.hooks.endpoints.connect("d1", stream, "10.0.0.1:4000", "tcp")
    assert statuses(edge) == [("d1", "online", None)]
    edge.hooks.deliver_downlink({b"topic": COMMAND, b"payload": b'{"c":1}', b"qos": b"1"})
    assert stream.sent == [Downlink("command", b'{"c":1}')]
    assert edge.events("log")[-1]["ok"] is True

    newer = Stream()
    edge.hooks.endpoints.connect("d1", newer, "10.0.0.1:4001", "tcp")
    assert stream.closed and len(statuses(edge)) == 1  # the takeover keeps it online
    edge.hooks.endpoints.disconnect("d1", stream, "disconnect")  # the old one: nothing
    edge.hooks.endpoints.disconnect("d1", newer, "disconnect")
    assert statuses(edge)[-1] == ("d1", "offline", "disconnect")
    edge.hooks.deliver_downlink({b"topic": COMMAND, b"payload": b"{}"})
    assert edge.events("log")[-1]["reason"] == "no subscriber"


def test_a_mailbox_answers_a_waiting_poll_keeps_the_rest_and_bounds_them():
    edge = Edge()
    mailbox = edge.hooks.endpoints.touch("d1", "10.0.0.1:5000", "http")
    poll: Deferred[Downlink | None] = mailbox.wait(30)
    got: list[Downlink | None] = []
    poll.addCallback(got.append)
    edge.hooks.deliver_downlink({b"topic": COMMAND, b"payload": b"first"})
    assert got == [Downlink("command", b"first")]

    for n in range(mailbox.limit):
        edge.hooks.deliver_downlink({b"topic": COMMAND, b"payload": str(n).encode()})
    edge.hooks.deliver_downlink({b"topic": COMMAND, b"payload": b"one too many"})
    assert edge.events("log")[-1]["reason"] == "mailbox full"
    assert mailbox.take() == Downlink("command", b"0")

    empty = edge.hooks.endpoints.touch("d1", "10.0.0.1:5000", "http")
    assert empty is mailbox
    mailbox.take_all()
    waited: list[Downlink | None] = []
    mailbox.wait(30).addCallback(waited.append)
    edge.clock.advance(30)
    assert waited == [None]  # no command came: the poll ends empty


def test_a_lease_keeps_a_sessionless_device_online_until_it_falls_silent():
    edge = Edge()
    lease = edge.hooks.endpoints.lease
    edge.hooks.endpoints.touch("d1", "10.0.0.1:5000", "coap")
    edge.clock.advance(lease - 1)
    edge.hooks.endpoints.touch("d1", "10.0.0.1:5000", "coap")  # renewed
    edge.clock.advance(lease - 1)
    assert statuses(edge) == [("d1", "online", None)]
    edge.clock.advance(2)
    assert statuses(edge)[-1] == ("d1", "offline", "idle")
    assert "d1" not in edge.hooks.endpoints


def test_old_mailbox_entries_expire():
    edge = Edge()
    mailbox = edge.hooks.endpoints.touch("d1", "10.0.0.1:5000", "udp")
    edge.hooks.deliver_downlink({b"topic": COMMAND, b"payload": b"stale"})
    edge.clock.advance(mailbox.ttl + 1)
    assert mailbox.take() is None


def test_a_locked_or_deleted_device_is_dropped_with_the_reason():
    edge = Edge()
    poll_result: list[Downlink | None] = []
    edge.hooks.endpoints.touch("d1", "p", "http").wait(30).addCallback(poll_result.append)
    edge.directory.devices["d1"] = device("d1", status="locked")
    edge.hooks.registry_changed("dev", "d1")
    assert statuses(edge)[-1] == ("d1", "offline", "locked")
    assert poll_result == [None]

    stream = Stream()
    edge.hooks.endpoints.connect("s1", stream, "p", "tcp")
    del edge.directory.devices["s1"]
    edge.hooks.registry_changed("dev", "s1")
    assert stream.closed and statuses(edge)[-1] == ("s1", "offline", "deleted")
