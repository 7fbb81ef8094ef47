"""The lean TCP transport (edge.transports.lean) on a real socket pair, with a memory reactor
for registrations and time."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from twisted.internet import main
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionAborted, ConnectionDone
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure

from edge.transports.lean import HIGH_WATER, LeanServer


class Recorder(Protocol):
    def __init__(self) -> None:
        self.data: list[bytes] = []
        self.lost: list[Failure] = []

    def dataReceived(self, data: bytes) -> None:
        self.data.append(data)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.lost.append(reason)  # type: ignore[arg-type]


class Producer:
    def __init__(self) -> None:
        self.events: list[str] = []

    def pauseProducing(self) -> None:
        self.events.append("pause")

    def resumeProducing(self) -> None:
        self.events.append("resume")

    def stopProducing(self) -> None:
        self.events.append("stop")


@pytest.fixture
def pair() -> Any:
    server_sock, peer = socket.socketpair()
    server_sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    reactor = MemoryReactorClock()
    protocol = Recorder()
    transport = LeanServer(server_sock, protocol, ("10.1.2.3", 4567), None, 0, reactor)
    protocol.makeConnection(transport)
    yield transport, protocol, peer, reactor
    peer.close()
    server_sock.close()


def read_all(peer: socket.socket) -> bytes:
    peer.setblocking(False)
    chunks = []
    while True:
        try:
            chunk = peer.recv(65536)
        except BlockingIOError:
            return b"".join(chunks)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def test_write_goes_out_at_once_and_reads_reach_the_protocol(pair):
    """A write is sent without a reactor turn; received bytes go to dataReceived; the peer
    address is the accepted tuple."""
    transport, protocol, peer, reactor = pair
    assert transport in reactor.readers and transport not in reactor.writers
    transport.write(b"hello")
    assert read_all(peer) == b"hello"
    peer.sendall(b"world")
    assert transport.doRead() is None
    assert protocol.data == [b"world"]
    assert transport.getPeer() == IPv4Address("TCP", "10.1.2.3", 4567)


def test_unsent_bytes_are_buffered_then_drained_with_producer_flow_control(pair):
    """What the socket refuses waits in a buffer drained by doWrite; a registered producer is
    paused above the high-water mark and resumed once the buffer is empty."""
    transport, _, peer, reactor = pair
    producer = Producer()
    transport.registerProducer(producer, True)
    payload = bytes(range(256)) * (HIGH_WATER // 256 + 64)
    transport.write(payload)
    assert transport.buffered > 0 and transport in reactor.writers
    assert producer.events == ["pause"]
    received = b""
    while transport.buffered:
        received += read_all(peer)
        assert transport.doWrite() is None
    received += read_all(peer)
    assert received == payload
    assert transport not in reactor.writers
    assert producer.events == ["pause", "resume"]


def test_lose_connection_waits_for_the_buffer_and_reports_later(pair):
    """loseConnection stops reading, lets the buffer drain and reports connectionLost on a
    later turn, never inside the call."""
    transport, protocol, peer, reactor = pair
    transport.write(b"x" * (HIGH_WATER * 2))
    transport.loseConnection()
    assert transport not in reactor.readers and not protocol.lost
    result = None
    while result is None:
        read_all(peer)
        result = transport.doWrite()
    assert result is main.CONNECTION_DONE
    transport.connectionLost(Failure(result))
    assert len(protocol.lost) == 1 and transport.fileno() == -1


def test_lose_connection_without_buffer_and_abort(pair):
    """With nothing buffered the close is reported on the next turn; abort drops the
    buffer."""
    transport, protocol, peer, reactor = pair
    transport.loseConnection()
    assert not protocol.lost
    reactor.advance(0)
    assert protocol.lost[0].check(ConnectionDone)
    assert peer.recv(10) == b""  # the socket is closed


def test_abort_drops_buffered_data(pair):
    """abortConnection forgets what is buffered and closes on the next turn."""
    transport, protocol, _, reactor = pair
    transport.write(b"y" * (HIGH_WATER * 2))
    assert transport.buffered
    transport.abortConnection()
    assert transport.buffered == 0
    reactor.advance(0)
    assert protocol.lost[0].check(ConnectionAborted)
    transport.write(b"ignored")  # writes after the close are dropped silently


def test_end_of_stream_and_peer_reset(pair):
    """EOF from the peer ends the connection cleanly; a send to a closed peer is reported as
    a lost connection on the next turn."""
    transport, protocol, peer, reactor = pair
    peer.shutdown(socket.SHUT_WR)
    assert transport.doRead() is main.CONNECTION_DONE
    peer.close()
    for _ in range(3):
        transport.write(b"z" * 1000)
    reactor.advance(0)
    assert protocol.lost and transport.disconnected


def test_slow_subscriber_loses_qos0_not_memory_nor_qos1():
    """A subscriber that stops reading makes its transport pause the MQTT protocol: further
    QoS 0 messages to it are dropped (counted), the buffer stays near the high-water mark,
    QoS 1 still goes out, and QoS 0 flows again once the client reads."""
    from edge.mqtt.broker import Broker
    from edge.mqtt.codec import Decoder, encode
    from edge.mqtt.packets import MQTT_3_1_1, Connect, Publish, Subscribe
    from edge.mqtt.packets import Subscription as Sub
    from edge.transports.tcp import MqttTransportFactory, TransportCounter
    from tests.support.broker import FakeClient

    reactor = MemoryReactorClock()
    broker = Broker(reactor)
    factory = MqttTransportFactory(broker, TransportCounter("tcp"))
    server_sock, peer = socket.socketpair()
    server_sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    protocol = factory.buildProtocol(None)
    transport = LeanServer(server_sock, protocol, ("10.0.0.9", 1), None, 0, reactor)
    protocol.makeConnection(transport)
    peer.sendall(
        encode(Connect("slow", protocol_level=4), MQTT_3_1_1)
        + encode(Subscribe(1, (Sub("t/#", 1),)), MQTT_3_1_1)
    )
    transport.doRead()
    broker.flush()
    publisher = FakeClient(broker)
    publisher.connect("fast")
    payload = b"p" * 1000
    for _ in range(HIGH_WATER // 1000 + 200):
        publisher.send(Publish("t/0", payload, 0))
    assert protocol.connection.congested
    assert broker.stats["dropped"] > 0
    assert transport.buffered < HIGH_WATER + 2 * len(payload) + 100
    publisher.send(Publish("t/1", b"must arrive", 1, packet_id=7))
    received = b""
    while transport.buffered:
        received += read_all(peer)
        transport.doWrite()
    received += read_all(peer)
    assert not protocol.connection.congested
    publisher.send(Publish("t/2", b"flows again", 0))
    received += read_all(peer)
    packets = list(Decoder(MQTT_3_1_1).feed(received))
    topics = [p.topic for p in packets if isinstance(p, Publish)]
    assert "t/1" in topics and topics[-1] == "t/2"
    assert topics.count("t/0") + broker.stats["dropped"] == HIGH_WATER // 1000 + 200
    peer.close()
