"""Which devices are online and on which node: a ``status`` event for each connection and
disconnection of a device, and its route (``tl:route``: device → node) for the downlink."""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

from edge.bus.client import Commands
from edge.bus.keys import Keys
from edge.clock import now_ms
from edge.codecs import thinglinks as tl

from .interfaces import Clock, EventSink

log = Logger(namespace="edge")

# Removes the route of a device only when it still points at this node.
DELETE_ROUTE_IF_OURS = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
"""


class Presence:
    def __init__(
        self, clock: Clock, redis: Commands, keys: Keys, sink: EventSink, node: str
    ) -> None:
        self.clock = clock
        self.redis = redis
        self.keys = keys
        self.sink = sink
        self.node = node

    def online(self, device: str, peer: str, transport: str = "mqtt") -> None:
        self.sink.emit(
            tl.status_event(
                device, True, now_ms(self.clock.seconds), self.node, peer, None, transport
            )
        )
        self.redis.execute("HSET", self.keys.route, device, self.node).addErrback(self._failed)

    def offline(
        self, device: str, peer: str, reason: str, still_here: bool, transport: str = "mqtt"
    ) -> None:
        """``still_here``: a newer connection of the device on this node took over (the
        route stays)."""
        self.sink.emit(
            tl.status_event(
                device, False, now_ms(self.clock.seconds), self.node, peer, reason, transport
            )
        )
        if still_here:
            return
        self.redis.execute(
            "EVAL", DELETE_ROUTE_IF_OURS, 1, self.keys.route, device, self.node
        ).addErrback(self._failed)

    def _failed(self, failure: Any) -> None:
        log.warn("Redis route update failed: {error}", error=failure.getErrorMessage())
