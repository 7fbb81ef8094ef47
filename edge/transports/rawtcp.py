"""Raw TCP devices (``EDGE_TCP_PORT``, 18901): JSON lines, or a product's binary frames.

A connection's first byte says which: ``{`` starts the default codec (JSON lines,
:mod:`edge.rawdevices.jsonlines`), anything else a binary codec of a ``tcp`` product
(:mod:`edge.rawdevices.frames`). Once the device is proven (its login line or frame through
:meth:`Authenticator.check`, or a frame's MAC), the connection is its endpoint: commands are
written to it at once. Messages go through the uplink pipeline in order and each JSON line is
answered once what it carried is stored; at most ``max_pending`` wait, after which the
connection is not read until they are done.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from edge.clock import now_ms
from edge.codecs import thinglinks as tl
from edge.frames import Codec, Decoded, FrameError
from edge.mqtt.policy import AuthResult
from edge.rawdevices import frames as binary
from edge.rawdevices import jsonlines as jl
from edge.thinglinks.endpoints import Downlink
from edge.thinglinks.mqtt import EdgeHooks
from edge.thinglinks.uplink import Handled

from .rawcommon import CodecCatalog, RawConfig, Verified, admitted, device_product, verify_mac_frame
from .tcp import TransportCounter

log = Logger(namespace="edge")


class RawTcpFactory(Factory):
    noisy = False

    def __init__(
        self,
        clock: Any,
        hooks: EdgeHooks,
        catalog: CodecCatalog,
        config: RawConfig,
        counter: TransportCounter | None = None,
    ) -> None:
        self.clock = clock
        self.hooks = hooks
        self.catalog = catalog
        self.config = config
        self.counter = counter or TransportCounter("rawtcp")

    def buildProtocol(self, addr: Any) -> RawTcpProtocol:  # type: ignore[override]
        return RawTcpProtocol(self)

    def samples(self) -> list[tuple[Any, ...]]:
        """Open and accepted raw TCP connections (``/metrics``)."""
        labels = {"transport": "rawtcp"}
        counter = self.counter
        return [
            ("edge_transport_connections", "gauge", "Open network connections per transport",
             counter.open, labels),
            ("edge_transport_accepted_total", "counter",
             "Accepted network connections per transport", counter.accepted, labels),
        ]  # fmt: skip


class _Answer:
    """A message's place in the answer order, and its answer once known."""

    __slots__ = ("data", "done")

    def __init__(self) -> None:
        self.data: bytes | None = None
        self.done = False


class RawTcpProtocol(Protocol):
    transport: Any

    def __init__(self, factory: RawTcpFactory) -> None:
        self.factory = factory
        self.hooks = factory.hooks
        self.config = factory.config
        self.peer = ""
        self.device: str | None = None
        self.lines: jl.LineSession | None = None
        self.frames: binary.FrameStream | None = None
        self.codec: Codec | None = None  # the device's product codec, once proven
        self.secret: str | None = None  # the device's secret (a MAC on command frames)
        self.answers: deque[_Answer] = deque()
        self.backlog: deque[bytes] = deque()  # frames waiting for the one being checked
        self.busy = False
        self.paused = False
        self.closing: str | None = None
        self.login_timer: Any = None
        self.idle_timer: Any = None

    # connection -----------------------------------------------------------------------------

    def connectionMade(self) -> None:
        counter = self.factory.counter
        counter.open += 1
        counter.accepted += 1
        address = self.transport.getPeer()
        self.peer = f"{address.host}:{address.port}"
        if counter.open > self.config.max_connections:
            self._close(f"over {self.config.max_connections} raw TCP connections", notify=True)
            return
        clock = self.factory.clock
        self.login_timer = clock.callLater(self.config.login_timeout, self._timeout, "login")
        self.idle_timer = clock.callLater(self.config.idle_timeout, self._timeout, "idle")

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.factory.counter.open -= 1
        for timer in (self.login_timer, self.idle_timer):
            if timer is not None and timer.active():
                timer.cancel()
        if self.device is not None:
            self.hooks.endpoints.disconnect(self.device, self, self.closing or "disconnect")

    def dataReceived(self, data: bytes) -> None:
        if self.closing is not None:
            return
        if self.idle_timer is not None and self.idle_timer.active():
            self.idle_timer.reset(self.config.idle_timeout)
        if self.lines is None and self.frames is None and not self._choose(data):
            return
        if self.lines is not None:
            self._act(self.lines.receive(data))
        else:
            self._feed_frames(data)

    def _choose(self, data: bytes) -> bool:
        """The codec, from the first byte that is not white space."""
        head = data.lstrip()
        if not head:
            return False
        if head[:1] == b"{":
            self.lines = jl.LineSession(self.config.max_line)
            return True
        candidates = self.factory.catalog.candidates("tcp")
        if not candidates:
            self._close("not JSON, and no tcp product has a binary codec", notify=True)
            return False
        self.frames = binary.FrameStream(candidates)
        return True

    def _timeout(self, which: str) -> None:
        if which == "login" and self.device is not None:
            return
        self._close(f"{which} timeout", notify=True)

    def _close(self, reason: str, notify: bool = False) -> None:
        """End the connection; ``notify``: a JSON device is told why first."""
        if self.closing is not None:
            return
        self.closing = reason
        if notify and self.frames is None:
            self.transport.write(jl.error_line(reason))
        log.info("raw TCP {peer} ({device}) closed: {reason}", peer=self.peer,
                 device=self.device or "-", reason=reason)  # fmt: skip
        self.transport.loseConnection()

    # the device's endpoint ------------------------------------------------------------------

    def deliver(self, message: Downlink) -> str | None:
        if self.closing is not None:
            return "the connection is closing"
        if self.codec is None:
            self.transport.write(jl.topic_line(message.suffix, message.payload))
            return None
        if message.suffix != "command":
            return f"the product's codec has no frame for {message.suffix}"
        assert self.device is not None
        try:
            frame = binary.command_frame(self.codec, message.payload, self.device, self.secret)
        except FrameError as exc:
            log.info("command for {device} not encoded: {reason}", device=self.device,
                     reason=exc.reason)  # fmt: skip
            return f"the codec cannot encode the command: {exc.reason}"
        self.transport.write(frame)
        return None

    def close(self) -> None:
        """A newer connection of the device took over (or the platform dropped it)."""
        self._close("replaced or dropped")

    def _attach(self, device: str) -> None:
        self.device = device
        if self.login_timer is not None and self.login_timer.active():
            self.login_timer.cancel()
        self.hooks.endpoints.connect(device, self, self.peer, "tcp")

    # JSON lines -----------------------------------------------------------------------------

    def _act(self, actions: list[jl.Action]) -> None:
        for action in actions:
            if self.closing is not None:
                return
            if isinstance(action, jl.Send):
                self.transport.write(action.data)
            elif isinstance(action, jl.Uplink):
                self._uplink(action.suffix, action.payload, json_answer)
            elif isinstance(action, jl.Login):
                checked: Deferred[Any] = maybeDeferred(
                    self.hooks.auth.check, action.device, action.password, self.peer,
                    transport="tcp",
                )  # fmt: skip
                checked.addCallbacks(self._json_login, self._login_failed)
            else:
                self._close(action.reason)

    def _json_login(self, result: AuthResult) -> None:
        if self.closing is not None or self.lines is None:
            return
        if result.ok and result.identity:
            self._attach(result.identity)
            self._act(self.lines.logged_in(result.identity))
        else:
            self._act(self.lines.refused(result.detail or "refused"))

    def _login_failed(self, failure: Failure) -> None:
        log.warn("raw TCP login not checked: {e}", e=failure.getErrorMessage())
        if self.lines is not None:
            self._act(self.lines.refused("the login could not be checked; try later"))
        else:
            self._close("the login could not be checked")

    # the pipeline, in order -----------------------------------------------------------------

    def _uplink(self, suffix: str, payload: bytes, render: Any) -> None:
        assert self.device is not None
        slot = _Answer()
        self.answers.append(slot)
        if len(self.answers) >= self.config.max_pending and not self.paused:
            self.paused = True
            self.transport.pauseProducing()
        handled: Deferred[Any] = maybeDeferred(
            self.hooks.pipeline.handle, self.device, self.device, suffix, payload, True
        )

        def answered(data: bytes | None) -> None:
            slot.data, slot.done = data, True
            self._flush()

        def failed(failure: Failure) -> bytes | None:
            log.warn("raw TCP message of {d} not stored: {e}", d=self.device,
                     e=failure.getErrorMessage())  # fmt: skip
            return render(None)

        handled.addCallback(_stored).addCallback(render).addErrback(failed).addCallback(answered)

    def _flush(self) -> None:
        while self.answers and self.answers[0].done:
            data = self.answers.popleft().data
            if data is not None and self.closing is None:
                self.transport.write(data)
        if self.paused and len(self.answers) < self.config.max_pending and self.closing is None:
            self.paused = False
            self.transport.resumeProducing()

    # binary frames --------------------------------------------------------------------------

    def _feed_frames(self, data: bytes) -> None:
        assert self.frames is not None
        try:
            frames = self.frames.feed(data)
        except FrameError as exc:
            self._close(f"{exc.code}: {exc.reason}")
            return
        self.backlog.extend(frames)
        self._pump()

    def _pump(self) -> None:
        """Handle the waiting frames one after the other (a login or a registry lookup may
        have to wait; the frames after it wait with it)."""
        while self.backlog and not self.busy and self.closing is None:
            frame = self.backlog.popleft()
            self.busy = True
            done: Deferred[Any] = maybeDeferred(self._frame, frame)
            done.addErrback(self._frame_refused, frame)
            done.addBoth(self._frame_done)
        if len(self.backlog) > self.config.max_pending and not self.paused:
            self.paused = True
            self.transport.pauseProducing()

    def _frame_done(self, _: object) -> None:
        self.busy = False
        if self.paused and len(self.answers) < self.config.max_pending:
            self.paused = False
            self.transport.resumeProducing()
        self._pump()

    def _frame(self, frame: bytes) -> Any:
        frames = self.frames
        assert frames is not None and frames.chosen is not None
        candidate = frames.chosen
        codec = self.codec or candidate.codec
        if codec.spec.auth == "mac":
            verified = verify_mac_frame(
                self.hooks.pipeline.directory, self.hooks.throttle, candidate, frame,
                self.peer, "tcp",
            )  # fmt: skip
            if isinstance(verified, Deferred):
                return verified.addCallback(self._mac_verified)
            return self._mac_verified(verified)
        decoded = codec.decode(frame)
        if self.device is None:
            if decoded.message.kind != "login" or decoded.device is None:
                raise FrameError("not_logged_in", "the first frame must be the login frame")
            password = (decoded.password or "").encode()
            checked: Deferred[Any] = maybeDeferred(
                self.hooks.auth.check, decoded.device, password, self.peer, transport="tcp"
            )
            return checked.addCallback(self._frame_login, decoded)
        self._frame_uplink(decoded)
        return None

    def _frame_login(self, result: AuthResult, decoded: Decoded) -> Any:
        frames = self.frames
        assert frames is not None and frames.chosen is not None
        candidate = frames.chosen
        if not result.ok or not result.identity:
            raise FrameError("refused", result.detail or "refused")
        device = result.identity

        def with_product(found: Any) -> None:
            record, product = found
            admitted(record, product, device, "tcp", candidate)
            self.codec = product.codec
            self._attach(device)
            answer = binary.login_answer(self.codec or candidate.codec, True)
            if answer is not None:
                self.transport.write(answer)

        found = device_product(self.hooks.pipeline.directory, device)
        if isinstance(found, Deferred):
            return found.addCallback(with_product)
        return with_product(found)

    def _mac_verified(self, verified: Verified) -> None:
        device = verified.record.identifier
        if self.device is None:
            self.codec, self.secret = verified.product.codec, verified.record.secret
            self._attach(device)
        self._frame_uplink(verified.decoded)

    def _frame_uplink(self, decoded: Decoded) -> None:
        message = binary.uplink(decoded, self.device)
        if message is None:
            raise FrameError("logged_in", "the connection is already logged in")
        self._uplink(message[0], message[1], lambda _: None)

    def _frame_refused(self, failure: Failure, frame: bytes) -> None:
        """A frame that could not be used: before the device is proven the connection ends
        (after a login answer, when the codec has one); after, the frame is dropped and the
        device's message log says why."""
        error = failure.value
        if isinstance(error, FrameError):
            reason = f"{error.code}: {error.reason}"
        else:
            log.failure("raw TCP frame of {peer}", failure, peer=self.peer)
            error, reason = FrameError("failed", "not handled"), failure.getErrorMessage()
        if self.device is None:
            codec = self.frames.chosen.codec if self.frames and self.frames.chosen else None
            if codec is not None and error.code not in ("throttled",):
                try:
                    answer = binary.login_answer(codec, False)
                except FrameError:
                    answer = None
                if answer is not None:
                    self.transport.write(answer)
            self._close(reason)
            return
        topic = f"{tl.TOPIC_PREFIX}{self.device}/frame"
        ts = now_ms(self.factory.clock.seconds)
        self.hooks.uplink.emit(tl.log_event(self.device, "up", topic, frame, False, reason, ts))
        log.info("frame of {device} refused: {reason}", device=self.device, reason=reason)


def _stored(handled: Handled) -> Handled | Deferred[Handled]:
    """``handled`` once its events are stored."""
    if handled.stored is None:
        return handled
    return handled.stored.addCallback(lambda _: handled)


def json_answer(handled: Handled | None) -> bytes:
    """The ``datasResponse`` line answering a message (``None``: it could not be stored)."""
    if handled is None:
        return jl.error_line("the message could not be stored; send it again")
    return jl.topic_line("datasResponse", handled.answer or jl.accepted_answer())
