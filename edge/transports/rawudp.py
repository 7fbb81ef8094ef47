"""UDP devices (``EDGE_UDP_PORT``, 18902): one JSON object, or one binary frame, per datagram.

A JSON datagram is a TCP message line with ``deviceId`` and ``password`` added, checked by
:meth:`Authenticator.check` each time (a signed password, new each time, is what a device
should send: a datagram can be captured and replayed, a signed password only once); a binary
datagram is a frame of a ``udp`` product's codec, proven by its MAC. Each datagram renews the
device's presence lease (:meth:`Endpoints.touch`) and is answered to its source: the
``datasResponse`` line for JSON, then every message waiting in the device's mailbox (queue
mode: the platform's commands wait there for the device's next datagram, and the message log
says when each was queued and when it went out). A datagram over ``max_datagram`` bytes, or
from an address over ``udp_rate`` datagrams a second, is dropped unanswered.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from edge.clock import now_ms
from edge.codecs import thinglinks as tl
from edge.frames import Codec, FrameError
from edge.mqtt.policy import AuthResult
from edge.rawdevices import frames as binary
from edge.rawdevices import jsonlines as jl
from edge.thinglinks.endpoints import Mailbox
from edge.thinglinks.mqtt import EdgeHooks
from edge.thinglinks.uplink import Handled

from .rawcommon import CodecCatalog, RawConfig, Verified, verify_mac_frame

log = Logger(namespace="edge")

# Source addresses whose rate is tracked at once; past it the oldest half is forgotten.
MAX_SOURCES = 100_000
DELIVERED = tl.DELIVERED_ON_REQUEST

Address = tuple[str, int]


class RawUdpProtocol(DatagramProtocol):
    noisy = False
    transport: Any

    def __init__(
        self, clock: Any, hooks: EdgeHooks, catalog: CodecCatalog, config: RawConfig
    ) -> None:
        self.clock = clock
        self.hooks = hooks
        self.catalog = catalog
        self.config = config
        self.buckets: dict[str, tuple[float, float]] = {}  # host → (tokens, when)
        self.received = 0
        self.dropped = 0

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        self.received += 1
        if len(data) > self.config.max_datagram or not self._allowed(addr[0]):
            self.dropped += 1
            return
        peer = f"{addr[0]}:{addr[1]}"
        if data.lstrip()[:1] == b"{":
            self._json(data, addr, peer)
        else:
            self._binary(data, addr, peer)

    def samples(self) -> list[tuple[Any, ...]]:
        """Datagrams received and dropped unanswered (too large, over the rate) for
        ``/metrics``."""
        return [
            ("edge_udp_datagrams_total", "counter", "UDP device datagrams received",
             self.received),
            ("edge_udp_dropped_total", "counter",
             "UDP device datagrams dropped (too large, over the rate)", self.dropped),
        ]  # fmt: skip

    def _allowed(self, host: str) -> bool:
        """A token bucket per source address: ``udp_rate`` a second, as many at once."""
        now = self.clock.seconds()
        rate = self.config.udp_rate
        tokens, when = self.buckets.get(host, (rate, now))
        tokens = min(rate, tokens + (now - when) * rate)
        if tokens < 1:
            self.buckets[host] = (tokens, now)
            return False
        if host not in self.buckets and len(self.buckets) >= MAX_SOURCES:
            for stale in list(self.buckets)[: MAX_SOURCES // 2]:
                del self.buckets[stale]
        self.buckets[host] = (tokens - 1, now)
        return True

    def _send(self, data: bytes, addr: Address) -> None:
        if self.transport is not None:
            self.transport.write(data, addr)

    # JSON -----------------------------------------------------------------------------------

    def _json(self, data: bytes, addr: Address, peer: str) -> None:
        try:
            device, password, suffix, payload = jl.datagram(data)
        except jl.BadInput as exc:
            self._send(_datagram(jl.error_line(exc.reason)), addr)
            return
        checked: Deferred[Any] = maybeDeferred(
            self.hooks.auth.check, device, password, peer, transport="udp"
        )

        def admitted(result: AuthResult) -> Any:
            if not result.ok or result.identity != device:
                self._send(_datagram(jl.status_line(1, result.detail or "refused")), addr)
                return None
            mailbox = self.hooks.endpoints.touch(device, peer, "udp")
            handled: Deferred[Any] = maybeDeferred(
                self.hooks.pipeline.handle, device, device, suffix, payload, True
            )
            return handled.addCallback(_stored).addCallbacks(
                lambda h: self._json_answer(h, device, mailbox, addr),
                lambda f: self._not_stored(f, device, addr),
            )

        checked.addCallback(admitted).addErrback(self._failed, peer)

    def _json_answer(self, handled: Handled, device: str, mailbox: Mailbox, addr: Address) -> None:
        self._send(
            _datagram(jl.topic_line("datasResponse", handled.answer or jl.accepted_answer())), addr
        )
        for message in mailbox.take_all():
            self._send(_datagram(jl.topic_line(message.suffix, message.payload)), addr)
            self._logged(device, message.suffix, message.payload, None)

    def _not_stored(self, failure: Failure, device: str, addr: Address) -> None:
        log.warn("UDP message of {d} not stored: {e}", d=device, e=failure.getErrorMessage())
        self._send(_datagram(jl.error_line("the message could not be stored; send it again")), addr)

    # binary frames --------------------------------------------------------------------------

    def _binary(self, data: bytes, addr: Address, peer: str) -> None:
        try:
            candidate, frame = binary.datagram_codec(self.catalog.candidates("udp"), data)
        except FrameError as exc:
            log.info("UDP datagram of {peer} refused: {reason}", peer=peer, reason=exc.reason)
            return
        verified: Deferred[Any] = maybeDeferred(
            verify_mac_frame, self.hooks.pipeline.directory, self.hooks.throttle, candidate,
            frame, peer, "udp",
        )  # fmt: skip
        verified.addCallback(self._frame, addr, peer, frame).addErrback(self._failed, peer)

    def _frame(self, verified: Verified, addr: Address, peer: str, frame: bytes) -> Any:
        device = verified.record.identifier
        codec = verified.product.codec
        assert codec is not None
        mailbox = self.hooks.endpoints.touch(device, peer, "udp")
        try:
            message = binary.uplink(verified.decoded, device)
        except FrameError as exc:
            self._refused_frame(device, frame, exc)
            message = None
        if message is None:
            self._commands(device, codec, verified.record.secret, mailbox, addr)
            return None
        handled: Deferred[Any] = maybeDeferred(
            self.hooks.pipeline.handle, device, device, message[0], message[1], True
        )
        return handled.addCallback(_stored).addBoth(
            lambda _: self._commands(device, codec, verified.record.secret, mailbox, addr)
        )

    def _commands(
        self, device: str, codec: Codec, secret: str | None, mailbox: Mailbox, addr: Address
    ) -> None:
        """The device's waiting commands as frames, sent in answer to its datagram."""
        for message in mailbox.take_all():
            if message.suffix != "command":
                self._logged(device, message.suffix, message.payload,
                             f"the product's codec has no frame for {message.suffix}")  # fmt: skip
                continue
            try:
                frame = binary.command_frame(codec, message.payload, device, secret)
            except FrameError as exc:
                reason = f"the codec cannot encode the command: {exc.reason}"
                log.info("command for {device} not encoded: {reason}", device=device, reason=reason)
                self._logged(device, message.suffix, message.payload, reason)
                continue
            self._send(frame, addr)
            self._logged(device, message.suffix, message.payload, None)

    def _refused_frame(self, device: str, frame: bytes, error: FrameError) -> None:
        reason = f"{error.code}: {error.reason}"
        ts = now_ms(self.clock.seconds)
        topic = f"{tl.TOPIC_PREFIX}{device}/frame"
        self.hooks.uplink.emit(tl.log_event(device, "up", topic, frame, False, reason, ts))

    def _logged(self, device: str, suffix: str, payload: bytes, failed: str | None) -> None:
        """The message log line of a queued message as it goes out (or why it could not)."""
        topic = tl.response_topic(device, suffix)
        ts = now_ms(self.clock.seconds)
        event = tl.log_event(
            device, "down", topic, tl.redacted(topic, payload), failed is None,
            failed or DELIVERED, ts,
        )  # fmt: skip
        self.hooks.uplink.emit(event)

    def _failed(self, failure: Failure, peer: str) -> None:
        if isinstance(failure.value, FrameError):
            log.info(
                "UDP frame of {peer} refused: {reason}", peer=peer, reason=failure.value.reason
            )
        else:
            log.failure("UDP datagram of {peer}", failure, peer=peer)


def _stored(handled: Handled) -> Any:
    if handled.stored is None:
        return handled
    return handled.stored.addCallback(lambda _: handled)


def _datagram(line: bytes) -> bytes:
    """A JSON line as a datagram (no line end)."""
    return line.rstrip(b"\n")
