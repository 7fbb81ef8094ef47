"""A small Redis client for Twisted: RESP over a Protocol, replies parsed by ``hiredis``.

Commands are pipelined (each returns a Deferred, answered in order). Each connection is kept
by Twisted's :class:`~twisted.application.internet.ClientService`, which reconnects with an
exponential backoff; commands issued while it is disconnected wait for the next connection.
:class:`RedisSubscriber` holds a second connection in pub/sub mode, and
:class:`RedisConnector` opens both: it is the real implementation of :mod:`edge.bus.client`.

With a Sentinel URL (``redis+sentinel://``, :mod:`edge.bus.redis_url`) every connection,
first or again, asks the sentinels where the master is (:class:`SentinelEndpoint`, the next
sentinel when one does not answer), checks with ``ROLE`` that the server it reached is the
master, and is dropped, to be made again, on a ``-READONLY`` reply: each connection follows
the master across a failover (docs/bus.md, "Redis failover").

With ``rediss://`` (``rediss+sentinel://``: the sentinels too) every connection is TLS
(:mod:`edge.bus.redis_tls`), and counts as made once the handshake is done and the server has
answered; a failed handshake is logged with its reason, and the connection tried again.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, cast

import hiredis
from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet.defer import Deferred, DeferredList, fail, gatherResults
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    UNIXClientEndpoint,
)
from twisted.internet.error import ConnectError, ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IProtocolFactory, IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from .client import Arg, RedisError
from .redis_tls import material, over_tls, tls_failure
from .redis_url import RedisAddress

__all__ = [
    "RedisAddress",
    "RedisClient",
    "RedisConnector",
    "RedisSubscriber",
    "RespProtocol",
    "SentinelEndpoint",
    "pack_command",
]

log = Logger(namespace="edge.redis")

# Reconnect after 0.1 s, then twice as long each time up to 5 s (the attempt count starts
# at 1). No jitter: the delays stay those the edge always had.
RETRY_POLICY = backoffPolicy(initialDelay=0.05, maxDelay=5.0, factor=2.0, jitter=lambda: 0.0)
# Behind Sentinel a reconnection usually waits for a failover that takes a second or two:
# try again at least every second so that the edge is back soon after the promotion.
SENTINEL_RETRY_POLICY = backoffPolicy(
    initialDelay=0.05, maxDelay=1.0, factor=2.0, jitter=lambda: 0.0
)
# How long one sentinel may take to connect and answer before the next is asked.
SENTINEL_TIMEOUT = 2.0


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
        drop_on_readonly: bool = False,
    ) -> None:
        self.reader = hiredis.Reader()
        self.pending: deque[Deferred[Any]] = deque()
        self.on_push = on_push
        self.on_made = on_made
        self.on_lost = on_lost
        # Behind Sentinel a -READONLY reply means the server was demoted to a replica: the
        # connection is dropped so that the next one asks the sentinels for the new master.
        self.drop_on_readonly = drop_on_readonly

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
                text = str(reply)
                d.errback(RedisError(text))
                if self.drop_on_readonly and text.startswith("READONLY"):
                    log.warn("Redis answered READONLY (a demoted master); reconnecting")
                    _drop(self)
                    return
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
    if address.is_sentinel:
        return SentinelEndpoint(reactor, address)
    if address.path:
        return UNIXClientEndpoint(reactor, address.path, timeout=5)
    if address.tls is not None:
        return _tcp(reactor, address.host, address.port, 5, address)
    return TCP4ClientEndpoint(reactor, address.host, address.port, timeout=5)


def _tcp(
    reactor: Any, host: str, port: int, timeout: float, address: RedisAddress | None = None
) -> Any:
    """A TCP endpoint: IPv6 for an IPv6 literal, else IPv4 (a name is resolved); over TLS
    to ``host`` when ``address`` is a ``rediss`` one."""
    if ":" in host:
        endpoint: Any = TCP6ClientEndpoint(reactor, host, port, timeout=timeout)
    else:
        endpoint = TCP4ClientEndpoint(reactor, host, port, timeout=timeout)
    return over_tls(endpoint, address.tls if address is not None else None, host)


def _reason(exc: BaseException) -> str:
    sub = getattr(exc, "subFailure", None)
    if sub is not None:
        return str(sub.getErrorMessage())
    return str(exc) or exc.__class__.__name__


@implementer(IStreamClientEndpoint)
class SentinelEndpoint:
    """Connects to the master a set of sentinels names, asked again on every connection.

    The sentinels are asked in turn, starting with the one that answered last; one that is
    down, slow, refuses the password or does not know the master is skipped. ``master`` is
    the address of the last connection made.
    """

    def __init__(self, reactor: Any, address: RedisAddress, timeout: float = SENTINEL_TIMEOUT):
        self.reactor = reactor
        self.address = address
        self.timeout = timeout
        self.master: tuple[str, int] | None = None
        self._first = 0

    def connect(self, protocolFactory: Any) -> Deferred[Any]:
        return Deferred.fromCoroutine(self._connect(protocolFactory))

    async def _connect(self, factory: Any) -> Any:
        host, port = await self.resolve()
        self.master = (host, port)
        endpoint = _tcp(self.reactor, host, port, 5, self.address)
        return await endpoint.connect(factory)

    def resolve(self) -> Deferred[tuple[str, int]]:
        """The master's (host, port), as the first sentinel that knows it says."""
        return Deferred.fromCoroutine(self._resolve())

    async def _resolve(self) -> tuple[str, int]:
        sentinels = self.address.sentinels
        errors = []
        for step in range(len(sentinels)):
            index = (self._first + step) % len(sentinels)
            host, port = sentinels[index]
            try:
                reply = await self._ask(host, port)
            except Exception as exc:  # any failure: ask the next one
                errors.append(f"{host}:{port}: {tls_failure(exc) or _reason(exc)}")
                continue
            if not isinstance(reply, list) or len(reply) != 2:
                errors.append(f"{host}:{port}: does not know {self.address.master_name!r}")
                continue
            self._first = index
            return reply[0].decode(), int(reply[1])
        log.warn("no sentinel gave the master's address: {errors}", errors="; ".join(errors))
        raise ConnectError(string="no sentinel gave the master's address")

    async def _ask(self, host: str, port: int) -> Any:
        endpoint = _tcp(self.reactor, host, port, self.timeout, self.address)
        proto = await endpoint.connect(_QuietFactory())
        try:
            address = self.address
            commands: list[Sequence[Arg]] = []
            if address.sentinel_password is not None:
                if address.sentinel_username:
                    commands.append(
                        ("AUTH", address.sentinel_username, address.sentinel_password)
                    )
                else:
                    commands.append(("AUTH", address.sentinel_password))
            commands.append(("SENTINEL", "get-master-addr-by-name", address.master_name or ""))
            replies = gatherResults(proto.send(commands), consumeErrors=True)
            answers = await replies.addTimeout(self.timeout, self.reactor)
            return answers[-1]
        finally:
            _drop(proto)


@implementer(IStreamClientEndpoint)
class _BackingOff:
    """The client's endpoint, which waits before connecting after connections lost before
    they were usable: ClientService's backoff starts again at every TCP connection, and would
    make a connection that fails its TLS handshake ten times a second."""

    def __init__(self, client: RedisClient, endpoint: Any) -> None:
        self.client = client
        self.endpoint = endpoint

    def connect(self, protocolFactory: Any) -> Deferred[Any]:
        failures = self.client._early_failures
        if not failures:
            return cast("Deferred[Any]", self.endpoint.connect(protocolFactory))
        delay = self.client._policy(failures)
        return deferLater(self.client.reactor, delay, self.endpoint.connect, protocolFactory)


class _QuietFactory(Factory):
    """One plain connection, without the log lines of Twisted's ``connectProtocol``."""

    noisy = False
    protocol = RespProtocol


class _Factory(Factory):
    noisy = False

    def __init__(self, owner: RedisClient) -> None:
        self.owner = owner

    def buildProtocol(self, addr: Any) -> RespProtocol:
        proto = RespProtocol(
            self.owner.on_push,
            self.owner._prepare,
            self.owner._lost,
            drop_on_readonly=self.owner.address.is_sentinel,
        )
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
        endpoint: Any = None,
        group: SentinelGroup | None = None,
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
        # The connection this client dropped during its setup (its loss is no news).
        self._given_up: RespProtocol | None = None
        if address.tls is not None:
            material(address.tls)  # unreadable TLS files: a ValueError now, not at each retry
        self.endpoint = endpoint if endpoint is not None else _endpoint(reactor, address)
        # The connections of one connector behind Sentinel, which +switch-master moves.
        self.group = group
        sentinel = address.is_sentinel or endpoint is not None
        self._policy = SENTINEL_RETRY_POLICY if sentinel else RETRY_POLICY
        # Connections lost in a row before they were usable (a failed TLS handshake...).
        self._early_failures = 0
        self._service = ClientService(
            # mypy does not see zope's @implementer (on Factory either).
            cast(IStreamClientEndpoint, _BackingOff(self, self.endpoint)),
            cast(IProtocolFactory, _Factory(self)),
            retryPolicy=self._policy,
            clock=reactor,
        )

    def start(self) -> Deferred[None]:
        """Connect; the Deferred fires on the first successful connection."""
        self._service.startService()
        if self.group is not None:
            self.group.started(self)
        return self._first

    def drop(self) -> None:
        """Close the connection, to be made again (to wherever the sentinels say)."""
        if self.protocol is not None:
            _drop(self.protocol)

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
        if self.address.is_sentinel:
            # The sentinels may still name a master that was just demoted (or may have been
            # asked while a failover was under way): connect only to a server that is master.
            setup.append(("ROLE",))
        elif not setup and self.address.tls is not None:
            # Over TLS the connection is usable once the handshake is done: the answer shows it.
            setup.append(("PING",))
        replies = proto.send(setup) if setup else []
        done = DeferredList(replies, fireOnOneErrback=True, consumeErrors=True)
        done.addCallbacks(self._set_up, self._setup_failed, (proto,), errbackArgs=(proto,))

    def _set_up(self, results: list[tuple[bool, Any]], proto: RespProtocol) -> None:
        if self.address.is_sentinel:
            role = results[-1][1]
            if not (isinstance(role, list) and role and role[0] == b"master"):
                log.warn(
                    "{name}: {where} is not the master ({role}); asking the sentinels again",
                    name=self.name,
                    where=self._where(),
                    role=role[0].decode() if isinstance(role, list) and role else role,
                )
                self._given_up = proto
                _drop(proto)
                return
        self._connected(proto)

    def _where(self) -> str:
        sentinel = getattr(self.endpoint, "sentinel", None)
        if sentinel is not None:
            return f"sentinel {sentinel[0]}:{sentinel[1]}"
        master = getattr(self.endpoint, "master", None)
        if master is None:
            return str(self.address)
        return f"{self.address} (master {master[0]}:{master[1]})"

    def _connected(self, proto: RespProtocol) -> None:
        self.protocol = proto
        self._early_failures = 0
        log.info("{name} connected to {address}", name=self.name, address=self._where())
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
        if failure.value.subFailure.check(ConnectionLost):
            return  # the connection went first: _lost said why
        log.error(
            "{name}: Redis AUTH/SELECT/ROLE failed: {error}",
            name=self.name,
            error=failure.value.subFailure.getErrorMessage(),
        )
        self._given_up = proto
        _drop(proto)

    def _lost(self, proto: RespProtocol, reason: Failure | None) -> None:
        if self.protocol is not proto:
            if proto is self._given_up:
                self._given_up = None
            elif not self._stopping and reason is not None:
                self._lost_early(reason)
            return
        self.protocol = None
        if self._stopping:
            return
        log.warn(
            "{name}: Redis connection to {address} lost ({error}); retrying",
            name=self.name,
            address=self._where(),
            error=reason.getErrorMessage() if reason is not None else "closed",
        )

    def _lost_early(self, reason: Failure) -> None:
        """A connection lost before it was usable (not dropped by this client for a failed
        AUTH/SELECT/ROLE): why, each time, as plainly as possible: a failed TLS handshake (a
        wrong CA, a certificate for another name, a server without TLS), a server that
        closed it unasked (a TLS port reached without TLS)."""
        self._early_failures += 1
        problem = tls_failure(reason)
        if problem is None and reason.check(ConnectionDone, ConnectionLost) and (
            self.address.tls is None
        ):
            problem = (
                "the server closed the connection without answering "
                "(a TLS port? then the URL is rediss://)"
            )
        log.error(
            "{name}: Redis connection to {address} failed: {error}; retrying",
            name=self.name,
            address=self._where(),
            error=problem or reason.getErrorMessage(),
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
        if self.group is not None:
            watch_stopped = self.group.stopped(self)
            if watch_stopped is not None:
                both = gatherResults([stopped, watch_stopped], consumeErrors=True)
                return both.addCallback(lambda _: None)
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
        group: SentinelGroup | None = None,
    ) -> None:
        self.channels = list(channels)
        self.on_message = on_message
        self.on_subscribed = on_subscribed
        self.client = RedisClient(
            reactor,
            address,
            "pubsub",
            on_push=self._push,
            on_connect=self._subscribe,
            group=group,
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
    """Opens Redis connections to one server, or to the master of a Sentinel set
    (:class:`edge.bus.client.Connector`)."""

    def __init__(self, reactor: Any, address: RedisAddress) -> None:
        self.reactor = reactor
        self.address = address
        self.group = SentinelGroup(reactor, address) if address.is_sentinel else None

    def client(self, name: str) -> RedisClient:
        return RedisClient(self.reactor, self.address, name, group=self.group)

    def subscriber(
        self,
        channels: Sequence[str],
        on_message: Callable[[bytes, bytes], None],
        on_subscribed: Callable[[], None] | None = None,
    ) -> RedisSubscriber:
        return RedisSubscriber(
            self.reactor, self.address, channels, on_message, on_subscribed, group=self.group
        )


@implementer(IStreamClientEndpoint)
class _AnySentinel:
    """Each connection attempt goes to the next sentinel of the list."""

    def __init__(
        self,
        reactor: Any,
        sentinels: Sequence[tuple[str, int]],
        address: RedisAddress | None = None,
    ) -> None:
        self.reactor = reactor
        self.sentinels = list(sentinels)
        self.address = address  # its TLS options
        self._next = 0
        self.sentinel: tuple[str, int] | None = None

    def connect(self, protocolFactory: Any) -> Deferred[Any]:
        host, port = self.sentinels[self._next % len(self.sentinels)]
        self._next += 1
        self.sentinel = (host, port)
        return cast(
            "Deferred[Any]",
            _tcp(self.reactor, host, port, SENTINEL_TIMEOUT, self.address).connect(
                protocolFactory
            ),
        )


class SentinelGroup:
    """The connections of one connector behind Sentinel, and a watch on the sentinels.

    While any of them is started, one connection to a sentinel (the next one when it is
    lost) is subscribed to ``+switch-master``; when the master named in the URL moves, every
    connection that is not on the new master is dropped, and made again there. Without it a
    connection would stay on a master demoted by a manual ``SENTINEL FAILOVER`` (or cut off
    by a partition) until the sentinels reconfigure it, which takes seconds.
    """

    def __init__(self, reactor: Any, address: RedisAddress) -> None:
        self.reactor = reactor
        self.address = address
        self.clients: set[RedisClient] = set()
        self.watch: RedisClient | None = None
        self.switches = 0

    def started(self, client: RedisClient) -> None:
        self.clients.add(client)
        if self.watch is None:
            address = self.address
            plain = RedisAddress(
                host="",
                port=0,
                username=address.sentinel_username,
                password=address.sentinel_password,
                tls=address.tls,
            )
            self.watch = RedisClient(
                self.reactor,
                plain,
                "sentinel-watch",
                on_push=self._push,
                on_connect=self._subscribe,
                endpoint=_AnySentinel(self.reactor, address.sentinels, address),
            )
            self.watch.start()

    def stopped(self, client: RedisClient) -> Deferred[None] | None:
        self.clients.discard(client)
        if self.clients or self.watch is None:
            return None
        watch, self.watch = self.watch, None
        return watch.stop()

    def _subscribe(self, watch: RedisClient) -> None:
        assert watch.protocol is not None
        for reply in watch.protocol.send([("SUBSCRIBE", "+switch-master")]):
            reply.addErrback(
                lambda f: log.error("sentinel SUBSCRIBE failed: {e}", e=f.getErrorMessage())
            )

    def _push(self, reply: list[Any]) -> None:
        if reply[0] != b"message" or reply[1] != b"+switch-master":
            return
        # "<master name> <old ip> <old port> <new ip> <new port>"
        fields = reply[2].decode(errors="replace").split()
        if len(fields) != 5 or fields[0] != self.address.master_name:
            return
        try:
            new = (fields[3], int(fields[4]))
        except ValueError:
            return
        self.switches += 1
        log.warn(
            "the sentinels moved the master {name} to {host}:{port}; reconnecting",
            name=fields[0],
            host=new[0],
            port=new[1],
        )
        for client in list(self.clients):
            if getattr(client.endpoint, "master", None) != new:
                client.drop()
