"""The socket Redis client (edge.bus.redis) on a memory reactor: connection setup, commands
waiting for a connection, and reconnection through ClientService with its backoff."""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionLost, ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from edge.bus.redis import RedisAddress, RedisClient, RedisConnector, pack_command


class Server:
    """Accepts the client's connection attempts on a memory reactor and answers by hand."""

    def __init__(self, reactor: MemoryReactorClock) -> None:
        self.reactor = reactor
        self.seen = 0
        self.transport: StringTransport | None = None
        self.protocol: Any = None

    def attempts(self) -> int:
        return len(self.reactor.tcpClients)

    def accept(self) -> StringTransport:
        host, port, factory, _timeout, _bind = self.reactor.tcpClients[self.seen]
        self.seen += 1
        self.protocol = factory.buildProtocol(IPv4Address("TCP", host, port))
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)
        return self.transport

    def refuse(self) -> None:
        _host, _port, factory, _timeout, _bind = self.reactor.tcpClients[self.seen]
        self.seen += 1
        factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))

    def sent(self) -> bytes:
        assert self.transport is not None
        data = self.transport.value()
        self.transport.clear()
        return data

    def reply(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def drop(self) -> None:
        self.protocol.connectionLost(Failure(ConnectionLost()))


def results(d: Any) -> list[Any]:
    out: list[Any] = []
    d.addBoth(out.append)
    return out


def test_setup_runs_first_and_queued_commands_follow():
    """AUTH and SELECT go out alone; the commands issued before the connection wait for
    them, then go out together; start() fires once the connection is usable."""
    reactor = MemoryReactorClock()
    client = RedisClient(reactor, RedisAddress.parse("redis://u:pw@10.0.0.9:6390/2"))
    started = results(client.start())
    early = results(client.execute("GET", "k"))
    server = Server(reactor)
    assert reactor.tcpClients[0][:2] == ("10.0.0.9", 6390)
    server.accept()
    assert server.sent() == pack_command(("AUTH", "u", "pw")) + pack_command(("SELECT", 2))
    assert not started and not client.connected
    server.reply(b"+OK\r\n+OK\r\n")
    assert started == [None] and client.connected
    assert server.sent() == pack_command(("GET", "k"))
    server.reply(b"$1\r\nv\r\n")
    assert early == [b"v"]


def test_a_lost_connection_is_made_again_after_a_growing_delay():
    """Commands in flight fail; new ones wait (even one issued as an in-flight one fails);
    the next attempt comes 0.1 s later, then 0.2, 0.4 s while the server refuses; a working
    connection resets the delay."""
    reactor = MemoryReactorClock()
    client = RedisConnector(reactor, RedisAddress()).client("test")
    client.start()
    server = Server(reactor)
    server.accept()
    retried: list[Any] = []

    def retry(failure: Failure) -> None:
        failure.trap(ConnectionLost)
        client.execute("PING").addBoth(retried.append)

    in_flight = results(client.execute("PING").addErrback(retry))
    server.drop()
    assert in_flight == [None] and retried == []
    assert not client.connected
    waiting = results(client.execute("INCR", "n"))

    for delay in (0.1, 0.2, 0.4):
        reactor.advance(delay - 0.01)
        assert server.attempts() == server.seen
        reactor.advance(0.01)
        assert server.attempts() == server.seen + 1
        if delay < 0.4:
            server.refuse()
    server.accept()
    assert client.connected
    assert server.sent() == pack_command(("PING",)) + pack_command(("INCR", "n"))
    server.reply(b"+PONG\r\n:1\r\n")
    assert (retried, waiting) == ([b"PONG"], [1])

    server.drop()
    reactor.advance(0.1)
    assert server.attempts() == server.seen + 1


def test_a_failed_setup_drops_the_connection_and_tries_again():
    reactor = MemoryReactorClock()
    client = RedisClient(reactor, RedisAddress(password="wrong"))
    started = results(client.start())
    server = Server(reactor)
    transport = server.accept()
    server.reply(b"-WRONGPASS invalid username-password pair\r\n")
    assert transport.disconnecting and not started and not client.connected
    server.drop()
    reactor.advance(0.1)
    server.accept()
    server.reply(b"+OK\r\n")
    assert started == [None]


def test_stop_fails_waiting_commands_and_ends_the_retries():
    reactor = MemoryReactorClock()
    client = RedisClient(reactor, RedisAddress())
    client.start()
    server = Server(reactor)
    server.refuse()
    waiting = results(client.execute("PING"))
    stopped = results(client.stop())
    assert stopped == [None]
    assert isinstance(waiting[0].value, ConnectionLost)
    reactor.advance(10)
    assert server.attempts() == 1
    assert isinstance(results(client.execute("PING"))[0].value, ConnectionLost)
