"""CoAP devices (RFC 7252, Observe RFC 7641, block-wise RFC 7959) on UDP ``EDGE_COAP_PORT``.

A thin Twisted layer: each datagram goes through the sans-I/O message layer
(:class:`edge.coap.exchange.Endpoint`, which deduplicates, reassembles Block1 bodies, slices
Block2 answers and retransmits), and each whole request it yields is served here with the
pieces every device transport shares: the credentials of its ``p=`` query through
``Authenticator.check(…, transport="coap")``, the device's presence lease and mailbox through
``Endpoints.touch``, its payload through ``UplinkPipeline.handle``. Paths and answers are
:mod:`edge.coap.resources`.

An uplink request is answered once the bus stored what it produced, as MQTT acknowledges a
QoS 1 message. When that takes longer than ``DEFER_AFTER`` (less than the client's ACK
timeout), a Confirmable request gets an empty ACK at once and its answer later as a separate
Confirmable response, so the client does not retransmit meanwhile.

``GET /v1/devices/{id}/command`` with Observe 0 registers: the device's downlink of that
suffix (its mailbox, :meth:`Mailbox.listen`) goes out as Confirmable notifications until the
client deregisters (Observe 1, a Reset), stops acknowledging them, or its presence lease ends
(then a last 5.03 notification tells it to register again). Without Observe a GET answers the
oldest waiting message, or 2.05 with an empty payload when none waits.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from edge.coap import resources
from edge.coap.exchange import (
    ACK_TIMEOUT,
    DeliveryFailed,
    Endpoint,
    ObservationEnded,
    Output,
    Refused,
    Request,
    Response,
    Transmit,
)
from edge.coap.message import Code
from edge.mqtt.policy import AuthResult
from edge.thinglinks.auth import Authenticator
from edge.thinglinks.endpoints import Downlink, Endpoints, Mailbox
from edge.thinglinks.uplink import Handled, UplinkPipeline

log = Logger(namespace="edge.coap")

TRANSPORT = "coap"
# A Confirmable request not answered by then gets an empty ACK (RFC 7252 section 5.2.2).
DEFER_AFTER = ACK_TIMEOUT / 4
# Even when nothing is in flight, remembered exchanges and idle peers are let go this often.
SWEEP_SECONDS = 10.0
LEASE_ENDED = "the device went offline on this node (its lease ended); register again"
# Requests one peer may have waiting for authentication or storage at a time.
MAX_PENDING_PER_PEER = 8


@dataclass(frozen=True, slots=True)
class CoapConfig:
    """``EDGE_COAP_PORT`` (15683; 0 turns CoAP off) and the budgets of docs/bus.md "Edge
    budgets": ``EDGE_COAP_MAX_BODY`` (bytes of one request body, Block1 reassembled),
    ``EDGE_COAP_MAX_PEERS`` (addresses remembered at once), ``EDGE_COAP_MAX_OBSERVATIONS``,
    ``EDGE_COAP_MAX_BLOCKS`` (block-wise transfers in progress) and ``EDGE_COAP_MAX_PENDING``
    (requests waiting for authentication or storage); 0 is no limit."""

    port: int = 15683
    max_body: int = 64 * 1024
    max_peers: int = 10_000
    max_observations: int = 10_000
    max_blocks: int = 512
    max_pending: int = 2_000

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> CoapConfig:
        """Raises ValueError for a setting that is not a number, or a negative one."""

        def number(name: str, default: int) -> int:
            value = int(env.get(name) or default)
            if value < 0:
                raise ValueError(f"{name} must not be negative")
            return value

        defaults = cls()
        return cls(
            port=number("EDGE_COAP_PORT", defaults.port),
            max_body=number("EDGE_COAP_MAX_BODY", defaults.max_body),
            max_peers=number("EDGE_COAP_MAX_PEERS", defaults.max_peers),
            max_observations=number("EDGE_COAP_MAX_OBSERVATIONS", defaults.max_observations),
            max_blocks=number("EDGE_COAP_MAX_BLOCKS", defaults.max_blocks),
            max_pending=number("EDGE_COAP_MAX_PENDING", defaults.max_pending),
        )


def _nothing() -> None:
    return None


@dataclass(slots=True)
class _Observer:
    """An observation of one downlink suffix: the device's mailbox and how to undo its
    hooks in it."""

    suffix: str
    mailbox: Mailbox
    stop_listening: Callable[[], None] = _nothing
    stop_closing: Callable[[], None] = _nothing


def peer_text(address: Any) -> str:
    """``host:port`` (``[v6]:port``) of a ``(host, port, …)`` address, as the authenticator
    and presence name a peer."""
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class CoapServer(DatagramProtocol):
    """The CoAP device transport of one UDP socket; see the module docstring."""

    noisy = False

    def __init__(
        self,
        clock: Any,
        auth: Authenticator,
        pipeline: UplinkPipeline,
        endpoints: Endpoints,
        config: CoapConfig | None = None,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.clock = clock
        self.auth = auth
        self.pipeline = pipeline
        self.endpoints = endpoints
        self.config = config = config or CoapConfig()
        self.exchange = Endpoint(
            rng=rng,
            max_body=_budget(config.max_body),
            max_peers=_budget(config.max_peers),
            max_observations=_budget(config.max_observations),
            max_transfers=_budget(config.max_blocks),
        )
        self.max_pending = _budget(config.max_pending)
        self.pending: dict[Any, int] = {}
        self.pending_total = 0
        self.observers: dict[Any, dict[bytes, _Observer]] = {}  # peer -> token -> observer
        self.stats = {"requests": 0, "refused": 0, "notifications": 0, "undelivered": 0}
        self._timer: Any = None

    # --- datagrams in and out --------------------------------------------------------------

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self._run(self.exchange.receive(addr, datagram, self.clock.seconds()))
        if addr in self.observers:
            self._pump(addr)

    def _run(self, outputs: list[Output]) -> None:
        for output in outputs:
            if isinstance(output, Transmit):
                self._send(output)
            elif isinstance(output, Request):
                self.stats["requests"] += 1
                self._serve(output)
            elif isinstance(output, ObservationEnded):
                self._forget(output.peer, output.token)
            elif isinstance(output, DeliveryFailed):
                self.stats["undelivered"] += 1
                log.debug("CoAP answer to {peer} lost: {r}", peer=output.peer, r=output.reason)
            elif isinstance(output, Refused):
                self.stats["refused"] += 1
        self._arm()

    def _send(self, transmit: Transmit) -> None:
        transport: Any = self.transport  # IUDPTransport.write's stub lacks its address
        if transport is None:
            return
        try:
            transport.write(transmit.data, transmit.peer)
        except OSError as exc:  # an unreachable peer: its retransmissions give up in time
            log.debug("CoAP send to {peer} failed: {e}", peer=transmit.peer, e=str(exc))

    def _arm(self) -> None:
        """One timer: the next retransmission, else the next sweep of remembered state."""
        now = self.clock.seconds()
        deadline = self.exchange.next_deadline()
        if deadline is None:
            if not self.exchange.peers:
                return
            deadline = now + SWEEP_SECONDS
        delay = max(deadline - now, 0.0)
        if self._timer is not None and self._timer.active():
            if self._timer.getTime() <= deadline:
                return
            self._timer.reset(delay)
            return
        self._timer = self.clock.callLater(delay, self._poll)

    def _poll(self) -> None:
        self._timer = None
        self._run(self.exchange.poll(self.clock.seconds()))

    def stop(self) -> None:
        """The node stops: timers cancelled, observations forgotten."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        for peer, tokens in list(self.observers.items()):
            for token in list(tokens):
                self._forget(peer, token)

    # --- requests --------------------------------------------------------------------------

    def _serve(self, request: Request) -> None:
        found = resources.route(request.message)
        if isinstance(found, Response):
            self._answer(request, found)
            return
        peer = request.peer
        if (
            self.pending.get(peer, 0) >= MAX_PENDING_PER_PEER
            or self.pending_total >= self.max_pending
        ):
            self._answer(request, resources.text(Code.SERVICE_UNAVAILABLE, "too many requests"))
            return
        self.pending[peer] = self.pending.get(peer, 0) + 1
        self.pending_total += 1
        answered = Deferred.fromCoroutine(self._outcome(request, found))
        answered.addErrback(self._failed)
        if not answered.called and not request.acknowledged:
            later = self.clock.callLater(DEFER_AFTER, self._defer, request)
            answered.addBoth(lambda result: _cancel(later, result))
        answered.addCallback(self._conclude, request, found)

    def _defer(self, request: Request) -> None:
        if not request.answered:
            self._run(self.exchange.defer(request))

    def _failed(self, failure: Any) -> Response:
        log.failure("CoAP request failed", failure)
        return resources.text(Code.INTERNAL_SERVER_ERROR, "internal error")

    def _conclude(self, response: Response, request: Request, found: resources.Route) -> None:
        peer = request.peer
        self.pending_total -= 1
        left = self.pending.get(peer, 1) - 1
        if left > 0:
            self.pending[peer] = left
        else:
            self.pending.pop(peer, None)
        self._answer(request, response, found)

    async def _outcome(self, request: Request, found: resources.Route) -> Response:
        """What the request comes to: authenticated, then stored or read."""
        if found.password is None:
            return resources.text(Code.UNAUTHORIZED, resources.CREDENTIALS_MISSING)
        peer = peer_text(request.peer)
        checked = self.auth.check(found.user, found.password.encode(), peer, transport=TRANSPORT)
        result: AuthResult = await checked if isinstance(checked, Deferred) else checked
        if not result.ok:
            return resources.refused(result.reason, result.detail)
        if result.identity != found.device:
            return resources.another_device(result.identity or found.user, found.device)
        mailbox = self.endpoints.touch(found.device, peer, TRANSPORT)
        if found.method == Code.GET:
            waiting = mailbox.take(found.suffix)
            return resources.content(waiting.payload if waiting is not None else None)
        handling = self.pipeline.handle(
            result.identity, found.device, found.suffix, request.body, confirmed=True
        )
        handled: Handled = await handling if isinstance(handling, Deferred) else handling
        if handled.stored is not None:
            try:
                await handled.stored
            except Exception as exc:
                log.warn("CoAP uplink of {d} not stored: {e}", d=found.device, e=str(exc))
                return resources.text(Code.SERVICE_UNAVAILABLE, "not stored; try again")
        return resources.uplink_answer(handled.answer, handled.rejected, handled.reason)

    def _answer(
        self, request: Request, response: Response, found: resources.Route | None = None
    ) -> None:
        observe = request.observe == 0 and found is not None and found.method == Code.GET
        self._run(self.exchange.respond(request, response, self.clock.seconds(), observe=observe))
        if observe and found is not None and self.exchange.observing(request.peer, request.token):
            self._listen(request.peer, request.token, found)
        elif request.observe is not None:
            self._forget(request.peer, request.token)

    # --- observations ----------------------------------------------------------------------

    def _listen(self, peer: Any, token: bytes, found: resources.Route) -> None:
        """The registration was accepted: the device's mailbox now feeds it."""
        mailbox = self.endpoints.get(found.device)
        if not isinstance(mailbox, Mailbox):
            return
        self._forget(peer, token)  # a re-registration replaces the earlier hooks
        observer = _Observer(found.suffix, mailbox)
        self.observers.setdefault(peer, {})[token] = observer
        observer.stop_closing = mailbox.on_close(lambda: self._closed(peer, token))
        observer.stop_listening = mailbox.listen(lambda m: self._offer(peer, token, m))

    def _offer(self, peer: Any, token: bytes, message: Downlink) -> bool:
        """A downlink message for the observed device: sent now, or left in the mailbox while
        the previous notification awaits its ACK (each command is an event of its own, which a
        newer one must not replace)."""
        observer = self.observers.get(peer, {}).get(token)
        if observer is None or message.suffix != observer.suffix:
            return False
        if self.exchange.awaiting_ack(peer, token):
            return False
        return self._notify(peer, token, message)

    def _notify(self, peer: Any, token: bytes, message: Downlink) -> bool:
        now = self.clock.seconds()
        outputs = self.exchange.notify(
            peer, token, resources.content(message.payload), now, confirmable=True
        )
        if not outputs:
            return False
        self.stats["notifications"] += 1
        self._run(outputs)
        return True

    def _pump(self, peer: Any) -> None:
        """After a datagram of ``peer`` (maybe the ACK of a notification): the next waiting
        message of each of its observations whose last notification was acknowledged."""
        for token, observer in list(self.observers.get(peer, {}).items()):
            if self.exchange.observing(peer, token) and not self.exchange.awaiting_ack(peer, token):
                message = observer.mailbox.take(observer.suffix)
                if message is not None:
                    self._notify(peer, token, message)

    def _closed(self, peer: Any, token: bytes) -> None:
        """The device's mailbox closed (lease ended, device dropped): a last notification
        ends the observation on the client too."""
        self._forget(peer, token)
        now = self.clock.seconds()
        ended = resources.ended(LEASE_ENDED)
        self._run(self.exchange.notify(peer, token, ended, now, confirmable=True))

    def _forget(self, peer: Any, token: bytes) -> None:
        """Drop the mailbox hooks of the observation (peer, token)."""
        tokens = self.observers.get(peer)
        observer = tokens.pop(token, None) if tokens is not None else None
        if tokens is not None and not tokens:
            del self.observers[peer]
        if observer is not None:
            observer.stop_listening()
            observer.stop_closing()

    def samples(self) -> list[tuple[Any, ...]]:
        return [
            ("edge_coap_peers", "gauge", "CoAP peers remembered", self.exchange.peers),
            ("edge_coap_observations", "gauge", "CoAP observations", self.exchange.observations),
            ("edge_coap_transfers", "gauge", "CoAP block-wise transfers", self.exchange.transfers),
            ("edge_coap_pending", "gauge", "CoAP requests being served", self.pending_total),
            ("edge_coap_requests_total", "counter", "CoAP requests", self.stats["requests"]),
            (
                "edge_coap_notifications_total",
                "counter",
                "CoAP notifications sent",
                self.stats["notifications"],
            ),
            (
                "edge_coap_refused_total",
                "counter",
                "CoAP datagrams refused or dropped",
                self.stats["refused"],
            ),
        ]


def _budget(value: int) -> int:
    """A budget of 0 is no limit, as for every edge budget."""
    return value or sys.maxsize


def _cancel(call: Any, result: Any) -> Any:
    if call.active():
        call.cancel()
    return result
