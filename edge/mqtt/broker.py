"""Broker state independent of I/O: sessions, subscriptions, routing and retained messages.

A :class:`Broker` knows clients only as :class:`~edge.mqtt.policy.Client` objects (sans-I/O
connections) and the outside world only through :class:`~edge.mqtt.policy.BrokerHooks`
(authentication, ACL, what to do with published messages). Time comes from an injected
``IReactorTime``.
"""

from __future__ import annotations

import ipaddress
import itertools
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from .errors import Reason
from .message import Message, Outgoing
from .packets import Subscription
from .policy import BrokerHooks, Client
from .session import Clock, DelayedCall, Session, SessionStore, SubscriptionEntry
from .topics import TopicTrie, matches, split_shared

ROUTE_CACHE_SIZE = 50_000
CLIENT_ID_TAKEN = "client id in use by another client identity"
CLIENT_ID_NOT_IDENTIFIER = "the client id must be the device identifier"
# Publish budgets that filled up again are dropped every this many sweeps.
BUDGET_SWEEP_EVERY = 60
# What refusals are counted by (edge_budget_refusals_total{budget=…}).
BUDGETS = (
    "client_id",
    "connect_size",
    "properties",
    "connections_per_address",
    "identity_connections",
    "identity_sessions",
    "identity_sessions_ended",
    "idle",
    "topic_levels",
    "topic_length",
    "filter_levels",
    "filter_length",
    "subscriptions",
    "publish_rate",
    "publish_bytes",
    "identity_retained_bytes",
    "retained_messages",
    "retained_bytes",
    "queued_messages",
    "queued_bytes",
)


# BrokerConfig field → the environment variable that sets it (README, "Edge budgets").
ENVIRONMENT = {
    "max_keep_alive": "EDGE_MAX_KEEPALIVE",
    "max_idle": "EDGE_MAX_IDLE",
    "connect_timeout": "EDGE_CONNECT_TIMEOUT",
    "connect_silent_timeout": "EDGE_CONNECT_SILENT_TIMEOUT",
    "max_packet_size": "EDGE_MAX_PACKET_SIZE",
    "max_connect_size": "EDGE_MAX_CONNECT_SIZE",
    "max_property_bytes": "EDGE_MAX_PROPERTY_BYTES",
    "max_user_properties": "EDGE_MAX_USER_PROPERTIES",
    "max_topic_levels": "EDGE_MAX_TOPIC_LEVELS",
    "max_topic_length": "EDGE_MAX_TOPIC_LENGTH",
    "max_subscriptions": "EDGE_MAX_SUBSCRIPTIONS",
    "max_queued_messages": "EDGE_MAX_QUEUED_MESSAGES",
    "max_queued_bytes": "EDGE_MAX_QUEUED_BYTES",
    "max_retained": "EDGE_MAX_RETAINED",
    "max_retained_bytes": "EDGE_MAX_RETAINED_BYTES",
    "identity_retained_bytes": "EDGE_IDENTITY_RETAINED_BYTES",
    "identity_sessions": "EDGE_IDENTITY_SESSIONS",
    "identity_connections": "EDGE_IDENTITY_CONNECTIONS",
    "max_connections_per_address": "EDGE_MAX_CONN_PER_IP",
    "unlimited_addresses": "EDGE_CONN_LIMIT_EXEMPT",
    "publish_rate": "EDGE_PUBLISH_RATE",
    "publish_burst": "EDGE_PUBLISH_BURST",
    "publish_bytes_rate": "EDGE_PUBLISH_BYTES_RATE",
    "publish_bytes_burst": "EDGE_PUBLISH_BYTES_BURST",
    "client_id_must_be_identity": "EDGE_CLIENT_ID_MUST_BE_IDENTIFIER",
}


@dataclass(slots=True)
class BrokerConfig:
    """Limits and budgets of one broker (one edge worker); a budget of 0 is no limit.

    Budgets "per identity" count what one device (or application key, or registering
    device) holds on this worker: with ``EDGE_WORKERS=N`` a client may hold up to N times
    as much, one share per worker it connects to. Anonymous clients (development mode) have
    no identity budgets.
    """

    # The Server Keep Alive an MQTT 5 client gets when it asks for more, or for none (0);
    # 3.1.1 clients keep what they asked for (they cannot be told otherwise)...
    max_keep_alive: int = 60
    # ...except that a 3.1.1 client asking for none (0) is closed after this many seconds
    # without a packet (L8).
    max_idle: int = 600
    # CONNECT must be complete (and authenticated) this many seconds after the connection's
    # first byte was read: under a connect storm a device whose bytes wait in the kernel
    # while the worker accepts others is not dropped for our delay.
    connect_timeout: float = 10.0
    # A connection that sends nothing at all is closed this long after the accept.
    connect_silent_timeout: float = 60.0
    max_packet_size: int = 1 << 20
    # Before authentication (M1): the largest CONNECT; and the property block of any packet.
    max_connect_size: int = 64 * 1024
    max_property_bytes: int = 8 * 1024
    max_user_properties: int = 32
    # Topic names and filters (without a $share/{group}/ prefix): levels and characters. A
    # deeper or longer filter is refused (SUBACK 0x8F), a topic name too (PUBACK 0x90).
    max_topic_levels: int = 16
    max_topic_length: int = 1024
    receive_maximum: int = 1024
    topic_alias_maximum: int = 64
    max_session_expiry: int = 7 * 24 * 3600
    # Messages queued in one session (in memory and in Redis); the oldest go first.
    max_queued_messages: int = 1000
    max_queued_bytes: int = 4 << 20
    # Retained messages kept (all topics); a new topic beyond this is not retained.
    max_retained: int = 100_000
    max_retained_bytes: int = 256 << 20
    # Retained bytes one identity may keep; beyond, its retained PUBLISH is refused (0x97).
    identity_retained_bytes: int = 1 << 20
    # Persistent sessions per identity: a new one ends the identity's oldest offline
    # session, or is refused (0x97) when all are online.
    identity_sessions: int = 4
    # Connections per identity-less owner (an application key, a registering device); a
    # device has one connection (a new one takes over).
    identity_connections: int = 16
    # Open connections per source address, counted from the TCP accept (M1); addresses in
    # ``unlimited_addresses`` (CIDRs; loopback by default, for local tools) are not counted.
    max_connections_per_address: int = 1000
    unlimited_addresses: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    # Token buckets per identity: messages and bytes (topic and payload) per second, and the
    # burst a quiet client may send at once.
    publish_rate: float = 100.0
    publish_burst: int = 1000
    publish_bytes_rate: float = float(1 << 20)
    publish_bytes_burst: int = 4 << 20
    # Subscriptions per session; more are refused with 0x97 Quota exceeded.
    max_subscriptions: int = 10_000
    # Opt-in: a device must connect with its identifier as client id (0x85 / return code 2
    # otherwise), so that no device can squat another's client id. Clients without a device
    # identity (application keys, registration, anonymous) are not concerned.
    client_id_must_be_identity: bool = False
    sweep_interval: float = 1.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> BrokerConfig:
        """The defaults, with what ``EDGE_*`` variables set (ENVIRONMENT); raises
        ValueError for a value that is not a number >= 0 or a list of networks."""
        values: dict[str, Any] = {}
        for spec in fields(cls):
            name = ENVIRONMENT.get(spec.name)
            if name is None or name not in env:
                continue
            raw = env[name].strip()
            if spec.name == "unlimited_addresses":
                networks = tuple(n.strip() for n in raw.split(",") if n.strip())
                for network in networks:
                    try:
                        ipaddress.ip_network(network, strict=False)
                    except ValueError:
                        raise ValueError(f"{name}: {network!r} is not a network") from None
                values[spec.name] = networks
                continue
            if not raw:
                continue
            if isinstance(spec.default, bool):
                if raw.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                    raise ValueError(f"{name} must be 1 or 0, not {raw!r}")
                values[spec.name] = raw.lower() in ("1", "true", "yes", "on")
                continue
            kind = float if isinstance(spec.default, float) else int
            try:
                number = kind(raw)
            except ValueError:
                raise ValueError(f"{name} must be a number, not {raw!r}") from None
            if number < 0:
                raise ValueError(f"{name} must not be negative")
            values[spec.name] = number
        return cls(**values)


class RetainedStore(dict[str, Message]):
    """Retained messages by topic, with their bytes counted (topic and payload): in all, and
    per identity for the messages this node's clients retained (H9).

    A plain dict for readers; every write (here, on a takeover of the topic by another node
    through edge.bus.cluster, on expiry) keeps the counts right.
    """

    __slots__ = ("by_owner", "owners", "size")

    def __init__(self) -> None:
        super().__init__()
        self.size = 0
        self.owners: dict[str, str] = {}
        self.by_owner: dict[str, int] = {}

    @staticmethod
    def cost(message: Message) -> int:
        return len(message.topic) + len(message.payload)

    def put(self, message: Message, owner: str | None) -> None:
        self._release(message.topic)
        cost = self.cost(message)
        dict.__setitem__(self, message.topic, message)
        self.size += cost
        if owner is not None:
            self.owners[message.topic] = owner
            self.by_owner[owner] = self.by_owner.get(owner, 0) + cost

    def _release(self, topic: str) -> None:
        old = dict.get(self, topic)
        if old is None:
            return
        cost = self.cost(old)
        self.size -= cost
        owner = self.owners.pop(topic, None)
        if owner is not None:
            left = self.by_owner[owner] - cost
            if left > 0:
                self.by_owner[owner] = left
            else:
                del self.by_owner[owner]

    def owner_bytes(self, owner: str, topic: str) -> int:
        """What ``owner`` keeps, not counting ``topic`` (which a new message replaces)."""
        held = self.by_owner.get(owner, 0)
        if held and self.owners.get(topic) == owner:
            held -= self.cost(dict.__getitem__(self, topic))
        return held

    def __setitem__(self, topic: str, message: Message) -> None:
        self.put(message, None)

    def __delitem__(self, topic: str) -> None:
        self._release(topic)
        dict.__delitem__(self, topic)

    def pop(self, topic: str, *default: Any) -> Any:  # type: ignore[override]
        self._release(topic)
        return dict.pop(self, topic, *default)

    def clear(self) -> None:
        dict.clear(self)
        self.owners.clear()
        self.by_owner.clear()
        self.size = 0


class PublishBudget:
    """Token buckets of one identity: messages and bytes it may still publish now."""

    __slots__ = ("bytes", "messages", "stamp")

    def __init__(self, messages: float, size: float, now: float) -> None:
        self.messages = messages
        self.bytes = size
        self.stamp = now


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


class Route:
    """What routing a topic takes: the plain subscriptions and shared groups matching it,
    and, unless one of those subscriptions is "no local" (which depends on the sender),
    ``plan``: each subscribed session once, with the highest QoS of its matching
    subscriptions, their identifiers and whether any is retain-as-published (3.3.4)."""

    __slots__ = ("entries", "groups", "plan")

    def __init__(self, entries: list[SubscriptionEntry], groups: list[SharedGroup]) -> None:
        self.entries = entries
        self.groups = groups
        self.plan: list[tuple[Session, int, tuple[int, ...], bool]] | None = None
        if any(entry.options.no_local for entry in entries):
            return
        targets: dict[Session, list[Any]] = {}
        for entry in entries:
            options = entry.options
            target = targets.get(entry.session)
            if target is None:
                target = targets[entry.session] = [options.qos, [], options.retain_as_published]
            else:
                target[0] = max(target[0], options.qos)
                target[2] = target[2] or options.retain_as_published
            if entry.identifier is not None:
                target[1].append(entry.identifier)
        self.plan = [
            (session, qos, tuple(ids), keep_retain)
            for session, (qos, ids, keep_retain) in targets.items()
        ]


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
        self.connections: set[Client] = set()
        self._property_limits: tuple[int, int] | None = None
        self.by_identity: dict[str, Client] = {}
        self.subscriptions: TopicTrie[SubscriptionEntry] = TopicTrie()
        self.shared: TopicTrie[SharedGroup] = TopicTrie()
        self.shared_groups: dict[tuple[str, str], SharedGroup] = {}
        # topic → matching (entries, shared groups, plan); cleared whenever a subscription
        # changes. The plan (Route) is what routing makes of the entries for any message
        # that no "no local" subscription concerns.
        self._routes: dict[str, Route] = {}
        self.retained = RetainedStore()
        # Budgets (BrokerConfig): persistent sessions by owner and client id, connections of
        # identity-less owners, connections per source address, publish token buckets.
        self.persistent: dict[str, dict[str, Session]] = {}
        self.owner_connections: dict[str, int] = {}
        self.addresses: dict[str, int] = {}
        self.unlimited_networks = tuple(
            ipaddress.ip_network(n, strict=False) for n in self.config.unlimited_addresses
        )
        self._unlimited = tuple(
            (socket.AF_INET6 if net.version == 6 else socket.AF_INET,
             int(net.network_address), int(net.netmask))
            for net in self.unlimited_networks
        )  # fmt: skip
        self.publish_budgets: dict[str, PublishBudget] = {}
        # Refusals (and drops, ends) per budget, for /metrics.
        self.refusals: dict[str, int] = dict.fromkeys(BUDGETS, 0)
        # Connections closed before CONNACK: "connect" (CONNECT not done within
        # connect_timeout of the first byte), "silent" (nothing sent at all).
        self.connect_timeouts = {"connect": 0, "silent": 0}
        self._sweeps = 0
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
        self._dirty: list[Client] = []
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
        self._sweeps += 1
        if self._sweeps % BUDGET_SWEEP_EVERY == 0:
            self._forget_full_budgets(now)
        self.flush()

    # -- output batching ----------------------------------------------------------------------

    def mark_dirty(self, connection: Client) -> None:
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

    def take_over(self, connection: Client) -> None:
        """Close older connections with the same client id or the same device (identity)."""
        session = self.sessions.get(connection.client_id)
        old = session.connection if session is not None else None
        if old is not None and old is not connection:
            old.close(Reason.SESSION_TAKEN_OVER, "takeover")
        if connection.identity is not None:
            old = self.by_identity.get(connection.identity)
            if old is not None and old is not connection:
                old.close(Reason.SESSION_TAKEN_OVER, "takeover")

    def add_session(self, session: Session) -> None:
        """A session made elsewhere (edge.bus.sessions) joins this broker."""
        self.sessions[session.client_id] = session
        self.track(session)

    def track(self, session: Session) -> None:
        """Count ``session`` among its owner's persistent sessions while its expiry interval
        is above 0 (the identity_sessions budget)."""
        owner = session.owner
        if owner is None:
            return
        held = self.persistent.get(owner)
        if session.expiry_interval:
            if held is None:
                held = self.persistent[owner] = {}
            held[session.client_id] = session
        elif held is not None and held.get(session.client_id) is session:
            del held[session.client_id]
            if not held:
                del self.persistent[owner]

    def make_room(self, owner: str, client_id: str) -> bool:
        """Whether ``owner`` may have one more persistent session, ``client_id``. At its
        maximum, the session that has been offline longest ends to make room; False when
        every one is online."""
        limit = self.config.identity_sessions
        held = self.persistent.get(owner)
        if not limit or held is None or client_id in held:
            return True
        while len(held) >= limit:
            offline = [s for s in held.values() if s.connection is None]
            if not offline:
                self.refused("identity_sessions")
                return False
            oldest = min(offline, key=lambda s: (s.expires_at or 0.0) - s.expiry_interval)
            self.log.info(
                "{owner} has {count} persistent sessions: {client} ends",
                owner=owner,
                count=len(held),
                client=oldest.client_id,
            )
            self.refused("identity_sessions_ended")
            self.discard_session(oldest)
        return True

    def client_id_taken(self, client_id: str, owner: str | None) -> None:
        """The session store found ``client_id``'s persisted session to be another
        identity's after a clean start of ``owner`` was accepted here (the node held no copy
        to refuse it by): that client's connection ends (0x87) and its session goes."""
        session = self.sessions.get(client_id)
        if session is None or session.owner != owner:
            return
        self.refused("client_id")
        self.log.info(
            "{client}: client id in use by another identity; {owner} disconnected",
            client=client_id,
            owner=owner or "anonymous",
        )
        if session.connection is not None:
            session.connection.close(Reason.NOT_AUTHORIZED, "client_id", CLIENT_ID_TAKEN)
        if self.sessions.get(client_id) is session:
            self.discard_session(session)
        self.flush()

    def discard_session(self, session: Session) -> None:
        if self.sessions.get(session.client_id) is session:
            del self.sessions[session.client_id]
        if session.owner is not None:
            held = self.persistent.get(session.owner)
            if held is not None and held.get(session.client_id) is session:
                del held[session.client_id]
                if not held:
                    del self.persistent[session.owner]
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
            self.send_will(will, identity, session.owner)

    def send_will(self, will: Message, identity: str | None, owner: str | None = None) -> None:
        """Publish a will; the hooks see it first, like a message from its client."""
        self.hooks.will_published(identity, will)
        self.publish(will, owner=owner)

    def subscribe(self, session: Session, options: Subscription, identifier: int | None) -> bool:
        """Add or replace a subscription; True when it did not exist before."""
        topic_filter = options.topic_filter
        self._routes.clear()
        entry = SubscriptionEntry(session, options, identifier)
        existed = topic_filter in session.subscriptions
        session.subscription_map()[topic_filter] = entry
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

    def publish(self, message: Message, remote: bool = False, owner: str | None = None) -> int:
        """Store (if retained) and route ``message``; return how many sessions it reached.

        ``remote``: the message comes from another node (edge.bus.cluster), which already
        stored it if retained and chose the shared subscribers: only plain subscribers here.
        ``owner``: the identity whose retained budget a retained message counts against.
        """
        kept = message
        if message.retain and not remote:
            if not message.payload:
                self.retained.pop(message.topic, None)
            elif self._may_retain(message, owner):
                self.retained.put(message, owner)
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
        route = self._routes.get(message.topic)
        if route is None:
            if len(self._routes) >= ROUTE_CACHE_SIZE:
                self._routes.clear()
            route = self._routes[message.topic] = Route(
                self.subscriptions.match(message.topic),
                self.shared.match(message.topic) if self.shared_groups else [],
            )
        plan = route.plan
        if plan is not None and (remote or not route.groups):
            # The subscribers of the topic, each once with its highest QoS, its subscription
            # identifiers and retain-as-published, worked out once per topic (Route).
            mqos = message.qos
            mretain = message.retain
            for session, qos, sub_ids, keep_retain in plan:
                if qos > mqos:
                    qos = mqos
                if qos:
                    self.deliver(session, message, qos, mretain and keep_retain, sub_ids)
                else:
                    connection = session.connection
                    if connection is not None:
                        connection.send_message(message, 0, mretain and keep_retain, sub_ids, None)
            if self.forward is not None and not remote:
                self.forward(kept)
            return len(plan)
        targets: dict[Session, list[Any]] = {}
        for entry in route.entries:
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
        for group in () if remote else route.groups:
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
        config = self.config
        if session.pending and len(session.pending) >= config.max_queued_messages > 0:
            # The queue is full: the oldest message is dropped so that the newest data wins.
            session.pop()
            self.stats["dropped"] += 1
            self.refused("queued_messages")
        session.push(outgoing)
        if config.max_queued_bytes:
            while session.pending and session.queued_bytes > config.max_queued_bytes:
                # Over its bytes: the oldest go (the newest too when it alone is too large).
                dropped = session.pop()
                self.stats["dropped"] += 1
                self.refused("queued_bytes")
                if dropped is outgoing:
                    return
        if connection is None and self.store is not None and session.expiry_interval:
            self.store.queued(session, outgoing)

    def deliver_to(self, connection: Client, topic_filter: str, message: Message) -> bool:
        """Give ``message`` to ``connection`` alone, through its subscription to exactly
        ``topic_filter``, bypassing routing (nobody else hears it); False when it has no such
        subscription."""
        session = self.sessions.get(connection.client_id)
        if session is None or session.connection is not connection:
            return False
        entry = session.subscriptions.get(topic_filter)
        if entry is None:
            return False
        ids = (entry.identifier,) if entry.identifier is not None else ()
        self.deliver(session, message, min(entry.options.qos, message.qos), False, ids)
        return True

    # -- budgets ------------------------------------------------------------------------------

    def refused(self, budget: str) -> None:
        self.refusals[budget] = self.refusals.get(budget, 0) + 1

    def connect_timed_out(self, phase: str) -> None:
        self.connect_timeouts[phase] = self.connect_timeouts.get(phase, 0) + 1

    def property_limits(self) -> tuple[int, int]:
        """The property limits of a connection's decoder (BrokerConfig), one tuple shared
        by every connection while the configuration stays the same."""
        config = self.config
        limits = self._property_limits
        if (
            limits is None
            or limits[0] != config.max_property_bytes
            or limits[1] != config.max_user_properties
        ):
            limits = self._property_limits = (
                config.max_property_bytes,
                config.max_user_properties,
            )
        return limits

    def counted_host(self, peer: str | bytes | tuple[Any, ...]) -> str | None:
        """The source address a connection from ``peer`` (``host:port``, or the transport's
        ``(host, port, …)`` tuple) counts against, or None when it is not counted (no limit,
        or an unlimited network)."""
        if not self.config.max_connections_per_address:
            return None
        host: str
        if isinstance(peer, str):
            host = (peer.rpartition(":")[0] or peer).strip("[]")
        elif isinstance(peer, bytes):  # packed IPv4 address and port (edge.transports.lean)
            host = socket.inet_ntop(socket.AF_INET, peer[:4])
        else:
            host = peer[0]
        # ipaddress took a sixth of a connect's CPU: the address is read by inet_pton and
        # compared as an integer with the exempt networks.
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            value = int.from_bytes(socket.inet_pton(family, host), "big")
        except OSError:
            return host
        for net_family, network, mask in self._unlimited:
            if net_family == family and value & mask == network:
                return None
        return host

    def open_from(self, host: str) -> bool:
        """A connection from ``host`` opens; False (refused) when it has its maximum."""
        count = self.addresses.get(host, 0)
        if count >= self.config.max_connections_per_address:
            self.refused("connections_per_address")
            return False
        self.addresses[host] = count + 1
        return True

    def closed_from(self, host: str) -> None:
        count = self.addresses.get(host, 0) - 1
        if count > 0:
            self.addresses[host] = count
        else:
            self.addresses.pop(host, None)

    def open_as(self, owner: str, replaced: int) -> bool:
        """An identity-less owner (application key, registration) connects, ``replaced`` of
        its connections being taken over; False (refused) when it has its maximum."""
        limit = self.config.identity_connections
        count = self.owner_connections.get(owner, 0)
        if limit and count - replaced >= limit:
            self.refused("identity_connections")
            return False
        self.owner_connections[owner] = count + 1
        return True

    def closed_as(self, owner: str) -> None:
        count = self.owner_connections.get(owner, 0) - 1
        if count > 0:
            self.owner_connections[owner] = count
        else:
            self.owner_connections.pop(owner, None)

    @property
    def metered(self) -> bool:
        """Whether publishing is metered (a publish rate or byte rate is set)."""
        return bool(self.config.publish_rate or self.config.publish_bytes_rate)

    def spend(self, owner: str, size: int, now: float) -> str | None:
        """Take one message of ``size`` bytes from ``owner``'s publish budget; the budget it
        is over (nothing taken), or None."""
        config = self.config
        rate, bytes_rate = config.publish_rate, config.publish_bytes_rate
        burst = config.publish_burst or rate
        bytes_burst = config.publish_bytes_burst or bytes_rate
        budget = self.publish_budgets.get(owner)
        if budget is None:
            budget = self.publish_budgets[owner] = PublishBudget(burst, bytes_burst, now)
        else:
            elapsed = now - budget.stamp
            if elapsed > 0:
                budget.stamp = now
                budget.messages = min(burst, budget.messages + elapsed * rate)
                budget.bytes = min(bytes_burst, budget.bytes + elapsed * bytes_rate)
        if rate and budget.messages < 1:
            return "publish_rate"
        if bytes_rate and budget.bytes < size:
            return "publish_bytes"
        budget.messages -= 1
        budget.bytes -= size
        return None

    def _forget_full_budgets(self, now: float) -> None:
        """Drop the buckets that have filled up again (a new one starts full anyway)."""
        config = self.config
        rate, bytes_rate = config.publish_rate, config.publish_bytes_rate
        burst = config.publish_burst or rate
        bytes_burst = config.publish_bytes_burst or bytes_rate
        full = [
            owner
            for owner, budget in self.publish_budgets.items()
            if budget.messages + (now - budget.stamp) * rate >= burst
            and budget.bytes + (now - budget.stamp) * bytes_rate >= bytes_burst
        ]
        for owner in full:
            del self.publish_budgets[owner]

    def retain_refusal(self, message: Message, owner: str | None) -> str | None:
        """The budget ``owner`` would go over by retaining ``message``, or None."""
        limit = self.config.identity_retained_bytes
        if owner is None or not limit or not message.payload:
            return None
        cost = RetainedStore.cost(message)
        if self.retained.owner_bytes(owner, message.topic) + cost > limit:
            return "identity_retained_bytes"
        return None

    def _may_retain(self, message: Message, owner: str | None) -> bool:
        config = self.config
        retained = self.retained
        old = retained.get(message.topic)
        if old is None and config.max_retained and len(retained) >= config.max_retained:
            self.refused("retained_messages")
            return False
        if config.max_retained_bytes:
            freed = RetainedStore.cost(old) if old is not None else 0
            if retained.size - freed + RetainedStore.cost(message) > config.max_retained_bytes:
                self.refused("retained_bytes")
                return False
        refusal = self.retain_refusal(message, owner)
        if refusal is not None:
            self.refused(refusal)
            return False
        return True

    def samples(self) -> list[tuple[Any, ...]]:
        """Budget metrics (edge.metrics): refusals per budget and what budgets count."""
        out: list[tuple[Any, ...]] = [
            (
                "edge_budget_refusals_total",
                "counter",
                "Connections, packets, subscriptions and messages refused, dropped or ended "
                "by a budget, and client ids refused to another identity",
                count,
                {"budget": budget},
            )
            for budget, count in self.refusals.items()
        ]
        out += [
            (
                "edge_connect_timeouts_total",
                "counter",
                "Connections closed before CONNACK: CONNECT not complete within the timeout "
                "of its first byte (phase connect), or nothing sent at all (phase silent)",
                count,
                {"phase": phase},
            )
            for phase, count in self.connect_timeouts.items()
        ]
        out += [
            (
                "edge_retained_bytes",
                "gauge",
                "Bytes of retained messages (topics and payloads)",
                self.retained.size,
            ),
            (
                "edge_publish_budgets",
                "gauge",
                "Identities whose publish budget is being used",
                len(self.publish_budgets),
            ),
            (
                "edge_persistent_session_owners",
                "gauge",
                "Identities holding persistent sessions",
                len(self.persistent),
            ),
        ]
        return out

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
