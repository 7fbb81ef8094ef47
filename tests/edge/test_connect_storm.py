"""Connect storms (issue 11): the CONNECT timeout counts from the first byte read, the
listen backlog and accept batch are configurable, and timeouts/refusals reach /metrics."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport

from edge.metrics import listen_overflows
from edge.mqtt.broker import Broker, BrokerConfig
from edge.mqtt.codec import encode
from edge.mqtt.packets import Connect
from edge.mqtt.policy import BrokerHooks
from edge.mqtt.protocol import MqttProtocol
from edge.transports.lean import listen_lean


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
    samples = {(s[0], tuple(sorted(s[4].items()))): s[3] for s in broker.samples() if len(s) > 4}
    assert samples[("edge_connect_timeouts_total", (("phase", "silent"),))] == 1
    assert samples[("edge_connect_timeouts_total", (("phase", "connect"),))] == 0


def test_timeouts_from_the_environment() -> None:
    config = BrokerConfig.from_env(
        {"EDGE_CONNECT_TIMEOUT": "5", "EDGE_CONNECT_SILENT_TIMEOUT": "120"}
    )
    assert (config.connect_timeout, config.connect_silent_timeout) == (5.0, 120.0)


def test_backlog_and_accept_batch_from_the_environment() -> None:
    from edge.service import ConfigError, EdgeConfig

    base = {"REDIS_URL": "redis://127.0.0.1:6379/0", "DJANGO_SECRET_KEY": "k" * 50}
    config = EdgeConfig.from_env(base)
    assert (config.listen_backlog, config.accept_batch) == (4096, 256)
    config = EdgeConfig.from_env(
        {
            **base,
            "EDGE_LISTEN_BACKLOG": "8192",
            "EDGE_ACCEPT_BATCH": "64",
        }
    )
    assert (config.listen_backlog, config.accept_batch) == (8192, 64)
    for bad in ({"EDGE_LISTEN_BACKLOG": "0"}, {"EDGE_ACCEPT_BATCH": "x"}):
        with pytest.raises(ConfigError):
            EdgeConfig.from_env({**base, **bad})


@pytest.mark.e2e  # reads the listen queue with `ss`, a process
@pytest.mark.parametrize("reuse_port", [False, True])
def test_listen_backlog_is_applied(reuse_port: bool) -> None:
    """The listening socket's accept queue is the backlog asked for (Linux reports it as
    the Send-Q of a listening socket: ss -lnt), capped by somaxconn."""
    reactor = MemoryReactorClock()
    port = listen_lean(reactor, 0, Factory.forProtocol(Protocol), "127.0.0.1", 3000, reuse_port)
    number = port.getHost().port
    try:
        somaxconn = int(Path("/proc/sys/net/core/somaxconn").read_text())
        out = subprocess.run(
            ["ss", "-Hlnt", f"sport = :{number}"], capture_output=True, text=True, check=True
        ).stdout.split()
        assert int(out[2]) == min(3000, somaxconn)
    finally:
        port.stopListening()


def test_a_storm_is_accepted_in_batches() -> None:
    """Connections waiting in the accept queue are taken accept_batch per readable turn,
    whatever Twisted's adaptive count fell to after a quiet turn."""
    reactor = MemoryReactorClock()
    built: list[Protocol] = []

    class Counting(Factory):
        def buildProtocol(self, addr: object) -> Protocol:
            built.append(Protocol())
            return built[-1]

    port = listen_lean(reactor, 0, Counting(), "127.0.0.1", 1024, False, accept_batch=50)
    number = port.getHost().port
    clients = []
    try:
        clients.append(socket.create_connection(("127.0.0.1", number)))
        port.doRead()
        assert len(built) == 1
        assert port.numberAccepts == 50  # not 1 after a quiet turn
        clients += [socket.create_connection(("127.0.0.1", number)) for _ in range(120)]
        port.doRead()
        assert len(built) == 51
        assert port.numberAccepts == 70  # a full batch: more next turn
        port.doRead()
        assert len(built) == 121
        assert port.refused == {}
    finally:
        for client in clients:
            client.close()
        for protocol in built:
            assert protocol.transport is not None
            protocol.transport.abortConnection()
        port.stopListening()


def test_refused_accepts_are_counted() -> None:
    from edge.transports.lean import _AcceptCounter

    refused: dict[str, int] = {}
    counter = _AcceptCounter(refused)
    counter.info("EMFILE encountered; releasing reserved file descriptor.")
    counter.info("EMFILE recovery: Closed socket from {address}", address=("1.2.3.4", 5))
    counter.info("Could not accept new connection ({acceptError})", acceptError="ENOBUFS")
    assert refused == {"files": 1, "enobufs": 1}


def test_listen_overflows_from_proc(tmp_path: Any) -> None:
    netstat = tmp_path / "netstat"
    netstat.write_text(
        "TcpExt: SyncookiesSent ListenOverflows ListenDrops\n"
        "TcpExt: 0 17 19\n"
        "IpExt: InNoRoutes\nIpExt: 0\n"
    )
    assert listen_overflows(str(netstat)) == 17
    assert listen_overflows(str(tmp_path / "missing")) is None
