"""MQTT over plain TCP, the listening-socket helpers shared by every transport (stream and
datagram), and the per-transport connection counters reported on ``/metrics``."""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet.protocol import Factory
from twisted.python.failure import Failure

from edge.mqtt.broker import Broker
from edge.mqtt.protocol import MqttProtocol


def listen(
    reactor: Any,
    port: int,
    factory: Any,
    interface: str = "0.0.0.0",
    backlog: int = 1024,
    reuse_port: bool = False,
) -> Any:
    """Listen on ``interface:port``; with ``reuse_port`` the socket is made here with
    SO_REUSEPORT so that several processes share the port and the kernel spreads the
    incoming connections between them."""
    if not reuse_port:
        return reactor.listenTCP(port, factory, backlog=backlog, interface=interface)
    family = socket.AF_INET6 if ":" in interface else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((interface, port))
        sock.listen(backlog)
        sock.setblocking(False)
        # adoptStreamPort duplicates the descriptor; ours is closed below.
        return reactor.adoptStreamPort(sock.fileno(), family, factory)
    finally:
        sock.close()


def listen_datagram(
    reactor: Any, port: int, protocol: Any, interface: str = "0.0.0.0", reuse_port: bool = False
) -> Any:
    """Listen on UDP ``interface:port`` (CoAP, UDP devices); with ``reuse_port`` (several
    edge workers) the socket has SO_REUSEPORT, and the kernel keeps each client address on
    one worker, so its exchanges, budgets and mailbox stay on one."""
    if not reuse_port:
        return reactor.listenUDP(port, protocol, interface=interface)
    family = socket.AF_INET6 if ":" in interface else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((interface, port))
        sock.setblocking(False)
        return reactor.adoptDatagramPort(sock.fileno(), family, protocol)
    finally:
        sock.close()


class CountedMqttProtocol(MqttProtocol):
    """An MQTT protocol that keeps its factory's open-connection count.

    Slots for what Twisted sets on a protocol, so that no instance dictionary is made.
    """

    __slots__ = ("connected", "factory", "transport")
    factory: MqttTransportFactory

    def connectionMade(self) -> None:
        self.factory.opened()
        super().connectionMade()

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.factory.closed()
        super().connectionLost(reason)


class TransportCounter:
    """Open and total accepted connections of one transport."""

    __slots__ = ("accepted", "name", "open")

    def __init__(self, name: str) -> None:
        self.name = name
        self.open = 0
        self.accepted = 0


class MqttTransportFactory(Factory):
    """Builds MQTT protocols for one transport (``tcp`` or ``tls``) and counts them."""

    noisy = False
    protocol_class: type[CountedMqttProtocol] = CountedMqttProtocol

    def __init__(self, broker: Broker, counter: TransportCounter) -> None:
        self.broker = broker
        self.counter = counter

    def opened(self) -> None:
        self.counter.open += 1
        self.counter.accepted += 1

    def closed(self) -> None:
        self.counter.open -= 1

    def buildProtocol(self, addr: Any) -> CountedMqttProtocol:  # type: ignore[override]
        protocol = self.protocol_class(self.broker)
        protocol.factory = self
        return protocol
