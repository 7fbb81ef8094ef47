"""A small Redis client for Twisted: RESP over a Protocol, replies parsed by ``hiredis``.

Commands are pipelined (each returns a Deferred, answered in order). Each connection is kept
by Twisted's :class:`~twisted.application.internet.ClientService`, which reconnects with an
exponential backoff; commands issued while it is disconnected wait for the next connection.
:class:`RedisSubscriber` holds a second connection in pub/sub mode, and
:class:`RedisConnector` opens both: it is the real implementation of :mod:`edge.bus.client`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

import hiredis
from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet.defer import Deferred, DeferredList, fail
from twisted.internet.endpoints import TCP4ClientEndpoint, UNIXClientEndpoint
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IProtocolFactory
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from .client import Arg, RedisError

log = Logger(namespace="edge.redis")

# Reconnect after 0.1 s, then twice as long each time up to 5 s (the attempt count starts
# at 1). No jitter: the delays stay those the edge always had.
RETRY_POLICY = backoffPolicy(initialDelay=0.05, maxDelay=5.0, factor=2.0, jitter=lambda: 0.0)


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

    def __init__(
        self,
        on_push: Callable[[list[Any]], None] | None = None,
        on_made: Callable[[RespProtocol], None] | None = None,
        on_lost: Callable[[RespProtocol, Failure | None], None] | None = None,
    ) -> None:
        self.reader = hiredis.Reader()
        self.pending: deque[Deferred[Any]] = deque()
        self.on_push = on_push
        self.on_made = on_made
        self.on_lost = on_lost

    def connectionMade(self) -> None:
        if self.on_made is not None:
            self.on_made(self)

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
        # The client learns first, so that a command issued by an errback below waits for
        # the next connection instead of going to this one.
        if self.on_lost is not None:
            self.on_lost(self, reason)
        pending, self.pending = self.pending, deque()
        for d in pending:
            d.errback(ConnectionLost("Redis connection lost"))


def _drop(proto: Protocol) -> None:
    transport: Any = proto.transport
    if transport is not None:
        transport.loseConnection()


def _endpoint(reactor: Any, address: RedisAddress) -> Any:
    if address.path:
        return UNIXClientEndpoint(reactor, address.path, timeout=5)
    return TCP4ClientEndpoint(reactor, address.host, address.port, timeout=5)


class _Factory(Factory):
    noisy = False

    def __init__(self, owner: RedisClient) -> None:
        self.owner = owner

    def buildProtocol(self, addr: Any) -> RespProtocol:
        proto = RespProtocol(self.owner.on_push, self.owner._prepare, self.owner._lost)
        proto.factory = self
        return proto


class RedisClient:
    """A reconnecting, pipelining Redis client."""

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
        self._first: Deferred[None] = Deferred()
        self._service = ClientService(
            _endpoint(reactor, address),
            # mypy does not see zope's @implementer on Factory.
            cast(IProtocolFactory, _Factory(self)),
            retryPolicy=RETRY_POLICY,
            clock=reactor,
        )

    def start(self) -> Deferred[None]:
        """Connect; the Deferred fires on the first successful connection."""
        self._service.startService()
        return self._first

    def _prepare(self, proto: RespProtocol) -> None:
        """Authenticate and select the database before the connection carries commands. A
        connection that fails either is dropped, and made again after the backoff."""
        setup: list[Sequence[Arg]] = []
        if self.address.password is not None:
            if self.address.username:
                setup.append(("AUTH", self.address.username, self.address.password))
            else:
                setup.append(("AUTH", self.address.password))
        if self.address.db:
            setup.append(("SELECT", self.address.db))
        replies = proto.send(setup) if setup else []
        done = DeferredList(replies, fireOnOneErrback=True, consumeErrors=True)
        done.addCallbacks(
            lambda _: self._connected(proto), self._setup_failed, errbackArgs=(proto,)
        )

    def _connected(self, proto: RespProtocol) -> None:
        self.protocol = proto
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
            error=failure.value.subFailure.getErrorMessage(),
        )
        _drop(proto)

    def _lost(self, proto: RespProtocol, reason: Failure | None) -> None:
        if self.protocol is not proto:
            return
        self.protocol = None
        if self._stopping:
            return
        log.warn(
            "{name}: Redis connection to {address} lost ({error}); retrying",
            name=self.name,
            address=str(self.address),
            error=reason.getErrorMessage() if reason is not None else "closed",
        )

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
        """Close the connection (or stop trying to make one); commands still waiting fail."""
        self._stopping = True
        queued, self._queued = self._queued, []
        for _, d in queued:
            d.errback(ConnectionLost("Redis client stopped"))
        stopped: Deferred[None] = self._service.stopService()
        return stopped


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


class RedisConnector:
    """Opens Redis connections to one server (:class:`edge.bus.client.Connector`)."""

    def __init__(self, reactor: Any, address: RedisAddress) -> None:
        self.reactor = reactor
        self.address = address

    def client(self, name: str) -> RedisClient:
        return RedisClient(self.reactor, self.address, name)

    def subscriber(
        self,
        channels: Sequence[str],
        on_message: Callable[[bytes, bytes], None],
        on_subscribed: Callable[[], None] | None = None,
    ) -> RedisSubscriber:
        return RedisSubscriber(self.reactor, self.address, channels, on_message, on_subscribed)
