"""Broker state independent of I/O: sessions, subscriptions, routing and retained messages.

A :class:`Broker` knows clients only as :class:`~edge.mqtt.connection.MqttConnection` objects
(sans-I/O) and the outside world only through :class:`BrokerHooks` (authentication, ACL, what
to do with published messages). Time comes from an injected ``IReactorTime``.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from .errors import Reason
from .packets import Subscription
from .properties import NO_PROPERTIES, Properties
from .topics import TopicTrie, matches, split_shared

if TYPE_CHECKING:
    from .connection import MqttConnection


ROUTE_CACHE_SIZE = 50_000


class SessionStore(Protocol):
    """Where persistent sessions are kept beyond this process (edge.bus.sessions)."""

    def forget(self, client_id: str) -> None: ...

    def online(self, session: Session) -> None: ...

    def offline(self, session: Session) -> None: ...

    def subscriptions_changed(self, session: Session) -> None: ...

    def queued(self, session: Session, outgoing: Outgoing) -> None: ...

    def discarded(self, session: Session) -> None: ...

    def load(self, client_id: str) -> Deferred[bool]: ...


class DelayedCall(Protocol):
    def active(self) -> bool: ...

    def cancel(self) -> None: ...


class Clock(Protocol):
    """The part of ``IReactorTime`` the broker uses (a reactor or ``task.Clock``)."""

    def seconds(self) -> float: ...

    def callLater(self, delay: float, func: Callable[..., Any], *args: Any, **kw: Any) -> Any: ...


class Message:
    """An application message as the broker routes it (treated as immutable).

    A plain ``__slots__`` class rather than a frozen dataclass: one is built per PUBLISH, and
    frozen dataclasses are several times slower to construct.
    """

    __slots__ = ("expires_at", "origin", "payload", "properties", "qos", "retain", "topic")

    def __init__(
        self,
        topic: str,
        payload: bytes,
        qos: int = 0,
        retain: bool = False,
        properties: Properties = NO_PROPERTIES,
        expires_at: float | None = None,
        origin: str | None = None,
    ) -> None:
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.properties = properties
        self.expires_at = expires_at
        self.origin = origin

    def __repr__(self) -> str:
        size = len(self.payload)
        return f"<Message {self.topic!r} qos={self.qos} retain={self.retain} {size} bytes>"


SubscribeAnswer = bool | int | Deferred[bool] | Deferred[int]


class Acl:
    """Which topics a client may publish to and subscribe to; this one allows everything.

    Methods return a bool, or a Deferred firing with one when the answer needs a lookup.
    ``may_subscribe`` may also refuse with an MQTT 5 SUBACK reason code (>= 0x80) instead of
    False (which stands for 0x87 Not authorized).
    """

    __slots__ = ()

    def may_publish(self, topic: str) -> bool | Deferred[bool]:
        return True

    def may_subscribe(self, topic_filter: str) -> SubscribeAnswer:
        return True


class DenyListAcl(Acl):
    """Wraps another ACL and refuses every topic matched by one of ``deny`` filters
    (``EDGE_ACL_DENY``): nobody may publish there, and a subscription inside a denied filter
    is refused with 0x80 (the code 3.1.1 has, and the one interoperability suites expect of
    a filter the server does not allow). A wider filter (``#``) is accepted: no client can
    publish on a denied topic, so it never carries denied traffic."""

    __slots__ = ("deny", "inner")

    def __init__(self, inner: Acl, deny: Iterable[str]) -> None:
        self.inner = inner
        self.deny = tuple(deny)

    def _denied(self, topic: str) -> bool:
        return any(matches(f, topic) for f in self.deny)

    def may_publish(self, topic: str) -> bool | Deferred[bool]:
        return False if self._denied(topic) else self.inner.may_publish(topic)

    def may_subscribe(self, topic_filter: str) -> SubscribeAnswer:
        # Refused when every topic the filter matches is denied: it equals a denied filter or
        # a denied filter matches it read as a topic name ("secret/#" covers "secret/+/x").
        try:
            shared = split_shared(topic_filter)
        except ValueError:
            shared = None
        plain = topic_filter if shared is None else shared[1]
        for denied in self.deny:
            if plain == denied or matches(denied, plain):
                return Reason.UNSPECIFIED_ERROR
        return self.inner.may_subscribe(topic_filter)


OPEN_ACL = Acl()


@dataclass(frozen=True, slots=True)
class AuthResult:
    """The outcome of authenticating a CONNECT; ``reason`` is an MQTT 5 reason code."""

    reason: int = Reason.SUCCESS
    identity: str | None = None
    acl: Acl = OPEN_ACL
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.reason == Reason.SUCCESS


class BrokerHooks:
    """What the broker asks of the application around it. This base admits everyone."""

    def authenticate(self, connection: MqttConnection) -> AuthResult | Deferred[AuthResult]:
        return AuthResult()

    def client_connected(self, connection: MqttConnection) -> None:
        """The CONNACK accepting ``connection`` has been sent."""

    def client_disconnected(self, connection: MqttConnection, reason: str) -> None:
        """An accepted connection ended; ``reason`` is a short word (disconnect, keepalive…)."""

    def message_published(
        self, connection: MqttConnection, message: Message
    ) -> int | Deferred[int]:
        """A client published ``message`` (ACL passed); return the reason code for its ack.

        A Deferred delays the ack until it fires (for example until the message is stored).
        """
        return Reason.SUCCESS

    def will_published(self, identity: str | None, will: Message) -> None:
        """The will of a client that authenticated as ``identity`` is being published (its
        connection is gone; the will topic passed the ACL at CONNECT)."""


@dataclass(slots=True)
class BrokerConfig:
    # The Server Keep Alive an MQTT 5 client gets when it asks for more, or for none (0);
    # 3.1.1 clients keep what they asked for (they cannot be told otherwise).
    max_keep_alive: int = 60
    connect_timeout: float = 10.0
    max_packet_size: int = 1 << 20
    receive_maximum: int = 1024
    topic_alias_maximum: int = 64
    max_session_expiry: int = 7 * 24 * 3600
    max_queued_messages: int = 1000
    # Retained messages kept (all topics); a new topic beyond this is not retained.
    max_retained: int = 100_000
    # Subscriptions per session; more are refused with 0x97 Quota exceeded.
    max_subscriptions: int = 10_000
    sweep_interval: float = 1.0


class SubscriptionEntry:
    __slots__ = ("identifier", "options", "session")

    def __init__(self, session: Session, options: Subscription, identifier: int | None) -> None:
        self.session = session
        self.options = options
        self.identifier = identifier


class SharedGroup:
    """The members of one ``$share/{group}/{filter}``; each message goes to one of them."""

    __slots__ = ("members", "turn")

    def __init__(self) -> None:
        self.members: dict[str, SubscriptionEntry] = {}
        self.turn = itertools.count()

    def pick(self) -> SubscriptionEntry | None:
        members = list(self.members.values())
        if not members:
            return None
        online = [m for m in members if m.session.connection is not None] or members
        return online[next(self.turn) % len(online)]


class Outgoing:
    """A QoS 1/2 message sent to a client and not yet fully acknowledged."""

    __slots__ = ("message", "qos", "released", "retain", "subscription_ids")

    def __init__(
        self, message: Message, qos: int, retain: bool, subscription_ids: tuple[int, ...]
    ) -> None:
        self.message = message
        self.qos = qos
        self.retain = retain
        self.subscription_ids = subscription_ids
        self.released = False  # QoS 2: PUBREC received, PUBREL sent


class Session:
    """Per client identifier state that may outlive a network connection."""

    __slots__ = (
        "client_id",
        "connection",
        "expires_at",
        "expiry_interval",
        "inflight",
        "next_packet_id",
        "pending",
        "qos2_received",
        "subscriptions",
        "will",
        "will_call",
    )

    def __init__(self, client_id: str) -> None:
        self.client_id = client_id
        self.connection: MqttConnection | None = None
        self.subscriptions: dict[str, SubscriptionEntry] = {}
        self.inflight: dict[int, Outgoing] = {}
        # Allocated on first use: most sessions of idle devices never need them.
        self.pending: deque[Outgoing] | None = None
        self.qos2_received: set[int] | None = None
        self.next_packet_id = 1
        self.expiry_interval = 0
        self.expires_at: float | None = None
        self.will: Message | None = None
        self.will_call: DelayedCall | None = None

    def allocate_packet_id(self) -> int:
        for _ in range(65535):
            packet_id = self.next_packet_id
            self.next_packet_id = packet_id % 65535 + 1
            if packet_id not in self.inflight:
                return packet_id
        raise RuntimeError("no free packet identifier")


class Broker:
    """All sessions of one edge process and the routing between them."""

    def __init__(
        self,
        clock: Clock,
        hooks: BrokerHooks | None = None,
        config: BrokerConfig | None = None,
    ) -> None:
        self.clock = clock
        self.hooks = hooks or BrokerHooks()
        self.config = config or BrokerConfig()
        self.sessions: dict[str, Session] = {}
        self.connections: set[MqttConnection] = set()
        self.by_identity: dict[str, MqttConnection] = {}
        self.subscriptions: TopicTrie[SubscriptionEntry] = TopicTrie()
        self.shared: TopicTrie[SharedGroup] = TopicTrie()
        self.shared_groups: dict[tuple[str, str], SharedGroup] = {}
        # topic → matching (entries, shared groups); cleared whenever a subscription changes.
        self._routes: dict[str, tuple[list[SubscriptionEntry], list[SharedGroup]]] = {}
        self.retained: dict[str, Message] = {}
        # Client id → identity of the client whose will waits for its delay.
        self.will_identities: dict[str, str] = {}
        self.stats: dict[str, int] = dict.fromkeys(
            (
                "messages_in",
                "messages_out",
                "bytes_in",
                "bytes_out",
                "auth_failures",
                "dropped",
                "retained_refused",
            ),
            0,
        )
        self._dirty: list[MqttConnection] = []
        self._flush_call: DelayedCall | None = None
        self._sweeper = LoopingCall(self.sweep)
        self._sweeper.clock = clock  # type: ignore[assignment]
        self._client_ids = itertools.count(1)
        self.log = Logger(namespace="edge.mqtt")
        # Cluster routing (edge.bus.cluster): ``forward`` sees every message published here
        # (not those that came from other nodes); ``interest`` hears of each filter a session
        # adds (True) or removes (False).
        self.forward: Callable[[Message], None] | None = None
        self.interest: Callable[[str, bool], None] | None = None
        # Persistence of sessions whose expiry interval is above 0 (edge.bus.sessions).
        self.store: SessionStore | None = None

    def log_failure(self, failure: Failure, connection: object) -> None:
        self.log.failure("unexpected error on {connection}", failure, connection=connection)

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        self._sweeper.start(self.config.sweep_interval, now=False)

    def stop(self) -> None:
        if self._sweeper.running:
            self._sweeper.stop()
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None

    def sweep(self) -> None:
        """One pass over all connections and sessions: keepalives, connect timeouts, expiry."""
        now = self.clock.seconds()
        for connection in list(self.connections):
            connection.check_timeouts(now)
        for session in list(self.sessions.values()):
            if (
                session.connection is None
                and session.expires_at is not None
                and session.expires_at <= now
            ):
                self.discard_session(session)
        self.flush()

    # -- output batching ----------------------------------------------------------------------

    def mark_dirty(self, connection: MqttConnection) -> None:
        self._dirty.append(connection)
        if self._flush_call is None:
            self._flush_call = self.clock.callLater(0, self.flush)

    def flush(self) -> None:
        """Write every connection's buffered packets (one write per connection)."""
        if self._flush_call is not None:
            if self._flush_call.active():
                self._flush_call.cancel()
            self._flush_call = None
        dirty, self._dirty = self._dirty, []
        for connection in dirty:
            connection.flush()

    def new_client_id(self) -> str:
        return f"auto-{id(self) & 0xFFFF:04x}-{next(self._client_ids)}"

    # -- sessions -----------------------------------------------------------------------------

    def take_over(self, connection: MqttConnection) -> None:
        """Close older connections with the same client id or the same device (identity)."""
        session = self.sessions.get(connection.client_id)
        old = session.connection if session is not None else None
        if old is not None and old is not connection:
            old.close(Reason.SESSION_TAKEN_OVER, "takeover")
        if connection.identity is not None:
            old = self.by_identity.get(connection.identity)
            if old is not None and old is not connection:
                old.close(Reason.SESSION_TAKEN_OVER, "takeover")

    def discard_session(self, session: Session) -> None:
        if self.sessions.get(session.client_id) is session:
            del self.sessions[session.client_id]
        for topic_filter in list(session.subscriptions):
            self.unsubscribe(session, topic_filter)
        if session.will_call is not None and session.will_call.active():
            # The session ends before the will delay: the will is published now (3.1.3.2.2).
            session.will_call.cancel()
            self.publish_will(session)
        if self.store is not None:
            self.store.discarded(session)

    def publish_will(self, session: Session) -> None:
        will, session.will = session.will, None
        session.will_call = None
        identity = self.will_identities.pop(session.client_id, None)
        if will is not None:
            self.send_will(will, identity)

    def send_will(self, will: Message, identity: str | None) -> None:
        """Publish a will; the hooks see it first, like a message from its client."""
        self.hooks.will_published(identity, will)
        self.publish(will)

    def subscribe(self, session: Session, options: Subscription, identifier: int | None) -> bool:
        """Add or replace a subscription; True when it did not exist before."""
        topic_filter = options.topic_filter
        self._routes.clear()
        entry = SubscriptionEntry(session, options, identifier)
        existed = topic_filter in session.subscriptions
        session.subscriptions[topic_filter] = entry
        shared = split_shared(topic_filter)
        if shared is None:
            self.subscriptions.add(topic_filter, session.client_id, entry)
        else:
            group = self.shared_groups.get(shared)
            if group is None:
                group = self.shared_groups[shared] = SharedGroup()
                self.shared.add(shared[1], shared[0], group)
            group.members[session.client_id] = entry
        if not existed and self.interest is not None:
            self.interest(topic_filter, True)
        if self.store is not None and session.expiry_interval:
            self.store.subscriptions_changed(session)
        return not existed

    def unsubscribe(self, session: Session, topic_filter: str) -> bool:
        if session.subscriptions.pop(topic_filter, None) is None:
            return False
        self._routes.clear()
        if self.interest is not None:
            self.interest(topic_filter, False)
        if self.store is not None and session.expiry_interval:
            self.store.subscriptions_changed(session)
        shared = split_shared(topic_filter)
        if shared is None:
            self.subscriptions.remove(topic_filter, session.client_id)
        else:
            group = self.shared_groups.get(shared)
            if group is not None:
                group.members.pop(session.client_id, None)
                if not group.members:
                    del self.shared_groups[shared]
                    self.shared.remove(shared[1], shared[0])
        return True

    # -- routing ------------------------------------------------------------------------------

    def publish(self, message: Message, remote: bool = False) -> int:
        """Store (if retained) and route ``message``; return how many sessions it reached.

        ``remote``: the message comes from another node (edge.bus.cluster), which already
        stored it if retained and chose the shared subscribers: only plain subscribers here.
        """
        kept = message
        if message.retain and not remote:
            if not message.payload:
                self.retained.pop(message.topic, None)
            elif len(self.retained) < self.config.max_retained or message.topic in self.retained:
                self.retained[message.topic] = message
            else:
                # Full: delivered as usual but not kept (nor stored for the other nodes).
                self.stats["retained_refused"] += 1
                kept = Message(
                    message.topic,
                    message.payload,
                    message.qos,
                    False,
                    message.properties,
                    message.expires_at,
                    message.origin,
                )
        targets: dict[Session, list[Any]] = {}
        route = self._routes.get(message.topic)
        if route is None:
            if len(self._routes) >= ROUTE_CACHE_SIZE:
                self._routes.clear()
            route = self._routes[message.topic] = (
                self.subscriptions.match(message.topic),
                self.shared.match(message.topic) if self.shared_groups else [],
            )
        for entry in route[0]:
            options = entry.options
            session = entry.session
            if options.no_local and message.origin == session.client_id:
                continue
            target = targets.get(session)
            if target is None:
                targets[session] = [options.qos, [], options.retain_as_published]
                target = targets[session]
            else:
                target[0] = max(target[0], options.qos)
                target[2] = target[2] or options.retain_as_published
            if entry.identifier is not None:
                target[1].append(entry.identifier)
        for group in () if remote else route[1]:
            chosen = group.pick()
            if chosen is not None:
                ids = [chosen.identifier] if chosen.identifier is not None else []
                targets.setdefault(chosen.session, [chosen.options.qos, ids, False])
        for session, (qos, ids, keep_retain) in targets.items():
            self.deliver(
                session, message, min(qos, message.qos), message.retain and keep_retain, tuple(ids)
            )
        if self.forward is not None and not remote:
            self.forward(kept)
        return len(targets)

    def deliver(
        self,
        session: Session,
        message: Message,
        qos: int,
        retain: bool,
        subscription_ids: tuple[int, ...],
    ) -> None:
        connection = session.connection
        if qos == 0:
            if connection is not None:
                connection.send_message(message, 0, retain, subscription_ids, None)
            return
        outgoing = Outgoing(message, qos, retain, subscription_ids)
        if (
            connection is not None
            and len(session.inflight) < connection.send_quota
            and not session.pending
        ):
            connection.send_outgoing(outgoing, session.allocate_packet_id())
            return
        pending = session.pending
        if pending is None:
            pending = session.pending = deque()
        if len(pending) >= self.config.max_queued_messages:
            # The queue is full: the oldest message is dropped so that the newest data wins.
            pending.popleft()
            self.stats["dropped"] += 1
        pending.append(outgoing)
        if connection is None and self.store is not None and session.expiry_interval:
            self.store.queued(session, outgoing)

    def retained_for(self, topic_filter: str) -> list[Message]:
        now = self.clock.seconds()
        found = []
        for topic, message in list(self.retained.items()):
            if message.expires_at is not None and message.expires_at <= now:
                # An expired retained message is no longer kept (3.3.2.3.3).
                del self.retained[topic]
            elif matches(topic_filter, topic):
                found.append(message)
        return found

    def schedule(self, delay: float, func: Callable[..., Any], *args: Any) -> DelayedCall:
        return self.clock.callLater(delay, func, *args)
