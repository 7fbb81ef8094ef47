"""Which devices are online and on which node: a ``status`` event for each connection and
disconnection of a device, and its route (``tl:route``: device → node) for the downlink."""

from __future__ import annotations

import hashlib
import mmap
import os
import struct
import tempfile
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

# Of the devices named, removes the routes that point at this node; returns those removed.
TAKE_ROUTES_OF_NODE = """
local gone = {}
for i = 2, #ARGV do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[1] then
    redis.call('HDEL', KEYS[1], ARGV[i])
    gone[#gone + 1] = ARGV[i]
  end
end
return gone
"""
ROUTE_SCAN_COUNT = 5000
_STAMP = struct.Struct("<q")


class OnlineStamp:
    """The time (epoch ms) of the last online event of any process of one node, in a small
    memory-mapped file that outlives the process (a SIGKILL does not lose the page): after a
    crash the next process dates its devices' offline events just after it, which is after
    after the death). Without the file (unwritable directory) it reads None.

    The file is only needed after a crash: a node that stops cleanly removes it
    (:meth:`remove`), and a supervisor (edge.workers) keeps its workers' files in a directory
    of its own run (``EDGE_STAMP_DIR``), removed when it exits."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.map: mmap.mmap | None = None
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                if os.fstat(fd).st_size < _STAMP.size:
                    os.ftruncate(fd, _STAMP.size)
                self.map = mmap.mmap(fd, _STAMP.size)
            finally:
                os.close(fd)
        except (OSError, ValueError) as exc:
            log.warn("no online stamp file {path}: {error}", path=path, error=str(exc))

    @classmethod
    def for_node(cls, prefix: str, node: str, directory: str | None = None) -> OnlineStamp:
        """The node's file in ``directory``, else ``EDGE_STAMP_DIR``, else the system's
        temporary directory."""
        digest = hashlib.sha256(f"{prefix}\0{node}".encode()).hexdigest()[:24]
        where = directory or os.environ.get("EDGE_STAMP_DIR") or tempfile.gettempdir()
        return cls(os.path.join(where, f"thinglinks-edge-{digest}.online"))

    def remove(self) -> None:
        """The node stopped cleanly (its devices' offline events are written): no later
        process needs the stamp."""
        if self.map is not None:
            self.map.close()
            self.map = None
            try:
                os.unlink(self.path)
            except OSError as exc:
                log.warn("could not remove {path}: {error}", path=self.path, error=str(exc))

    def read(self) -> int | None:
        if self.map is None:
            return None
        value: int = _STAMP.unpack_from(self.map)[0]
        return value or None

    def write(self, ts: int) -> None:
        if self.map is not None:
            _STAMP.pack_into(self.map, 0, ts)


class Presence:
    def __init__(
        self,
        clock: Clock,
        redis: Commands,
        keys: Keys,
        sink: EventSink,
        node: str,
        stamp: OnlineStamp | None = None,
    ) -> None:
        self.clock = clock
        self.redis = redis
        self.keys = keys
        self.sink = sink
        self.node = node
        self.stamp = stamp

    def close(self) -> None:
        """The node stopped cleanly: its online stamp goes (see :class:`OnlineStamp`)."""
        if self.stamp is not None:
            self.stamp.remove()

    def online(self, device: str, peer: str, transport: str = "mqtt") -> None:
        ts = now_ms(self.clock.seconds)
        if self.stamp is not None:
            self.stamp.write(ts)
        self.sink.emit(tl.status_event(device, True, ts, self.node, peer, None, transport))
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

    async def forget_previous_process(self) -> int:
        """At start, before listening: the devices routed to this node were connected to a
        previous process of it that died without saying so (a worker killed with SIGKILL
        comes back under the same node id within a second, so its ``tl:nodes`` heartbeat
        never lapses and webapp's sweep of silent nodes cannot see it). Their routes go and
        each gets an offline event (reason ``node_lost``); returns how many.

        The events are dated 1 ms after the previous process's last online event
        (:class:`OnlineStamp`), not now: a device of the dead process that has meanwhile
        reconnected to another node, whose route write has not reached Redis yet, has an
        online event dated after the death, which stays the last word."""
        node = self.node.encode()
        last = self.stamp.read() if self.stamp is not None else None
        cursor: Any = b"0"
        forgotten = 0
        while True:
            cursor, flat = await self.redis.execute(
                "HSCAN", self.keys.route, cursor, "COUNT", ROUTE_SCAN_COUNT
            )
            ours = [flat[i] for i in range(0, len(flat), 2) if flat[i + 1] == node]
            if ours:
                gone = await self.redis.execute(
                    "EVAL", TAKE_ROUTES_OF_NODE, 1, self.keys.route, self.node, *ours
                )
                ts = last + 1 if last is not None else now_ms(self.clock.seconds)
                self.sink.emit(
                    *(
                        tl.status_event(device.decode(), False, ts, self.node, "", "node_lost", "")
                        for device in gone
                    )
                )
                forgotten += len(gone)
            if cursor in (b"0", 0, "0"):
                break
        if forgotten:
            log.info(
                "{count} devices routed to a previous process of node {node} are offline",
                count=forgotten,
                node=self.node,
            )
        return forgotten

    def _failed(self, failure: Any) -> None:
        log.warn("Redis route update failed: {error}", error=failure.getErrorMessage())
