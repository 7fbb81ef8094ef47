"""What the broker asks of the application around it: who a client is (authentication),
what it may publish and subscribe to (ACLs), and what happens to what it publishes (hooks).

The broker and the connections depend on these interfaces; the application (edge.thinglinks)
implements them. A connection is seen here as a :class:`Client`, so that neither the broker
nor the application needs the connection's implementation.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from twisted.internet.defer import Deferred

from .errors import Reason
from .message import Message, Outgoing
from .packets import Connect
from .topics import matches, split_shared

# The CONNACK reasons that count as a failed authentication (an application may throttle them).
AUTH_FAILURES = frozenset({Reason.BAD_USER_NAME_OR_PASSWORD, Reason.NOT_AUTHORIZED, Reason.BANNED})


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
    """The outcome of authenticating a CONNECT; ``reason`` is an MQTT 5 reason code.

    ``owner`` names who the client's sessions, client ids and budgets belong to when it has
    no ``identity`` (an application key, a registering device); it defaults to ``identity``.
    A client without either (anonymous) shares the anonymous owner ``None``.
    """

    reason: int = Reason.SUCCESS
    identity: str | None = None
    acl: Acl = OPEN_ACL
    detail: str = ""
    owner: str | None = None

    @property
    def ok(self) -> bool:
        return self.reason == Reason.SUCCESS


class Client(Protocol):
    """One client connection as the broker and its hooks see it
    (:class:`~edge.mqtt.connection.MqttConnection` is the implementation)."""

    client_id: str
    identity: str | None
    owner: str | None
    opened_at: float
    connect: Connect | None
    acl: Acl
    send_quota: int

    @property
    def peer(self) -> str:
        """The client's address, ``host:port``."""
        ...

    def close(self, reason: int | None, why: str, text: str | None = None) -> None: ...

    def check_timeouts(self, now: float) -> None: ...

    def flush(self) -> None: ...

    def send_message(
        self,
        message: Message,
        qos: int,
        retain: bool,
        subscription_ids: tuple[int, ...],
        packet_id: int | None,
        dup: bool = False,
    ) -> bool: ...

    def send_outgoing(self, outgoing: Outgoing, packet_id: int) -> None: ...


class BrokerHooks:
    """What the broker asks of the application around it. This base admits everyone."""

    def authenticate(self, connection: Client) -> AuthResult | Deferred[AuthResult]:
        return AuthResult()

    def client_connected(self, connection: Client) -> None:
        """The CONNACK accepting ``connection`` has been sent."""

    def client_disconnected(self, connection: Client, reason: str) -> None:
        """An accepted connection ended; ``reason`` is a short word (disconnect, keepalive…)."""

    def message_published(self, connection: Client, message: Message) -> int | Deferred[int]:
        """A client published ``message`` (ACL passed); return the reason code for its ack.

        A Deferred delays the ack until it fires (for example until the message is stored).
        """
        return Reason.SUCCESS

    def will_published(self, identity: str | None, will: Message) -> None:
        """The will of a client that authenticated as ``identity`` is being published (its
        connection is gone; the will topic passed the ACL at CONNECT)."""
