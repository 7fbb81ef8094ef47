"""The HTTP device API on a socket: moves bytes between a TCP connection and its
:class:`~edge.http.connection.HttpConnection`, hands each request to the
:class:`~edge.http.api.DeviceApi`, and holds the node's connection budget, each
connection's idle timeout and the per-address connection count it shares with MQTT."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from edge.http.api import DeviceApi, Session
from edge.http.config import HttpConfig
from edge.http.connection import HttpConnection, Response, problem
from edge.mqtt.broker import Broker

from .tcp import TransportCounter

log = Logger(namespace="edge")

BUSY = (
    b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\n"
    b"Connection: close\r\nContent-Length: %d\r\n\r\n%s"
)


class HttpDeviceProtocol(Protocol):
    factory: HttpDeviceFactory
    transport: Any

    def __init__(self) -> None:
        self.http: HttpConnection | None = None
        self.session = Session("")
        self.pending: Deferred[Response] | None = None
        self.idle: Any = None
        self.paused = False
        self.host: str | None = None

    def connectionMade(self) -> None:
        factory = self.factory
        peer = self.transport.getPeer()
        self.session.peer = f"{peer.host}:{peer.port}"
        refusal = factory.opened(self)
        if refusal is not None:
            body = problem(429, refusal).body
            self.transport.write(BUSY % (len(body), body))
            self.transport.loseConnection()
            return
        self.http = HttpConnection(factory.config)
        self.idle = factory.clock.callLater(factory.config.idle, self._timed_out)

    def dataReceived(self, data: bytes) -> None:
        if self.http is None:
            return
        self.http.receive(data)
        if self.pending is None:
            self._restart_idle()
        self._advance()

    def _advance(self) -> None:
        """Answer the requests read so far, in order, while answers come at once."""
        http = self.http
        while http is not None and self.pending is None and self.session.open:
            item = http.next_request()
            self._flush()
            if item is None:
                break
            if isinstance(item, Response):
                self._write(item)
                break
            self._stop_idle()
            try:
                answer = self.factory.api.handle(item, self.session)
            except Exception:
                log.failure("HTTP request failed")
                answer = problem(500, "internal error")
            if isinstance(answer, Deferred):
                self.pending = answer
                answer.addCallbacks(self._answered, self._failed)
                break
            self._write(answer)
        if http is not None and http.wants_pause and not self.paused:
            self.paused = True
            self.transport.pauseProducing()

    def _answered(self, response: Response) -> None:
        self.pending = None
        if self.session.open:
            self._write(response)
            self._advance()

    def _failed(self, failure: Failure) -> None:
        self.pending = None
        if failure.check(CancelledError) or not self.session.open:
            return
        log.failure("HTTP request failed", failure)
        self._write(problem(500, "internal error"))
        self._advance()

    def _write(self, response: Response) -> None:
        http = self.http
        assert http is not None
        http.send(response)
        self._flush()
        if http.closing:
            self.session.open = False
            self._stop_idle()
            self.transport.loseConnection()
            return
        self._restart_idle()
        if self.paused and not http.wants_pause:
            self.paused = False
            self.transport.resumeProducing()

    def _flush(self) -> None:
        if self.http is not None:
            out = self.http.data_to_send()
            if out:
                self.transport.write(out)

    def _timed_out(self) -> None:
        self.idle = None
        self.session.open = False
        self.transport.loseConnection()

    def _restart_idle(self) -> None:
        if self.idle is not None and self.idle.active():
            self.idle.reset(self.factory.config.idle)
        elif self.session.open and self.http is not None:
            self.idle = self.factory.clock.callLater(self.factory.config.idle, self._timed_out)

    def _stop_idle(self) -> None:
        if self.idle is not None and self.idle.active():
            self.idle.cancel()
        self.idle = None

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.session.open = False
        self._stop_idle()
        pending, self.pending = self.pending, None
        if pending is not None:
            # A long-poll gives up waiting: its mailbox keeps the next message.
            pending.cancel()
        if self.http is not None:
            self.factory.closed(self)


class HttpDeviceFactory(Factory):
    """The HTTP device API of one node: its connections and their budgets."""

    noisy = False

    def __init__(self, api: DeviceApi, broker: Broker, config: HttpConfig, clock: Any) -> None:
        self.api = api
        self.broker = broker
        self.config = config
        self.clock = clock
        self.counter = TransportCounter("http")
        self.connections: set[HttpDeviceProtocol] = set()

    def buildProtocol(self, addr: Any) -> HttpDeviceProtocol:  # type: ignore[override]
        protocol = HttpDeviceProtocol()
        protocol.factory = self
        return protocol

    def opened(self, protocol: HttpDeviceProtocol) -> str | None:
        """Count a new connection; why it is refused when over a budget."""
        if len(self.connections) >= self.config.max_connections:
            return "too many HTTP connections on this node"
        host = self.broker.counted_host(protocol.session.peer)
        if host is not None and not self.broker.open_from(host):
            return f"too many connections from {host}"
        protocol.host = host
        self.connections.add(protocol)
        self.counter.open += 1
        self.counter.accepted += 1
        return None

    def closed(self, protocol: HttpDeviceProtocol) -> None:
        if protocol not in self.connections:
            return
        self.connections.discard(protocol)
        self.counter.open -= 1
        if protocol.host is not None:
            self.broker.closed_from(protocol.host)

    def close_all(self) -> None:
        """The node shuts down: every connection closes (long-polls end unanswered)."""
        for protocol in list(self.connections):
            protocol.session.open = False
            protocol.transport.loseConnection()

    def samples(self) -> list[tuple[Any, ...]]:
        labels = {"transport": "http"}
        return [
            (
                "edge_transport_connections",
                "gauge",
                "Open network connections per transport",
                self.counter.open,
                labels,
            ),
            (
                "edge_transport_accepted_total",
                "counter",
                "Accepted network connections per transport",
                self.counter.accepted,
                labels,
            ),
            ("edge_http_polls", "gauge", "HTTP long-polls waiting", self.api.waiting),
        ]
