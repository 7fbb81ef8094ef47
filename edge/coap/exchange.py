"""The server side of CoAP's message layer as a pure state machine (no sockets, no clock).

``Endpoint.receive(peer, datagram, now)`` returns what follows from one datagram: ``Transmit``
values (datagrams to send, answers the layer gives on its own) and ``Request`` values for the
application, which answers each with ``Endpoint.respond``. ``Endpoint.notify`` sends an Observe
notification; ``Endpoint.poll(now)``, called at ``Endpoint.next_deadline()``, retransmits
Confirmable messages and reports the ones that were never acknowledged. ``now`` is seconds on
any monotonic clock; ``peer`` is any hashable address (the transport's ``(host, port)``).

What the layer does on its own, so the application only sees whole, new requests:

* Deduplication (RFC 7252 section 4.5): a request is remembered by (peer, message id) for
  EXCHANGE_LIFETIME (Confirmable) or NON_LIFETIME (Non-confirmable); a duplicate Confirmable
  request gets the cached answer again, a duplicate Non-confirmable one is dropped.
* Answers: a response to a Confirmable request is piggybacked on its ACK; after ``defer`` (an
  empty ACK, for answers that take time) it goes as a separate Confirmable response. A ping
  (Empty CON) and an unexpected Confirmable response get a Reset; format errors in a
  Confirmable message get a Reset; a bad critical option in a request gets 4.02 Bad Option.
* Block1 (RFC 7959): a request body arriving in blocks is reassembled (2.31 Continue per block,
  4.08 Request Entity Incomplete for a block out of order, 4.13 Request Entity Too Large with
  Size1 past ``max_body``); the application sees the whole body once.
* Block2: a response larger than the block size is sliced; the whole body is kept for
  EXCHANGE_LIFETIME so the client's requests for the later blocks are answered from it (a miss
  goes to the application, whose answer is sliced at the asked block). A smaller SZX asked by
  the client is honoured.
* Observe (RFC 7641): registrations per (peer, token) with 24-bit sequence numbers; an Observe
  1 request, a Reset to a notification or a Confirmable notification never acknowledged ends
  one. A new Confirmable notification replaces one still in flight (RFC 7641 section 4.5.2).
* Retransmission of Confirmable messages: ACK_TIMEOUT times a random factor in
  [1, ACK_RANDOM_FACTOR) from the injected ``rng``, doubled each time, MAX_RETRANSMIT times.

Everything a peer can make the endpoint remember is bounded, per peer and overall, by the
constructor's budgets: peers, remembered exchanges, observations and block transfers (each
transfer holds at most ``max_body`` bytes). Past the exchange budget the *oldest* remembered
exchanges are forgotten to make room (deduplication is a SHOULD in RFC 7252 section 4.5: the
cost of forgetting early is that a duplicate of a forgotten request is processed twice,
while refusing would cap a node at budget / EXCHANGE_LIFETIME requests per second). Past the
other budgets the request gets 5.03 Service Unavailable (or an Observe registration is
declined: the response simply carries no Observe option; a Non-confirmable request of a peer
past ``max_peers`` is dropped).

Message ids of server-originated messages come from a per-peer counter that starts at a random
value; a peer's counter is kept while the peer has anything remembered and for
EXCHANGE_LIFETIME after the last id it gave, so no id comes back within that time (unless a
peer is sent more than 65536 messages in it).
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

from .message import (
    MAX_SZX,
    Block,
    Code,
    Message,
    MessageFormatError,
    OptionNumber,
    Type,
    bad_option,
    build,
    decode,
    empty,
    encode,
    is_response,
    is_success,
    option,
)

ACK_TIMEOUT = 2.0
ACK_RANDOM_FACTOR = 1.5
MAX_RETRANSMIT = 4
EXCHANGE_LIFETIME = 247.0
NON_LIFETIME = 145.0
OBSERVE_MODULUS = 1 << 24
SWEEP_INTERVAL = 1.0
RECENT_NOTIFICATIONS = 4  # Non-confirmable notification ids kept per observation for a Reset

Peer = Hashable

# Options that are not part of a block-wise transfer's identity (RFC 7959 section 2.4).
_NOT_IN_TRANSFER_KEY = frozenset(
    (
        OptionNumber.BLOCK1,
        OptionNumber.BLOCK2,
        OptionNumber.SIZE1,
        OptionNumber.SIZE2,
        OptionNumber.OBSERVE,
    )
)


# --- what the endpoint gives back -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Transmit:
    """A datagram to send to ``peer``; ``message`` is what it encodes."""

    peer: Peer
    message: Message

    @property
    def data(self) -> bytes:
        return encode(self.message)


@dataclass(eq=False, slots=True)
class Request:
    """A new request for the application, its body reassembled from its Block1 blocks."""

    peer: Peer
    message: Message
    body: bytes
    observe: int | None  # 0 asks to register, 1 to deregister (RFC 7641), None otherwise
    block1: Block | None = None
    block2: Block | None = None
    acknowledged: bool = field(default=False)
    answered: bool = field(default=False)

    @property
    def token(self) -> bytes:
        return self.message.token


@dataclass(frozen=True, slots=True)
class ObservationEnded:
    """An observation is gone; ``reason`` says why (a Reset, no acknowledgement, Observe 1)."""

    peer: Peer
    token: bytes
    reason: str


@dataclass(frozen=True, slots=True)
class DeliveryFailed:
    """A separate Confirmable response was never acknowledged, or was refused with a Reset."""

    peer: Peer
    token: bytes
    reason: str


@dataclass(frozen=True, slots=True)
class Refused:
    """A datagram the endpoint refused or dropped, for logs and metrics."""

    peer: Peer
    reason: str


Output = Transmit | Request | ObservationEnded | DeliveryFailed | Refused


@dataclass(frozen=True, slots=True)
class Response:
    """What the application answers: code, options (``message.option`` pairs) and payload."""

    code: int
    payload: bytes = b""
    options: tuple[tuple[int, bytes], ...] = ()


# --- internal state ---------------------------------------------------------------------------


@dataclass(slots=True)
class _Seen:
    reply: Message | None = None


@dataclass(slots=True)
class _Pending:
    message: Message
    attempts: int
    timeout: float
    deadline: float
    observation: bool


@dataclass(slots=True)
class _Observation:
    sequence: int
    transfer_key: tuple[object, ...]
    szx: int
    in_flight: int | None = None  # message id of the Confirmable notification awaiting its ACK
    recent: deque[int] = field(default_factory=lambda: deque(maxlen=RECENT_NOTIFICATIONS))


@dataclass(slots=True)
class _Transfer:
    """A Block1 body being reassembled, or a Block2 body being served."""

    data: bytearray | bytes
    expires: float
    code: int = Code.EMPTY
    options: tuple[tuple[int, bytes], ...] = ()


@dataclass(slots=True)
class _PeerState:
    next_mid: int
    exchanges: int = 0
    # The message ids of its remembered exchanges, oldest first (the ones forgotten first
    # when it is over its budget).
    remembered: dict[int, None] = field(default_factory=dict)
    observations: int = 0
    transfers: int = 0
    pending: int = 0
    mids_until: float = float("-inf")  # its message ids are not reused before then

    def idle(self, now: float) -> bool:
        busy = self.exchanges or self.observations or self.transfers or self.pending
        return not busy and now >= self.mids_until


def transfer_key(message: Message) -> tuple[object, ...]:
    """What identifies one block-wise transfer besides the peer: method and the other options."""
    return (
        message.code,
        tuple(item for item in message.options if item[0] not in _NOT_IN_TRANSFER_KEY),
    )


class Endpoint:
    """The CoAP message layer of one server socket; see the module docstring."""

    def __init__(
        self,
        *,
        rng: Callable[[], float] = random.random,
        max_body: int = 64 * 1024,
        preferred_szx: int = MAX_SZX,
        max_exchanges_per_peer: int = 2048,
        max_exchanges: int = 200_000,
        max_observations_per_peer: int = 8,
        max_observations: int = 50_000,
        max_transfers_per_peer: int = 4,
        max_transfers: int = 512,
        max_peers: int = 10_000,
    ) -> None:
        if not 0 <= preferred_szx <= MAX_SZX:
            raise ValueError("preferred_szx is 0..6")
        self.rng = rng
        self.max_body = max_body
        self.preferred_szx = preferred_szx
        self.max_exchanges_per_peer = max_exchanges_per_peer
        self.max_exchanges = max_exchanges
        self.max_observations_per_peer = max_observations_per_peer
        self.max_observations = max_observations
        self.max_transfers_per_peer = max_transfers_per_peer
        self.max_transfers = max_transfers
        self.max_peers = max_peers
        self._peers: dict[Peer, _PeerState] = {}
        self._seen: dict[tuple[Peer, int], _Seen] = {}
        self._seen_con: deque[tuple[float, tuple[Peer, int]]] = deque()
        self._seen_non: deque[tuple[float, tuple[Peer, int]]] = deque()
        self._pending: dict[tuple[Peer, int], _Pending] = {}
        self._timers: list[tuple[float, int, tuple[Peer, int]]] = []
        self._timer_seq = 0
        self._observations: dict[tuple[Peer, bytes], _Observation] = {}
        self._notified: dict[tuple[Peer, int], bytes] = {}  # NON notification id -> token
        self._assemblies: dict[tuple[Peer, tuple[object, ...]], _Transfer] = {}
        self._bodies: dict[tuple[Peer, tuple[object, ...]], _Transfer] = {}
        self._last_sweep = float("-inf")
        self._now = float("-inf")  # the latest time the caller passed in

    # --- counts, for tests and metrics ---------------------------------------------------

    @property
    def exchanges(self) -> int:
        return len(self._seen)

    @property
    def observations(self) -> int:
        return len(self._observations)

    @property
    def transfers(self) -> int:
        return len(self._assemblies) + len(self._bodies)

    @property
    def peers(self) -> int:
        return len(self._peers)

    def observing(self, peer: Peer, token: bytes) -> bool:
        return (peer, token) in self._observations

    def awaiting_ack(self, peer: Peer, token: bytes) -> bool:
        """Whether a Confirmable notification of the observation is still unacknowledged: a
        caller whose notifications are distinct events (not states, where the newer replaces
        the older) waits for its ACK before it sends the next."""
        observation = self._observations.get((peer, token))
        return observation is not None and observation.in_flight is not None

    # --- input -----------------------------------------------------------------------------

    def receive(self, peer: Peer, data: bytes, now: float) -> list[Output]:
        """Everything that follows from one datagram of ``peer``."""
        self._expire(now)
        try:
            message = decode(data)
        except MessageFormatError as error:
            out: list[Output] = [Refused(peer, error.reason)]
            reply = error.reply()
            if reply is not None:
                out.append(Transmit(peer, reply))
            return out
        if message.type is Type.ACK or message.type is Type.RST:
            return self._settle(peer, message)
        if message.code == Code.EMPTY:  # a CON ping
            return [Transmit(peer, empty(Type.RST, message.mid))]
        if is_response(message.code):
            refusal: list[Output] = [Refused(peer, "a response to no request of this server")]
            if message.type is Type.CON:
                refusal.append(Transmit(peer, empty(Type.RST, message.mid)))
            return refusal
        return self._request(peer, message, now)

    def _request(self, peer: Peer, message: Message, now: float) -> list[Output]:
        key = (peer, message.mid)
        seen = self._seen.get(key)
        if seen is not None:
            if message.type is Type.CON and seen.reply is not None:
                return [Transmit(peer, seen.reply)]
            return [Refused(peer, f"duplicate of message {message.mid}")]
        if peer not in self._peers and len(self._peers) >= self.max_peers:
            return self._stranger(peer, message)
        self._make_room(peer, self._peer(peer))
        self._remember(key, message.type, now)
        problem = bad_option(message)
        if problem:
            return self._answer_directly(peer, message, Response(Code.BAD_OPTION, problem.encode()))
        try:
            block1, block2 = message.block1, message.block2
        except ValueError as error:
            return self._answer_directly(
                peer, message, Response(Code.BAD_REQUEST, str(error).encode())
            )
        if block2 is not None and block2.num > 0 and block1 is None:
            served = self._serve_block(peer, message, block2, now)
            if served is not None:
                return served
        body = message.payload
        if block1 is not None:
            assembled = self._assemble(peer, message, block1, now)
            if isinstance(assembled, Response):
                return self._answer_directly(peer, message, assembled)
            body = assembled
        elif len(body) > self.max_body:
            return self._answer_directly(peer, message, self._too_large())
        observe = message.observe
        if observe not in (0, 1) or message.code not in (Code.GET, Code.FETCH):
            observe = None
        out: list[Output] = []
        if observe == 1 and self._end_observation(peer, message.token):
            out.append(ObservationEnded(peer, message.token, "deregistered with Observe 1"))
        out.append(Request(peer, message, body, observe, block1, block2))
        return out

    def _settle(self, peer: Peer, message: Message) -> list[Output]:
        """An ACK or RST: it settles our Confirmable message, or a Reset ends an observation."""
        key = (peer, message.mid)
        pending = self._pending.pop(key, None)
        if pending is not None:
            self._peer(peer).pending -= 1
            token = pending.message.token
            if pending.observation:
                observation = self._observations.get((peer, token))
                if observation is not None and observation.in_flight == message.mid:
                    observation.in_flight = None
            if message.type is Type.RST:
                if pending.observation:
                    self._end_observation(peer, token)
                    return [ObservationEnded(peer, token, "the client answered with a Reset")]
                return [DeliveryFailed(peer, token, "the client answered with a Reset")]
            return []
        if message.type is Type.RST:
            token_of_non = self._notified.pop(key, None)
            if token_of_non is not None and self._end_observation(peer, token_of_non):
                return [ObservationEnded(peer, token_of_non, "the client answered with a Reset")]
        return []

    # --- Block1 and Block2 -----------------------------------------------------------------

    def _too_large(self) -> Response:
        return Response(
            Code.REQUEST_ENTITY_TOO_LARGE,
            f"the body is limited to {self.max_body} bytes".encode(),
            (option(OptionNumber.SIZE1, self.max_body),),
        )

    def _assemble(self, peer: Peer, message: Message, block: Block, now: float) -> bytes | Response:
        key = (peer, transfer_key(message))
        size1 = message.uint(OptionNumber.SIZE1)
        if (size1 is not None and size1 > self.max_body) or (
            block.offset + len(message.payload) > self.max_body
        ):
            self._drop_transfer(self._assemblies, key)
            return self._too_large()
        if block.more and len(message.payload) != block.size:
            self._drop_transfer(self._assemblies, key)
            return Response(
                Code.BAD_REQUEST, f"block {block.num} is not {block.size} bytes long".encode()
            )
        if block.num == 0:
            self._drop_transfer(self._assemblies, key)
            if not block.more:
                return message.payload
            if not self._transfer_budget(peer):
                return Response(Code.SERVICE_UNAVAILABLE, b"too many transfers in progress")
            assembly = _Transfer(bytearray(), now + EXCHANGE_LIFETIME)
            self._assemblies[key] = assembly
            self._peer(peer).transfers += 1
        else:
            found = self._assemblies.get(key)
            if found is None or len(found.data) != block.offset:
                self._drop_transfer(self._assemblies, key)
                return Response(
                    Code.REQUEST_ENTITY_INCOMPLETE,
                    f"block {block.num} does not follow the blocks received".encode(),
                )
            assembly = found
        assert isinstance(assembly.data, bytearray)
        assembly.data += message.payload
        if block.more:
            assembly.expires = now + EXCHANGE_LIFETIME
            szx = min(block.szx, self.preferred_szx)
            return Response(
                Code.CONTINUE, options=(option(OptionNumber.BLOCK1, Block(block.num, True, szx)),)
            )
        self._drop_transfer(self._assemblies, key)
        return bytes(assembly.data)

    def _serve_block(
        self, peer: Peer, message: Message, block: Block, now: float
    ) -> list[Output] | None:
        """A later block of a body we sliced before, or None when it is not remembered."""
        body = self._bodies.get((peer, transfer_key(message)))
        if body is None:
            return None
        body.expires = now + EXCHANGE_LIFETIME
        response = Response(body.code, bytes(body.data), body.options)
        return self._answer_directly(peer, message, response, block)

    def _slice(
        self, response: Response, asked: Block | None, szx: int
    ) -> tuple[Response, bool] | Response:
        """The block of ``response`` the client asked for (a whole small body as it is)."""
        payload = response.payload
        if asked is None:
            if len(payload) <= 1 << (szx + 4):
                return response, False
            num = 0
        else:  # a smaller block size than asked covers the same offset (RFC 7959 2.4)
            szx = min(szx, asked.szx)
            num = asked.offset >> (szx + 4)
            if asked.num > 0 and asked.offset >= len(payload):
                return Response(Code.BAD_OPTION, f"there is no block {asked.num}".encode())
        size = 1 << (szx + 4)
        chunk = payload[num * size : (num + 1) * size]
        more = (num + 1) * size < len(payload)
        options = [item for item in response.options if item[0] != OptionNumber.BLOCK2]
        options.append(option(OptionNumber.BLOCK2, Block(num, more, szx)))
        if num == 0:
            options.append(option(OptionNumber.SIZE2, len(payload)))
        return Response(response.code, chunk, tuple(options)), more

    def _keep_body(
        self, peer: Peer, key: tuple[object, ...], response: Response, now: float
    ) -> None:
        full = (peer, key)
        if full in self._bodies:
            self._bodies[full] = _Transfer(
                response.payload, now + EXCHANGE_LIFETIME, response.code, response.options
            )
            return
        if not self._transfer_budget(peer):
            return  # later blocks go to the application, which answers them again
        self._bodies[full] = _Transfer(
            response.payload, now + EXCHANGE_LIFETIME, response.code, response.options
        )
        self._peer(peer).transfers += 1

    def _transfer_budget(self, peer: Peer) -> bool:
        return (
            self._peer(peer).transfers < self.max_transfers_per_peer
            and self.transfers < self.max_transfers
        )

    def _drop_transfer(
        self,
        table: dict[tuple[Peer, tuple[object, ...]], _Transfer],
        key: tuple[Peer, tuple[object, ...]],
    ) -> None:
        if table.pop(key, None) is not None:
            self._peer(key[0]).transfers -= 1

    # --- output ----------------------------------------------------------------------------

    def respond(
        self, request: Request, response: Response, now: float, *, observe: bool = False
    ) -> list[Output]:
        """Send the application's answer to ``request`` (once).

        ``observe=True`` accepts an Observe registration (``request.observe == 0``) when the
        response is a success and the budgets allow: the response then carries the sequence
        number and later ``notify`` calls reach the client. Otherwise a registration is
        declined by leaving the Observe option out, as RFC 7641 section 4.1 allows.
        """
        if request.answered:
            raise ValueError("this request was answered already")
        self._now = max(self._now, now)
        request.answered = True
        peer, message = request.peer, request.message
        options = [item for item in response.options if item[0] != OptionNumber.OBSERVE]
        if request.block1 is not None:
            options = [item for item in options if item[0] != OptionNumber.BLOCK1]
            options.append(option(OptionNumber.BLOCK1, request.block1._replace(more=False)))
        if request.observe == 0:
            registered = observe and is_success(response.code)
            if registered:
                registered = self._register(peer, message, request.block2)
            if registered:
                sequence = self._observations[(peer, message.token)].sequence
                options.append(option(OptionNumber.OBSERVE, sequence))
            else:
                self._end_observation(peer, message.token)
        full = Response(response.code, response.payload, tuple(options))
        sliced = self._slice(full, request.block2, self.preferred_szx)
        if isinstance(sliced, tuple) and sliced[1]:
            self._keep_body(peer, transfer_key(message), full, now)
        answer = sliced[0] if isinstance(sliced, tuple) else sliced
        if message.type is Type.CON and request.acknowledged:
            return [self._send_confirmable(peer, message.token, answer, now, observation=False)]
        return self._reply(peer, message, answer)

    def defer(self, request: Request) -> list[Output]:
        """Acknowledge a Confirmable request now and answer it later (a separate response)."""
        if request.message.type is not Type.CON or request.acknowledged or request.answered:
            return []
        request.acknowledged = True
        ack = empty(Type.ACK, request.message.mid)
        seen = self._seen.get((request.peer, request.message.mid))
        if seen is not None:
            seen.reply = ack
        return [Transmit(request.peer, ack)]

    def notify(
        self, peer: Peer, token: bytes, response: Response, now: float, *, confirmable: bool = False
    ) -> list[Output]:
        """A notification to the observation (peer, token); nothing when it has ended."""
        observation = self._observations.get((peer, token))
        if observation is None:
            return []
        self._now = max(self._now, now)
        observation.sequence = (observation.sequence + 1) % OBSERVE_MODULUS
        options = [item for item in response.options if item[0] != OptionNumber.OBSERVE]
        options.append(option(OptionNumber.OBSERVE, observation.sequence))
        full = Response(response.code, response.payload, tuple(options))
        sliced = self._slice(full, None, observation.szx)
        assert isinstance(sliced, tuple)
        answer, more = sliced
        if more:
            self._keep_body(peer, observation.transfer_key, full, now)
        final = not is_success(response.code)
        if final:  # an error notification ends the observation (RFC 7641 section 3.2)
            self._end_observation(peer, token)
        if confirmable:
            return [self._send_confirmable(peer, token, answer, now, observation=not final)]
        mid = self._next_mid(peer)
        if not final:
            if len(observation.recent) == observation.recent.maxlen:
                self._notified.pop((peer, observation.recent[0]), None)
            observation.recent.append(mid)
            self._notified[(peer, mid)] = token
        return [Transmit(peer, self._message(Type.NON, mid, token, answer))]

    def poll(self, now: float) -> list[Output]:
        """Retransmit what is due and report what was never acknowledged."""
        self._expire(now)
        out: list[Output] = []
        while self._timers and self._timers[0][0] <= now:
            _, _, key = heapq.heappop(self._timers)
            pending = self._pending.get(key)
            if pending is None or pending.deadline > now:
                continue  # settled, or replaced by a newer notification with its own timer
            peer, token = key[0], pending.message.token
            if pending.attempts >= MAX_RETRANSMIT:
                del self._pending[key]
                self._peer(peer).pending -= 1
                if pending.observation:
                    self._end_observation(peer, token)
                    out.append(ObservationEnded(peer, token, "no acknowledgement"))
                else:
                    out.append(DeliveryFailed(peer, token, "no acknowledgement"))
                continue
            pending.attempts += 1
            pending.timeout *= 2
            self._arm(key, pending, now)
            out.append(Transmit(peer, pending.message))
        return out

    def next_deadline(self) -> float | None:
        """When ``poll`` has something to do next, or None when nothing is in flight."""
        while self._timers:
            deadline, _, key = self._timers[0]
            pending = self._pending.get(key)
            if pending is not None and pending.deadline == deadline:
                return deadline
            heapq.heappop(self._timers)
        return None

    # --- helpers ---------------------------------------------------------------------------

    def _peer(self, peer: Peer) -> _PeerState:
        state = self._peers.get(peer)
        if state is None:
            state = self._peers[peer] = _PeerState(int(self.rng() * 0x10000) & 0xFFFF)
        return state

    def _next_mid(self, peer: Peer) -> int:
        state = self._peer(peer)
        mid = state.next_mid
        state.next_mid = (mid + 1) & 0xFFFF
        state.mids_until = self._now + EXCHANGE_LIFETIME
        return mid

    def _remember(self, key: tuple[Peer, int], type_: Type, now: float) -> None:
        self._seen[key] = _Seen()
        state = self._peer(key[0])
        state.exchanges += 1
        state.remembered[key[1]] = None
        if type_ is Type.CON:
            self._seen_con.append((now + EXCHANGE_LIFETIME, key))
        else:
            self._seen_non.append((now + NON_LIFETIME, key))

    def _forget(self, key: tuple[Peer, int]) -> None:
        if self._seen.pop(key, None) is not None:
            state = self._peers.get(key[0])
            if state is not None:
                state.exchanges -= 1
                state.remembered.pop(key[1], None)

    def _make_room(self, peer: Peer, state: _PeerState) -> None:
        """Forget the oldest exchanges of ``peer``, then of anyone, until one more fits."""
        while state.exchanges >= self.max_exchanges_per_peer and state.remembered:
            self._forget((peer, next(iter(state.remembered))))
        while len(self._seen) >= self.max_exchanges:
            con, non = self._seen_con, self._seen_non
            # The queue whose front was remembered first (fronts may be forgotten already).
            if not non or (con and con[0][0] - EXCHANGE_LIFETIME <= non[0][0] - NON_LIFETIME):
                _, key = con.popleft()
            else:
                _, key = non.popleft()
            self._forget(key)
        # Keys forgotten for a peer's budget stay in the expiry queues until they expire:
        # compact the queues when those are most of them, so a flood cannot grow them.
        for queue in (self._seen_con, self._seen_non):
            if len(queue) > 2 * self.max_exchanges + 1024:
                kept = [(t, key) for t, key in queue if key in self._seen]
                queue.clear()
                queue.extend(kept)

    def _expire(self, now: float) -> None:
        self._now = max(self._now, now)
        for queue in (self._seen_con, self._seen_non):
            while queue and queue[0][0] <= now:
                _, key = queue.popleft()
                self._forget(key)
        if now - self._last_sweep < SWEEP_INTERVAL:
            return
        self._last_sweep = now
        for table in (self._assemblies, self._bodies):
            for done in [key for key, item in table.items() if item.expires <= now]:
                self._drop_transfer(table, done)
        for peer in [peer for peer, state in self._peers.items() if state.idle(now)]:
            del self._peers[peer]

    def _register(self, peer: Peer, message: Message, block2: Block | None) -> bool:
        key = (peer, message.token)
        szx = min(self.preferred_szx, block2.szx) if block2 else self.preferred_szx
        existing = self._observations.get(key)
        if existing is not None:  # a re-registration (RFC 7641 4.1) answers with a newer number
            existing.transfer_key, existing.szx = transfer_key(message), szx
            existing.sequence = (existing.sequence + 1) % OBSERVE_MODULUS
            return True
        state = self._peer(peer)
        if (
            state.observations >= self.max_observations_per_peer
            or len(self._observations) >= self.max_observations
        ):
            return False
        self._observations[key] = _Observation(
            int(self.rng() * OBSERVE_MODULUS) % OBSERVE_MODULUS, transfer_key(message), szx
        )
        state.observations += 1
        return True

    def _end_observation(self, peer: Peer, token: bytes) -> bool:
        observation = self._observations.pop((peer, token), None)
        if observation is None:
            return False
        for mid in observation.recent:
            self._notified.pop((peer, mid), None)
        if observation.in_flight is not None:
            in_flight = self._pending.pop((peer, observation.in_flight), None)
            if in_flight is not None:
                self._peer(peer).pending -= 1
        self._peer(peer).observations -= 1
        return True

    def _message(self, type_: Type, mid: int, token: bytes, response: Response) -> Message:
        return build(type_, response.code, mid, token, response.options, response.payload)

    def _reply(self, peer: Peer, request: Message, response: Response) -> list[Output]:
        """A piggybacked ACK for a CON request (cached for its duplicates), a NON otherwise."""
        if request.type is Type.CON:
            reply = self._message(Type.ACK, request.mid, request.token, response)
            seen = self._seen.get((peer, request.mid))
            if seen is not None:
                seen.reply = reply
        else:
            reply = self._message(Type.NON, self._next_mid(peer), request.token, response)
        return [Transmit(peer, reply)]

    def _answer_directly(
        self, peer: Peer, request: Message, response: Response, block2: Block | None = None
    ) -> list[Output]:
        if block2 is not None:
            sliced = self._slice(response, block2, self.preferred_szx)
            response = sliced[0] if isinstance(sliced, tuple) else sliced
        return self._reply(peer, request, response)

    def _uncached(self, peer: Peer, request: Message, code: int, reason: bytes) -> list[Output]:
        if request.type is Type.CON:
            reply = self._message(Type.ACK, request.mid, request.token, Response(code, reason))
        else:
            mid = self._next_mid(peer)
            reply = self._message(Type.NON, mid, request.token, Response(code, reason))
        return [Refused(peer, reason.decode()), Transmit(peer, reply)]

    def _stranger(self, peer: Peer, request: Message) -> list[Output]:
        """A request of a new peer past ``max_peers``: a Confirmable one gets 5.03 in its ACK,
        a Non-confirmable one is dropped (its answer would need state: a message id)."""
        refused: list[Output] = [Refused(peer, "too many peers")]
        if request.type is Type.CON:
            answer = Response(Code.SERVICE_UNAVAILABLE, b"too many peers")
            reply = self._message(Type.ACK, request.mid, request.token, answer)
            refused.append(Transmit(peer, reply))
        return refused

    def _send_confirmable(
        self, peer: Peer, token: bytes, response: Response, now: float, *, observation: bool
    ) -> Transmit:
        mid = self._next_mid(peer)
        message = self._message(Type.CON, mid, token, response)
        attempts, timeout = 0, ACK_TIMEOUT * (1 + (ACK_RANDOM_FACTOR - 1) * self.rng())
        deadline = now + timeout
        if observation:
            current = self._observations[(peer, token)]
            replaced = (
                self._pending.pop((peer, current.in_flight), None)
                if current.in_flight is not None
                else None
            )
            if replaced is not None:  # RFC 7641 4.5.2: the new one inherits the old one's timer
                self._peer(peer).pending -= 1
                attempts, timeout, deadline = replaced.attempts, replaced.timeout, replaced.deadline
            current.in_flight = mid
        pending = _Pending(message, attempts, timeout, deadline, observation)
        self._pending[(peer, mid)] = pending
        self._peer(peer).pending += 1
        self._push_timer((peer, mid), deadline)
        return Transmit(peer, message)

    def _arm(self, key: tuple[Peer, int], pending: _Pending, now: float) -> None:
        pending.deadline = now + pending.timeout
        self._push_timer(key, pending.deadline)

    def _push_timer(self, key: tuple[Peer, int], deadline: float) -> None:
        self._timer_seq += 1
        heapq.heappush(self._timers, (deadline, self._timer_seq, key))
