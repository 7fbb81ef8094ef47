"""What the bus needs of Redis: commands, pub/sub subscriptions, and a way to open both.

The bus modules (cluster, sessions, registry, uplink, downlink) depend on these interfaces
only. :mod:`edge.bus.redis` implements them over sockets; the tests drive the same modules
through an in-memory implementation, so that routing, session persistence and the registry
cache can be checked without a Redis server or processes.

Replies are those of RESP2 as ``hiredis`` gives them: bulk strings as ``bytes``, integers
as ``int``, arrays as lists, nil as ``None``; an error reply fails the Deferred with
:class:`RedisError`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from twisted.internet.defer import Deferred

Arg = str | bytes | int | float


class RedisError(Exception):
    """An error reply from the server (its text starts with the error code, e.g. NOSCRIPT)."""


class Commands(Protocol):
    """A command connection. Commands issued while it is down wait for the next connection."""

    @property
    def connected(self) -> bool: ...

    def start(self) -> Deferred[None]:
        """Connect; fires on the first successful connection."""
        ...

    def stop(self) -> Deferred[None]: ...

    def execute(self, *args: Arg) -> Deferred[Any]: ...

    def pipeline(self, commands: Sequence[Sequence[Arg]]) -> list[Deferred[Any]]:
        """Send several commands at once; one Deferred per command, answered in order."""
        ...


class Subscription(Protocol):
    """A pub/sub connection to a fixed set of channels."""

    def start(self) -> Deferred[None]: ...

    def stop(self) -> Deferred[None]: ...


class Connector(Protocol):
    """Opens the connections a bus component owns (the cluster's, the downlink's)."""

    def client(self, name: str) -> Commands:
        """A new command connection; ``name`` labels it in the log."""
        ...

    def subscriber(
        self,
        channels: Sequence[str],
        on_message: Callable[[bytes, bytes], None],
        on_subscribed: Callable[[], None] | None = None,
    ) -> Subscription:
        """A new subscription: ``on_message(channel, data)`` for each message, and
        ``on_subscribed()`` after every (re)subscription, when messages may have been missed."""
        ...
