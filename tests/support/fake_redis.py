"""An in-memory Redis for the edge bus, behind the interface the bus uses (edge.bus.client).

``fakeredis`` holds the data and runs the Lua scripts; :class:`FakeRedis` hands out command
connections and pub/sub subscriptions on it, as :class:`edge.bus.redis.RedisConnector` does
on a real server. Replies are RESP2 values, as ``hiredis`` gives them, and arrive like a
server's: a command runs at once (so commands keep their order) and its Deferred fires on
the next reactor turn; published messages reach the subscribers on a later turn. Tests run
on a :class:`twisted.internet.task.Clock` and call :meth:`FakeRedis.settle` to let
everything in flight happen.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import fakeredis
from redis.exceptions import NoScriptError, ResponseError
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from edge.bus.client import Arg, RedisError


class FakeRedis:
    """One in-memory Redis server and the clock its replies are scheduled on."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.server = fakeredis.FakeServer()
        self.subscribers: list[FakeSubscriber] = []
        self._pump: Any = None
        # What the webapp or a test writes and reads directly (replies as redis-py gives them).
        self.sync = fakeredis.FakeRedis(server=self.server)

    # -- edge.bus.client.Connector ----------------------------------------------------------

    def client(self, name: str = "redis") -> FakeCommands:
        return FakeCommands(self, name)

    def subscriber(
        self,
        channels: Sequence[str],
        on_message: Callable[[bytes, bytes], None],
        on_subscribed: Callable[[], None] | None = None,
    ) -> FakeSubscriber:
        subscriber = FakeSubscriber(self, channels, on_message, on_subscribed)
        self.subscribers.append(subscriber)
        return subscriber

    # -- test controls ----------------------------------------------------------------------

    def raw(self) -> Any:
        """A connection that returns raw RESP2 replies (no redis-py reply parsing)."""
        return fakeredis.FakeRedis(server=self.server, protocol=2).connection_pool.get_connection()

    def publish(self, channel: str, data: bytes | str) -> None:
        """PUBLISH from outside the edge (the webapp)."""
        self.sync.publish(channel, data)
        self.schedule_delivery()

    def schedule_delivery(self) -> None:
        if self._pump is None or not self._pump.active():
            self._pump = self.clock.callLater(0, self.deliver)

    def deliver(self) -> None:
        """Hand every published message to the subscribers of its channel."""
        self._pump = None
        for subscriber in list(self.subscribers):
            subscriber.receive()

    def resubscribe(self) -> None:
        """As after a lost pub/sub connection: each subscriber is told it subscribed again
        (messages published meanwhile are lost, as with Redis)."""
        for subscriber in self.subscribers:
            if subscriber.pubsub is not None:
                subscriber.drop_pending()
                subscriber.subscribed()

    def settle(self, turns: int = 100) -> None:
        """Run reactor turns until no reply, message or zero-delay call is left."""
        for _ in range(turns):
            self.deliver()
            now = self.clock.seconds()
            due = any(c.getTime() <= now for c in self.clock.getDelayedCalls())
            if not due and not any(s.has_pending() for s in self.subscribers):
                return
            self.clock.advance(0)
        raise AssertionError("the fake Redis did not settle")


class FakeCommands:
    """A command connection (edge.bus.client.Commands)."""

    def __init__(self, redis: FakeRedis, name: str) -> None:
        self.redis = redis
        self.name = name
        self.connection = redis.raw()
        self.started = False
        self.commands: list[tuple[Arg, ...]] = []  # everything sent, for assertions

    @property
    def connected(self) -> bool:
        return self.started

    def start(self) -> Deferred[None]:
        self.started = True
        return succeed(None)

    def stop(self) -> Deferred[None]:
        self.started = False
        return succeed(None)

    def execute(self, *args: Arg) -> Deferred[Any]:
        self.commands.append(args)
        d: Deferred[Any] = Deferred()
        try:
            self.connection.send_command(*args)
            reply = self.connection.read_response()
        except NoScriptError as exc:
            self.redis.clock.callLater(0, d.errback, RedisError(f"NOSCRIPT {exc}"))
        except ResponseError as exc:
            self.redis.clock.callLater(0, d.errback, RedisError(f"ERR {exc}"))
        else:
            self.redis.clock.callLater(0, d.callback, reply)
        self.redis.schedule_delivery()
        return d

    def pipeline(self, commands: Sequence[Sequence[Arg]]) -> list[Deferred[Any]]:
        return [self.execute(*args) for args in commands]


class FakeSubscriber:
    """A pub/sub subscription (edge.bus.client.Subscription)."""

    def __init__(
        self,
        redis: FakeRedis,
        channels: Sequence[str],
        on_message: Callable[[bytes, bytes], None],
        on_subscribed: Callable[[], None] | None,
    ) -> None:
        self.redis = redis
        self.channels = list(channels)
        self.on_message = on_message
        self.on_subscribed = on_subscribed
        self.pubsub: Any = None

    def start(self) -> Deferred[None]:
        self.pubsub = self.redis.sync.pubsub()
        self.pubsub.subscribe(*self.channels)
        self.redis.clock.callLater(0, self.subscribed)
        return succeed(None)

    def stop(self) -> Deferred[None]:
        if self.pubsub is not None:
            self.pubsub.close()
            self.pubsub = None
        return succeed(None)

    def subscribed(self) -> None:
        if self.on_subscribed is not None:
            self.on_subscribed()

    def has_pending(self) -> bool:
        return self.pubsub is not None and bool(self.pubsub.connection.can_read(timeout=0))

    def drop_pending(self) -> None:
        while self.pubsub is not None and self.pubsub.get_message(timeout=0) is not None:
            pass

    def receive(self) -> None:
        while self.pubsub is not None:
            message = self.pubsub.get_message(timeout=0)
            if message is None:
                return
            if message["type"] == "message":
                self.on_message(message["channel"], message["data"])
