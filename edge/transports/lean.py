"""A small server-side TCP transport for the many plain MQTT connections.

Twisted's ``tcp.Server`` keeps an instance dictionary, two log strings, an address object, a
socket object and a bound method per connection (about 1.5 KB), and its ``write`` always
waits for the next reactor turn (buffer, register for writing, send, unregister).
:class:`LeanServer` has ``__slots__``, keeps the peer address as the tuple ``accept``
returned and the socket as its bare descriptor; ``write`` sends at once and only buffers what
the socket does not take. The broker already coalesces a reactor turn's output into one write
per connection, so most writes are a single system call.

It implements what the MQTT protocols here use of ``ITCPTransport`` (write, writeSequence,
loseConnection, abortConnection, getPeer, getHost, setTcpNoDelay, setTcpKeepAlive, producers);
TLS and WebSocket keep Twisted's transport.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from twisted.internet import address, error, main, tcp
from twisted.internet.interfaces import IPushProducer, IReadWriteDescriptor, ITCPTransport
from twisted.python import log
from twisted.python.failure import Failure
from zope.interface import implementer

_WOULD_BLOCK = (errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS, errno.EINTR)
READ_SIZE = 65536
# A producer registered on the transport is paused above this many buffered bytes.
HIGH_WATER = 256 * 1024


@implementer(ITCPTransport, IReadWriteDescriptor, IPushProducer)
class LeanServer:
    __slots__ = (
        "_addr",
        "_buffer",
        "_closing",
        "_fd",
        "_producer",
        "_producer_paused",
        "_reading",
        "_writing",
        "connected",
        "disconnected",
        "disconnecting",
        "protocol",
        "reactor",
    )

    def __init__(
        self,
        skt: socket.socket,
        protocol: Any,
        addr: tuple[Any, ...],
        server: Any,
        sessionno: int,
        reactor: Any,
    ) -> None:
        skt.setblocking(False)
        self._fd = skt.detach()
        self.protocol = protocol
        self.reactor = reactor
        # Kept packed (6 bytes for IPv4): the accepted tuple, its host string and port int
        # cost ~150 bytes per connection (see compact_address).
        self._addr = compact_address(addr)
        self._buffer: bytearray | None = None
        self._producer: Any = None
        self._producer_paused = False
        self._reading = False
        self._writing = False
        self._closing: Any = None
        self.connected = True
        self.disconnected = False
        self.disconnecting = False
        self.startReading()

    # -- IFileDescriptor ---------------------------------------------------------------------

    def fileno(self) -> int:
        return self._fd

    def logPrefix(self) -> str:
        return "mqtt"

    def startReading(self) -> None:
        if not self._reading and not self.disconnected:
            self._reading = True
            self.reactor.addReader(self)

    def stopReading(self) -> None:
        if self._reading:
            self._reading = False
            self.reactor.removeReader(self)

    def _start_writing(self) -> None:
        if not self._writing:
            self._writing = True
            self.reactor.addWriter(self)

    def _stop_writing(self) -> None:
        if self._writing:
            self._writing = False
            self.reactor.removeWriter(self)

    @contextmanager
    def _socket(self) -> Iterator[socket.socket]:
        """A socket object for an option call, not owning the descriptor."""
        sock = socket.socket(fileno=self._fd)
        try:
            yield sock
        finally:
            sock.detach()

    def doRead(self) -> Any:
        try:
            data = os.read(self._fd, READ_SIZE)
        except OSError as exc:
            if exc.errno in _WOULD_BLOCK:
                return None
            return main.CONNECTION_LOST
        if not data:
            return main.CONNECTION_DONE
        self.protocol.dataReceived(data)
        return None

    def doWrite(self) -> Any:
        buffer = self._buffer
        if buffer:
            try:
                sent = os.write(self._fd, buffer)
            except OSError as exc:
                if exc.errno in _WOULD_BLOCK:
                    return None
                return main.CONNECTION_LOST
            del buffer[:sent]
        if buffer:
            return None
        self._buffer = None
        self._stop_writing()
        if self._producer is not None and self._producer_paused:
            self._producer_paused = False
            self._producer.resumeProducing()
        if self.disconnecting:
            return main.CONNECTION_DONE
        return None

    def readConnectionLost(self, reason: Failure) -> None:
        self.connectionLost(reason)

    def connectionLost(self, reason: Failure) -> None:
        if self.disconnected:
            return
        self.disconnected = True
        self.connected = False
        self._stop_writing()
        self.stopReading()
        self._buffer = None
        if self._closing is not None and self._closing.active():
            self._closing.cancel()
        self._closing = None
        fd, self._fd = self._fd, -1
        with contextlib.suppress(OSError):
            os.close(fd)
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.stopProducing()
        protocol = self.protocol
        protocol.connectionLost(reason)

    # -- ITransport --------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.disconnected or self.disconnecting or not data:
            return
        buffer = self._buffer
        if buffer is None:
            try:
                sent = os.write(self._fd, data)
            except OSError as exc:
                if exc.errno not in _WOULD_BLOCK:
                    # Reported on the next reactor turn, not inside the caller's write.
                    self.disconnecting = True
                    self.stopReading()
                    self._closing = self.reactor.callLater(
                        0, self._lose, Failure(error.ConnectionLost(str(exc)))
                    )
                    return
                sent = 0
            if sent == len(data):
                return
            buffer = self._buffer = bytearray(memoryview(data)[sent:])
            self._start_writing()
        else:
            buffer += data
        if self._producer is not None and not self._producer_paused and len(buffer) > HIGH_WATER:
            self._producer_paused = True
            self._producer.pauseProducing()

    def writeSequence(self, data: Any) -> None:
        self.write(b"".join(data))

    @property
    def buffered(self) -> int:
        """Bytes accepted by ``write`` and not yet taken by the socket."""
        return len(self._buffer) if self._buffer else 0

    def loseConnection(self) -> None:
        """Close after the buffered data is sent (``connectionLost`` follows, not within this
        call)."""
        if self.disconnected or self.disconnecting:
            return
        self.disconnecting = True
        self.stopReading()
        if not self._buffer:
            self._closing = self.reactor.callLater(
                0, self._lose, Failure(error.ConnectionDone("closed"))
            )

    def abortConnection(self) -> None:
        if self.disconnected:
            return
        self.disconnecting = True
        self._buffer = None
        self.stopReading()
        self._closing = self.reactor.callLater(
            0, self._lose, Failure(error.ConnectionAborted("aborted"))
        )

    def _lose(self, reason: Failure) -> None:
        self._closing = None
        self.connectionLost(reason)

    def getPeer(self) -> address.IPv4Address | address.IPv6Address:
        return _address(address_tuple(self._addr))

    @property
    def peer_address(self) -> bytes | tuple[Any, ...]:
        """The peer's address, packed as :func:`compact_address` keeps it."""
        return self._addr

    def getHost(self) -> address.IPv4Address | address.IPv6Address:
        try:
            with self._socket() as sock:
                return _address(sock.getsockname())
        except OSError:
            return _address(("0.0.0.0", 0))

    def setTcpNoDelay(self, enabled: bool) -> None:
        with self._socket() as sock, contextlib.suppress(OSError):  # not TCP (a test pair)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, enabled)

    def getTcpNoDelay(self) -> bool:
        with self._socket() as sock:
            return bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    def setTcpKeepAlive(self, enabled: bool) -> None:
        with self._socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, enabled)

    def getTcpKeepAlive(self) -> bool:
        with self._socket() as sock:
            return bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE))

    def loseWriteConnection(self) -> None:
        self.loseConnection()

    # -- producers ---------------------------------------------------------------------------

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        if self._producer is not None:
            raise RuntimeError("a producer is already registered")
        self._producer = producer
        self._producer_paused = False
        if self.disconnected:
            producer.stopProducing()

    def unregisterProducer(self) -> None:
        self._producer = None
        self._producer_paused = False

    # The transport as a producer of received data: pausing stops reading.
    def pauseProducing(self) -> None:
        self.stopReading()

    def resumeProducing(self) -> None:
        if not self.disconnecting:
            self.startReading()

    def stopProducing(self) -> None:
        self.loseConnection()


def compact_address(addr: tuple[Any, ...]) -> bytes | tuple[Any, ...]:
    """An IPv4 ``(host, port)`` as 6 bytes (4 of address, 2 of port; a 39-byte object where
    the tuple, the host string and the port int take ~150); any other address unchanged."""
    if len(addr) == 2:
        try:
            return socket.inet_pton(socket.AF_INET, addr[0]) + addr[1].to_bytes(2, "big")
        except (OSError, TypeError, ValueError, OverflowError, AttributeError):
            pass
    return addr


def address_tuple(addr: bytes | tuple[Any, ...]) -> tuple[Any, ...]:
    """The ``(host, port, …)`` tuple of an address kept by :func:`compact_address`."""
    if type(addr) is bytes:
        return socket.inet_ntop(socket.AF_INET, addr[:4]), int.from_bytes(addr[4:6], "big")
    return addr  # type: ignore[return-value]


def _address(addr: tuple[Any, ...]) -> address.IPv4Address | address.IPv6Address:
    host, port = addr[0], addr[1]
    if ":" in host:
        return address.IPv6Address("TCP", host, port)
    return address.IPv4Address("TCP", host, port)


class _AcceptCounter:
    """The logger Twisted's accept loop reports to (it must not open files: it runs when
    the process is out of descriptors); counts connections refused by accept errors."""

    def __init__(self, refused: dict[str, int]) -> None:
        self.refused = refused

    def info(self, format: str, **kwargs: Any) -> None:
        if format.startswith("EMFILE recovery: Closed socket"):
            reason = "files"
        elif "acceptError" in kwargs:
            reason = str(kwargs["acceptError"]).lower()
        else:
            return
        self.refused[reason] = self.refused.get(reason, 0) + 1

    def failure(self, *args: Any, **kwargs: Any) -> None:
        return None


class LeanPort(tcp.Port):
    """A listening port whose connections get a :class:`LeanServer`.

    Each reactor turn in which the socket is readable accepts up to ``accept_batch``
    connections (Twisted's port starts at 100 and falls to 1 after a quiet turn, then grows
    by 20 a turn: a storm after a lull waited for many turns). Connections refused by an
    accept error (out of descriptors: ``files``, ``enobufs``, ``enomem``…) are counted in
    ``refused``."""

    transport = LeanServer  # type: ignore[assignment]
    accept_batch = 256

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.refused: dict[str, int] = {}

    def doRead(self) -> None:
        refused = self.refused
        limit = max(self.numberAccepts, self.accept_batch)
        counter = _AcceptCounter(refused)
        factory: Any = self.factory
        build = factory.buildProtocol
        make = self.transport
        accepted = 0
        try:
            for skt, addr in tcp._accept(counter, range(limit), self.socket, tcp._reservedFD):
                accepted += 1
                if len(addr) == 4:
                    host = socket.getnameinfo(addr, socket.NI_NUMERICHOST | socket.NI_NUMERICSERV)
                    addr = (host[0], *addr[1:])
                protocol = build(self._buildAddr(addr))
                if protocol is None:
                    skt.close()
                    continue
                number = self.sessionno
                self.sessionno = number + 1
                protocol.makeConnection(make(skt, protocol, addr, self, number, self.reactor))
        except BaseException:
            log.deferr()
        # A full batch: more may wait; grow for the next turn (never below accept_batch).
        self.numberAccepts = limit + 20 if accepted == limit else self.accept_batch


def listen_lean(
    reactor: Any,
    port: int,
    factory: Any,
    interface: str = "0.0.0.0",
    backlog: int = 4096,
    reuse_port: bool = False,
    accept_batch: int = LeanPort.accept_batch,
) -> LeanPort:
    """Like ``reactor.listenTCP`` (or the SO_REUSEPORT variant of
    :func:`edge.transports.tcp.listen`) with lean connection transports. ``backlog`` is
    capped by the kernel at ``net.core.somaxconn``."""
    if not reuse_port:
        listening = LeanPort(port, factory, backlog, interface, reactor)
        listening.accept_batch = accept_batch
        listening.startListening()
        return listening
    family = socket.AF_INET6 if ":" in interface else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((interface, port))
        sock.listen(backlog)
        sock.setblocking(False)
        listening = LeanPort._fromListeningDescriptor(reactor, sock.fileno(), family, factory)
        listening.accept_batch = accept_batch
        listening.backlog = backlog
        listening.startListening()
        return listening
    finally:
        sock.close()
