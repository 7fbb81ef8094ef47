"""A small Redis client for Twisted: RESP over a Protocol, replies parsed by ``hiredis``.

Commands are pipelined (each returns a Deferred, answered in order). The client reconnects
with a backoff; commands issued while it is disconnected wait for the next connection.
:class:`RedisSubscriber` holds a second connection in pub/sub mode.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import hiredis
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionLost
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

log = Logger(namespace="edge.redis")

Arg = str | bytes | int | float


class RedisError(Exception):
    """An error reply from the server."""


@dataclass(frozen=True, slots=True)
class RedisAddress:
    host: str = "127.0.0.1"
    port: int = 6379
    path: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, url: str) -> RedisAddress:
        """``redis://[[user]:password@]host[:port][/db]`` or ``unix:///path.sock[?db=N]``."""
        parts = urlsplit(url)
        query = parse_qs(parts.query)
        password = unquote(parts.password) if parts.password else None
        username = unquote(parts.username) if parts.username else None
        if parts.scheme == "unix":
            db = int(query.get("db", ["0"])[0])
            return cls(path=parts.path, db=db, username=username, password=password)
        if parts.scheme != "redis":
            raise ValueError(f"unsupported Redis URL scheme {parts.scheme!r}")
        db_text = parts.path.strip("/") or query.get("db", ["0"])[0]
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 6379,
            db=int(db_text),
            username=username,
            password=password,
        )

    def __str__(self) -> str:
        where = f"unix://{self.path}" if self.path else f"redis://{self.host}:{self.port}"
        return f"{where}/{self.db}"


def _arg(value: Arg) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    return str(value).encode()


def pack_command(args: Sequence[Arg]) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for value in args:
        raw = _arg(value)
        out.append(b"$%d\r\n" % len(raw))
        out.append(raw)
        out.append(b"\r\n")
    return b"".join(out)


class RespProtocol(Protocol):
    """One Redis connection; replies are matched to commands in order."""

    def __init__(self, on_push: Callable[[list[Any]], None] | None = None) -> None:
        self.reader = hiredis.Reader()
        self.pending: deque[Deferred[Any]] = deque()
        self.on_push = on_push
        self.ready: Deferred[RespProtocol] = Deferred()

    def connectionMade(self) -> None:
        self.ready.callback(self)

    def send(self, commands: Sequence[Sequence[Arg]]) -> list[Deferred[Any]]:
        deferreds: list[Deferred[Any]] = []
        for _ in commands:
            d: Deferred[Any] = Deferred()
            self.pending.append(d)
            deferreds.append(d)
        transport: Any = self.transport
        transport.write(b"".join(pack_command(c) for c in commands))
        return deferreds

    def dataReceived(self, data: bytes) -> None:
        self.reader.feed(data)
        while True:
            try:
                reply = self.reader.gets()
            except hiredis.ProtocolError:
                log.error("Redis protocol error; dropping the connection")
                _drop(self)
                return
            if reply is False:
                return
            if (
                self.on_push is not None
                and isinstance(reply, list)
                and reply
                and reply[0] in (b"message", b"pmessage")
            ):
                self.on_push(reply)
                continue
            if not self.pending:
                continue
            d = self.pending.popleft()
            if isinstance(reply, hiredis.ReplyError):
                d.errback(RedisError(str(reply)))
            else:
                d.callback(reply)

    def connectionLost(self, reason: Failure | None = None) -> None:
        pending, self.pending = self.pending, deque()
        for d in pending:
            d.errback(ConnectionLost("Redis connection lost"))


def _drop(proto: Protocol) -> None:
    transport: Any = proto.transport
    if transport is not None:
        transport.loseConnection()


class _Factory(ClientFactory):
    noisy = False

    def __init__(self, owner: RedisClient) -> None:
        self.owner = owner

    def buildProtocol(self, addr: Any) -> RespProtocol:
        proto = RespProtocol(self.owner.on_push)
        proto.factory = self
        proto.ready.addCallback(self.owner._connected)
        return proto

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        self.owner._lost(reason)

    def clientConnectionLost(self, connector: Any, reason: Failure) -> None:
        self.owner._lost(reason)


class RedisClient:
    """A reconnecting, pipelining Redis client."""

    max_backoff = 5.0

    def __init__(
        self,
        reactor: Any,
        address: RedisAddress,
        name: str = "redis",
        on_push: Callable[[list[Any]], None] | None = None,
        on_connect: Callable[[RedisClient], None] | None = None,
    ) -> None:
        self.reactor = reactor
        self.address = address
        self.name = name
        self.on_push = on_push
        self.on_connect = on_connect
        self.protocol: RespProtocol | None = None
        self._queued: list[tuple[Sequence[Arg], Deferred[Any]]] = []
        self._stopping = False
        self._backoff = 0.1
        self._retry: Any = None
        self._first: Deferred[None] = Deferred()
        self._connector: Any = None

    def start(self) -> Deferred[None]:
        """Connect; the Deferred fires on the first successful connection."""
        self._connect()
        return self._first

    def _connect(self) -> None:
        self._retry = None
        factory = _Factory(self)
        if self.address.path:
            self._connector = self.reactor.connectUNIX(self.address.path, factory, timeout=5)
        else:
            self._connector = self.reactor.connectTCP(
                self.address.host, self.address.port, factory, timeout=5
            )

    def _connected(self, proto: RespProtocol) -> None:
        setup: list[Sequence[Arg]] = []
        if self.address.password is not None:
            if self.address.username:
                setup.append(("AUTH", self.address.username, self.address.password))
            else:
                setup.append(("AUTH", self.address.password))
        if self.address.db:
            setup.append(("SELECT", self.address.db))
        for d in proto.send(setup) if setup else []:
            d.addErrback(self._setup_failed, proto)
        self.protocol = proto
        self._backoff = 0.1
        log.info("{name} connected to {address}", name=self.name, address=str(self.address))
        if self.on_connect is not None:
            self.on_connect(self)
        queued, self._queued = self._queued, []
        if queued:
            results = proto.send([args for args, _ in queued])
            for (_, waiting), result in zip(queued, results):
                result.chainDeferred(waiting)
        if not self._first.called:
            self._first.callback(None)

    def _setup_failed(self, failure: Failure, proto: RespProtocol) -> None:
        log.error(
            "{name}: Redis AUTH/SELECT failed: {error}",
            name=self.name,
            error=failure.getErrorMessage(),
        )
        _drop(proto)

    def _lost(self, reason: Failure) -> None:
        self.protocol = None
        if self._stopping:
            return
        log.warn(
            "{name}: Redis connection to {address} lost ({error}); retrying",
            name=self.name,
            address=str(self.address),
            error=reason.getErrorMessage(),
        )
        self._retry = self.reactor.callLater(self._backoff, self._connect)
        self._backoff = min(self._backoff * 2, self.max_backoff)

    @property
    def connected(self) -> bool:
        return self.protocol is not None

    def execute(self, *args: Arg) -> Deferred[Any]:
        return self.pipeline([args])[0]

    def pipeline(self, commands: Sequence[Sequence[Arg]]) -> list[Deferred[Any]]:
        if self._stopping:
            return [fail(ConnectionLost("Redis client stopped")) for _ in commands]
        if self.protocol is not None:
            return self.protocol.send(commands)
        waiting = []
        for args in commands:
            d: Deferred[Any] = Deferred()
            self._queued.append((args, d))
            waiting.append(d)
        return waiting

    def stop(self) -> Deferred[None]:
        self._stopping = True
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        queued, self._queued = self._queued, []
        for _, d in queued:
            d.errback(ConnectionLost("Redis client stopped"))
        proto = self.protocol
        if proto is None or proto.transport is None:
            if self._connector is not None:
                self._connector.disconnect()
            return succeed(None)
        done: Deferred[None] = Deferred()
        original = proto.connectionLost

        def lost(reason: Failure | None = None) -> None:
            original(reason)
            done.callback(None)

        proto.connectionLost = lost  # type: ignore[method-assign]
        _drop(proto)
        return done


class RedisSubscriber:
    """A pub/sub connection: subscribes to ``channels`` and calls ``on_message(channel, data)``.

    ``on_subscribed`` runs after every (re)subscription, when messages may have been missed.
    """

    def __init__(
        self,
        reactor: Any,
        address: RedisAddress,
        channels: Sequence[str],
        on_message: Callable[[bytes, bytes], None],
        on_subscribed: Callable[[], None] | None = None,
    ) -> None:
        self.channels = list(channels)
        self.on_message = on_message
        self.on_subscribed = on_subscribed
        self.client = RedisClient(
            reactor, address, "pubsub", on_push=self._push, on_connect=self._subscribe
        )

    def start(self) -> Deferred[None]:
        return self.client.start()

    def stop(self) -> Deferred[None]:
        return self.client.stop()

    def _subscribe(self, client: RedisClient) -> None:
        assert client.protocol is not None
        replies = client.protocol.send([("SUBSCRIBE", channel) for channel in self.channels])
        if replies and self.on_subscribed is not None:
            callback = self.on_subscribed
            replies[-1].addCallback(lambda _: callback())
        for reply in replies:
            reply.addErrback(lambda f: log.error("SUBSCRIBE failed: {e}", e=f.getErrorMessage()))

    def _push(self, reply: list[Any]) -> None:
        if reply[0] == b"message":
            self.on_message(reply[1], reply[2])
