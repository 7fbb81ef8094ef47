"""MQTT over WebSocket (``ws://host:18999/mqtt``, subprotocol ``mqtt``): the Twisted side.

The framing is :mod:`edge.transports.rfc6455` (sans-I/O); each binary frame's payload goes
into the same :class:`~edge.mqtt.connection.MqttConnection` as a TCP read would, and each batch
of MQTT output leaves as one binary frame.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from edge.mqtt.broker import Broker
from edge.mqtt.connection import CONNECTED, MqttConnection
from edge.mqtt.protocol import CongestionProducer, describe_peer

from . import rfc6455 as ws
from .tcp import TransportCounter

if TYPE_CHECKING:
    from .tls import CertificateLookup

log = Logger(namespace="edge.websocket")

HANDSHAKE, OPEN, CLOSING = range(3)
# The largest frame payload accepted before the client is connected (authenticated): enough
# for any sensible CONNECT, which may also span frames; then the broker's packet size.
PRE_CONNECT_MAX_FRAME = 64 * 1024
FRAME_OVERHEAD = 16


class _Frames:
    """What the MQTT connection writes to and closes: the WebSocket's binary frames."""

    __slots__ = ("protocol",)

    def __init__(self, protocol: WebSocketMqttProtocol) -> None:
        self.protocol = protocol

    def write(self, data: bytes) -> None:
        self.protocol._send(data)

    def loseConnection(self) -> None:
        self.protocol._close()


class WebSocketMqttProtocol(CongestionProducer, Protocol):
    factory: WebSocketMqttFactory
    transport: Any

    def __init__(self, factory: WebSocketMqttFactory) -> None:
        self.factory = factory
        self.state = HANDSHAKE
        self.buffer = b""
        self.opened_at = 0.0
        self.decoder: ws.FrameDecoder | None = None
        self.connection: MqttConnection | None = None

    def connectionMade(self) -> None:
        transport: Any = self.transport
        set_no_delay = getattr(transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            set_no_delay(True)
        self.opened_at = self.factory.clock.seconds()
        self.factory.handshaking.add(self)
        self.factory.counter.open += 1
        self.factory.counter.accepted += 1

    def dataReceived(self, data: bytes) -> None:
        if self.state == OPEN:
            self._frames(data)
        elif self.state == HANDSHAKE:
            self._handshake(data)

    def _handshake(self, data: bytes) -> None:
        self.buffer += data
        try:
            handshake = ws.parse_handshake(self.buffer, self.factory.path)
        except ws.HandshakeError as exc:
            log.info(
                "WebSocket handshake from {peer} refused: {error}",
                peer=self._peer(),
                error=str(exc),
            )
            self.factory.handshaking.discard(self)
            self.state = CLOSING
            self.transport.write(ws.refusal(exc))
            self.transport.loseConnection()
            return
        if handshake is None:
            return
        self.factory.handshaking.discard(self)
        rest = self.buffer[handshake.consumed :]
        self.buffer = b""
        self.transport.write(handshake.response)
        self.state = OPEN
        limit = min(self.factory.broker.config.max_packet_size, PRE_CONNECT_MAX_FRAME)
        self.decoder = ws.FrameDecoder(limit + FRAME_OVERHEAD)
        self.connection = MqttConnection(self.factory.broker, self._peer(), _Frames(self))
        if self.factory.certificates is not None:  # over TLS: the client's certificate
            self.factory.certificates.attach(self.connection, self.transport)
        # Paused while the socket's send buffer is full: QoS 0 to this client is then dropped.
        self.transport.registerProducer(self, True)
        if rest:
            self._frames(rest)

    def _peer(self) -> str:
        return describe_peer(self.transport.getPeer())

    def _frames(self, data: bytes) -> None:
        decoder = self.decoder
        assert decoder is not None and self.connection is not None
        if self.connection.state == CONNECTED:
            decoder.max_frame = self.factory.broker.config.max_packet_size + FRAME_OVERHEAD
        try:
            events = decoder.feed(data)
        except ws.FrameError as exc:
            log.info(
                "WebSocket framing error from {peer}: {error}", peer=self._peer(), error=str(exc)
            )
            self._fail(exc.code, str(exc))
            return
        connection = self.connection
        for event in events:
            kind = event[0]
            if kind == "data":
                connection.data_received(event[1])
            elif kind == "ping":
                self.transport.write(ws.encode_frame(ws.OP_PONG, event[1]))
            elif kind == "close":
                code = event[1]
                self.state = CLOSING
                echo = ws.CLOSE_NORMAL if code == ws.CLOSE_NO_STATUS else code
                self.transport.write(ws.encode_close(echo))
                self.transport.loseConnection()
                break
            if self.state != OPEN:
                break
        self.factory.broker.flush()

    def _fail(self, code: int, reason: str) -> None:
        self.state = CLOSING
        self.transport.write(ws.encode_close(code, reason))
        self.transport.loseConnection()

    def _send(self, data: bytes) -> None:
        if self.state == OPEN:
            self.transport.write(ws.encode_frame(ws.OP_BINARY, data))

    def _close(self) -> None:
        """The MQTT side closes: a close frame, then the TCP connection."""
        if self.state == OPEN:
            self.state = CLOSING
            self.transport.write(ws.encode_close(ws.CLOSE_NORMAL))
        self.transport.loseConnection()

    def check_handshake(self, now: float) -> None:
        if self.state == HANDSHAKE and now - self.opened_at > self.factory.handshake_timeout:
            self.factory.handshaking.discard(self)
            self.state = CLOSING
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.factory.counter.open -= 1
        self.factory.handshaking.discard(self)
        self.state = CLOSING
        if self.connection is not None:
            if self.factory.certificates is not None:
                self.factory.certificates.detach(self.connection)
            self.connection.connection_lost()
            self.factory.broker.flush()


class WebSocketMqttFactory(Factory):
    """Serves MQTT over WebSocket on one path. Clients that do not finish the opening
    handshake within ``handshake_timeout`` are dropped by one periodic sweep."""

    noisy = False

    def __init__(
        self,
        broker: Broker,
        counter: TransportCounter,
        clock: Any,
        path: str = "/mqtt",
        handshake_timeout: float = 10.0,
        certificates: CertificateLookup | None = None,
    ) -> None:
        self.broker = broker
        # Served over TLS: where a connection's client certificate is looked up.
        self.certificates = certificates
        self.counter = counter
        self.clock = clock
        self.path = path
        self.handshake_timeout = handshake_timeout
        self.handshaking: set[WebSocketMqttProtocol] = set()
        self._sweeper = LoopingCall(self.sweep)
        self._sweeper.clock = clock

    def startFactory(self) -> None:
        self._sweeper.start(1.0, now=False)

    def stopFactory(self) -> None:
        if self._sweeper.running:
            self._sweeper.stop()

    def sweep(self) -> None:
        now = self.clock.seconds()
        for protocol in list(self.handshaking):
            protocol.check_handshake(now)

    def buildProtocol(self, addr: Any) -> WebSocketMqttProtocol:  # type: ignore[override]
        return WebSocketMqttProtocol(self)
