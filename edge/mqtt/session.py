"""Per client identifier state that may outlive a network connection, and the interfaces
the broker keeps it and keeps time through: the session store (edge.bus.sessions) and the
clock (a reactor or ``task.Clock``)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from enum import Enum
from typing import Any, NoReturn, Protocol

from twisted.internet.defer import Deferred

from .message import Message, Outgoing
from .packets import Subscription
from .policy import Client


class Loaded(Enum):
    """What a session store found for a client id a client wants to resume."""

    FOUND = "found"
    ABSENT = "absent"
    # The session belongs to another identity: the client id is refused (H1).
    TAKEN = "taken"


class DelayedCall(Protocol):
    def active(self) -> bool: ...

    def cancel(self) -> None: ...


class Clock(Protocol):
    """The part of ``IReactorTime`` the broker uses (a reactor or ``task.Clock``)."""

    def seconds(self) -> float: ...

    def callLater(
        self, delay: float, func: Callable[..., Any], /, *args: Any, **kw: Any
    ) -> Any: ...


class SubscriptionEntry:
    __slots__ = ("identifier", "options", "session")

    def __init__(self, session: Session, options: Subscription, identifier: int | None) -> None:
        self.session = session
        self.options = options
        self.identifier = identifier


class _Empty(dict[Any, Any]):
    """The one empty mapping every session without subscriptions or messages in flight
    shares (an empty dict costs 64 bytes; most idle devices never fill either). It reads
    like any empty dict; writing to it is a mistake: writers go through
    :meth:`Session.subscription_map` / :meth:`Session.hold`, which give the session its own
    dict first."""

    __slots__ = ()

    def _read_only(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("the shared empty session mapping is read-only")

    __setitem__ = __delitem__ = setdefault = update = popitem = clear = _read_only
    __ior__ = _read_only  # type: ignore[assignment]


EMPTY: dict[Any, Any] = _Empty()


class Session:
    """Per client identifier state that may outlive a network connection.

    ``owner`` is the identity of the client that made it (AuthResult.owner): only a client of
    the same identity may use the client id while the session lasts (H1).
    """

    __slots__ = (
        "client_id",
        "connection",
        "expires_at",
        "expiry_interval",
        "inflight",
        "next_packet_id",
        "owner",
        "pending",
        "qos2_received",
        "queued_bytes",
        "subscriptions",
        "will",
        "will_call",
    )

    def __init__(self, client_id: str, owner: str | None = None) -> None:
        self.client_id = client_id
        self.owner = owner
        self.connection: Client | None = None
        # The shared EMPTY until the first subscription / message in flight (see
        # subscription_map and hold); read them like dicts, write through those methods.
        self.subscriptions: dict[str, SubscriptionEntry] = EMPTY
        self.inflight: dict[int, Outgoing] = EMPTY
        # Allocated on first use: most sessions of idle devices never need them.
        self.pending: deque[Outgoing] | None = None
        self.queued_bytes = 0  # topic and payload bytes of the pending messages
        self.qos2_received: set[int] | None = None
        self.next_packet_id = 1
        self.expiry_interval = 0
        self.expires_at: float | None = None
        self.will: Message | None = None
        self.will_call: DelayedCall | None = None

    def subscription_map(self) -> dict[str, SubscriptionEntry]:
        """The session's own subscriptions dict, to add to (made on first use)."""
        subscriptions = self.subscriptions
        if subscriptions is EMPTY:
            subscriptions = self.subscriptions = {}
        return subscriptions

    def hold(self, packet_id: int, outgoing: Outgoing) -> None:
        """Keep ``outgoing`` in flight under ``packet_id``."""
        inflight = self.inflight
        if inflight is EMPTY:
            inflight = self.inflight = {}
        inflight[packet_id] = outgoing

    def push(self, outgoing: Outgoing) -> None:
        """Queue a message (after the ones already waiting)."""
        pending = self.pending
        if pending is None:
            pending = self.pending = deque()
        pending.append(outgoing)
        message = outgoing.message
        self.queued_bytes += len(message.topic) + len(message.payload)

    def pop(self) -> Outgoing:
        """The oldest queued message, taken off the queue."""
        assert self.pending is not None
        outgoing = self.pending.popleft()
        message = outgoing.message
        self.queued_bytes -= len(message.topic) + len(message.payload)
        return outgoing

    def allocate_packet_id(self) -> int:
        for _ in range(65535):
            packet_id = self.next_packet_id
            self.next_packet_id = packet_id % 65535 + 1
            if packet_id not in self.inflight:
                return packet_id
        raise RuntimeError("no free packet identifier")


class SessionStore(Protocol):
    """Where persistent sessions are kept beyond this process (edge.bus.sessions)."""

    def forget(self, client_id: str, owner: str | None) -> None: ...

    def online(self, session: Session) -> None: ...

    def offline(self, session: Session) -> None: ...

    def subscriptions_changed(self, session: Session) -> None: ...

    def queued(self, session: Session, outgoing: Outgoing) -> None: ...

    def discarded(self, session: Session) -> None: ...

    def load(self, client_id: str, owner: str | None) -> Deferred[Loaded]: ...
