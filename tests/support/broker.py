"""The MQTT broker in memory: a started broker on a clock the test moves, and clients on
StringTransports speaking through the codec."""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from edge.mqtt.broker import Broker, BrokerConfig
from edge.mqtt.codec import Decoder, encode
from edge.mqtt.packets import MQTT_3_1_1, ConnAck, Connect, Packet
from edge.mqtt.policy import BrokerHooks
from edge.mqtt.protocol import MqttProtocol


def make_broker(hooks: BrokerHooks | None = None, config: BrokerConfig | None = None
                ) -> tuple[Broker, Clock]:
    clock = Clock()
    broker = Broker(clock, hooks, config)
    broker.start()
    return broker, clock


class FakeClient:
    def __init__(
        self, broker: Broker, version: int = MQTT_3_1_1, port: int = 40000, host: str = "10.0.0.1"
    ) -> None:
        self.broker = broker
        self.version = version
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", host, port))
        self.protocol = MqttProtocol(broker)
        self.protocol.makeConnection(self.transport)
        self.decoder = Decoder(version)

    def send(self, *packets: Packet) -> None:
        self.send_bytes(b"".join(encode(p, self.version) for p in packets))

    def send_bytes(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def received(self) -> list[Packet]:
        self.broker.flush()
        data = self.transport.value()
        self.transport.clear()
        return list(self.decoder.feed(data))

    def connect(self, client_id: str = "c", **kwargs) -> ConnAck:
        self.send(Connect(client_id, protocol_level=self.version, **kwargs))
        packets = self.received()
        assert isinstance(packets[0], ConnAck), packets
        return packets[0]

    @property
    def closed(self) -> bool:
        return self.transport.disconnecting

    def drop(self) -> None:
        """The network connection breaks (no DISCONNECT)."""
        self.transport.loseConnection()
        self.protocol.connectionLost(None)
