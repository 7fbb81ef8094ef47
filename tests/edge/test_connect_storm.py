"""Connect storms (issue 11): the CONNECT timeout counts from the first byte read, the
listen backlog and accept batch are configurable, and timeouts/refusals reach /metrics."""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport

from edge.mqtt.broker import Broker, BrokerConfig
from edge.mqtt.codec import encode
from edge.mqtt.packets import Connect
from edge.mqtt.policy import BrokerHooks
from edge.mqtt.protocol import MqttProtocol


def broker_on(reactor: MemoryReactorClock, **config: float) -> Broker:
    broker = Broker(reactor, BrokerHooks(), BrokerConfig(**config))  # type: ignore[arg-type]
    broker.start()
    return broker


def accept(broker: Broker, port: int = 40000) -> tuple[MqttProtocol, StringTransport]:
    transport = StringTransport(peerAddress=IPv4Address("TCP", "10.0.0.1", port))
    protocol = MqttProtocol(broker)
    protocol.makeConnection(transport)
    return protocol, transport


def closed(transport: StringTransport) -> bool:
    return bool(transport.disconnecting)


def test_queued_connection_is_not_timed_out_before_its_first_byte() -> None:
    """Accepted during a storm, its CONNECT read 30 s later: it is still served."""
    reactor = MemoryReactorClock()
    broker = broker_on(reactor, connect_timeout=10.0, connect_silent_timeout=60.0)
    protocol, transport = accept(broker)
    reactor.pump([1.0] * 30)
    assert not closed(transport)
    protocol.dataReceived(encode(Connect("dev-1", keep_alive=30)))
    assert transport.value()[:1] == b"\x20"  # CONNACK
    assert transport.value()[3:4] == b"\x00"
    reactor.pump([1.0] * 40)  # keep alive 30 s x 1.5 = 45 s, not yet
    assert not closed(transport)
    assert broker.connect_timeouts == {"connect": 0, "silent": 0}


def test_connect_timeout_counts_from_the_first_byte() -> None:
    """Half a CONNECT read at 30 s: closed connect_timeout after that byte, not before."""
    reactor = MemoryReactorClock()
    broker = broker_on(reactor, connect_timeout=10.0, connect_silent_timeout=60.0)
    protocol, transport = accept(broker)
    reactor.pump([1.0] * 30)
    packet = encode(Connect("dev-1", keep_alive=30))
    protocol.dataReceived(packet[:5])
    reactor.pump([1.0] * 9)
    assert not closed(transport)
    protocol.dataReceived(packet[5:7])  # more bytes do not move the deadline (slowloris)
    reactor.pump([1.0] * 3)
    assert closed(transport)
    assert broker.connect_timeouts == {"connect": 1, "silent": 0}


def test_silent_connection_is_closed_after_the_silent_timeout() -> None:
    reactor = MemoryReactorClock()
    broker = broker_on(reactor, connect_timeout=10.0, connect_silent_timeout=60.0)
    _, transport = accept(broker)
    reactor.pump([1.0] * 59)
    assert not closed(transport)
    reactor.pump([1.0] * 3)
    assert closed(transport)
    assert broker.connect_timeouts == {"connect": 0, "silent": 1}
    samples = {
        (s[0], tuple(sorted(s[4].items()))): s[3] for s in broker.samples() if len(s) > 4
    }
    assert samples[("edge_connect_timeouts_total", (("phase", "silent"),))] == 1
    assert samples[("edge_connect_timeouts_total", (("phase", "connect"),))] == 0


def test_timeouts_from_the_environment() -> None:
    config = BrokerConfig.from_env(
        {"EDGE_CONNECT_TIMEOUT": "5", "EDGE_CONNECT_SILENT_TIMEOUT": "120"}
    )
    assert (config.connect_timeout, config.connect_silent_timeout) == (5.0, 120.0)
