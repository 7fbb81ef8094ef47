"""The Twisted side of an MQTT connection: it only moves bytes between a transport and the
sans-I/O :class:`~edge.mqtt.connection.MqttConnection`."""

from __future__ import annotations

from typing import Any

from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure

from .broker import Broker
from .connection import MqttConnection


def describe_peer(address: Any) -> str:
    host = getattr(address, "host", None)
    if host is None:
        return str(address)
    return f"{host}:{getattr(address, 'port', '')}"


class CongestionProducer:
    """The push producer a transport pauses when its send buffer is full: the MQTT
    connection is then congested, and QoS 0 messages to it are dropped instead of buffered
    without bound (edge.transports)."""

    connection: MqttConnection | None

    def pauseProducing(self) -> None:
        if self.connection is not None:
            self.connection.congested = True

    def resumeProducing(self) -> None:
        if self.connection is not None:
            self.connection.congested = False

    def stopProducing(self) -> None:
        return None


class MqttProtocol(CongestionProducer, Protocol):
    __slots__ = ("broker", "connection")

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.connection: MqttConnection | None = None

    def connectionMade(self) -> None:
        transport: Any = self.transport
        set_no_delay = getattr(transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            set_no_delay(True)
        # The lean transport's address tuple is shared, not formatted per connection.
        peer = getattr(transport, "peer_address", None)
        self.connection = MqttConnection(
            self.broker, peer if peer is not None else describe_peer(transport.getPeer()), transport
        )
        register = getattr(transport, "registerProducer", None)
        if register is not None:
            # The transport pauses us when its send buffer is full: QoS 0 messages to the
            # client are then dropped instead of buffered without bound (edge.transports).
            register(self, True)

    def dataReceived(self, data: bytes) -> None:
        assert self.connection is not None
        self.connection.data_received(data)
        self.broker.flush()

    def connectionLost(self, reason: Failure | None = None) -> None:
        if self.connection is not None:
            self.connection.connection_lost()
            self.broker.flush()

