"""MQTT routing between edge nodes (worker processes and machines) through Redis.

Each node registers in ``tl:mqtt:subs`` the topic filters its sessions subscribe to, and keeps
a copy of the other nodes' filters (loaded once, then kept current from ``tl:mqtt:interest``).
A message published on a node is forwarded, batched per reactor turn, to the queue
``tl:mqtt:fwdq:{node}`` of each other node with a matching filter only (routing stays local when
every subscriber is local); a batch into an empty queue wakes that node through its channel
``tl:mqtt:fwd:{node}``, and the node pops its queue. The bytes waiting in a node's queue are
bounded (``forward_limit``): past it, QoS 0 messages for that node are dropped and counted, and
a QoS 1/2 message is still queued but its publisher's connection is no longer read until the
queue is back under half the limit (back-pressure). Retained messages live in
``tl:mqtt:retained`` and every change is broadcast on ``tl:mqtt:retain`` so that all nodes
hold the same set. A client (same client id, or same device) connecting to a node closes its
older connection on another node through a control message on that node's channel.
docs/bus.md describes the semantics.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from edge.codecs import thinglinks as tl
from edge.mqtt.broker import Broker
from edge.mqtt.errors import Reason
from edge.mqtt.message import Message
from edge.mqtt.topics import TopicTrie, split_shared

from .client import Commands, Connector
from .cluster_records import BATCH, KICK, KIND_PUBLISH, KIND_SHARED, decode_records, encode_record
from .cluster_scripts import (
    CLAIM_SCRIPT,
    DELETE_IF_OURS,
    INTEREST_SCRIPT,
    POP_SCRIPT,
    PURGE_SCRIPT,
    PUSH_SCRIPT,
    RETAIN_SCRIPT,
    SCRIPTS,
    run_script,
)
from .keys import Keys

if TYPE_CHECKING:
    from edge.mqtt.connection import MqttConnection
    from edge.mqtt.policy import Client

log = Logger(namespace="edge.cluster")

MAX_BATCH = 512 * 1024  # bytes of records per forward batch
FORWARD_LIMIT = 8 * 1024 * 1024  # bytes waiting for one node before the bound applies
POP_COUNT = 8  # batches a node takes from its queue per call
QUEUE_TTL_MS = 600_000  # a queue nobody pops goes this long after its last push
POLL_INTERVAL = 1.0  # seconds: a node also pops without a wake (one lost with a pub/sub cut)
WATCH_INTERVAL = 0.05  # seconds: how often a full queue's byte count is read again
DROP_LOG_INTERVAL = 10.0  # seconds between two warnings about dropped or held messages


def _nodes(value: Any) -> tuple[str, ...]:
    """A node list from the Lua side (cjson writes an empty list as ``{}``)."""
    return tuple(str(n) for n in value) if isinstance(value, list) else ()


class ClusterHooks:
    """Wraps the broker's hooks: a connection accepted here claims its device and client id
    in Redis and closes an older connection on another node; everything else is delegated."""

    def __init__(self, inner: Any, cluster: Cluster) -> None:
        self.inner = inner
        self.cluster = cluster
        # Bound once: the broker calls these per CONNECT / PUBLISH.
        self.authenticate = inner.authenticate
        self.message_published = inner.message_published

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def client_connected(self, connection: MqttConnection) -> None:
        self.cluster.claim(connection)
        self.inner.client_connected(connection)

    def client_disconnected(self, connection: MqttConnection, reason: str) -> None:
        if self.cluster.release(connection, reason):
            self.inner.client_disconnected(connection, reason)


class Cluster:
    """One node's part of cross-node routing."""

    silent_after = 60.0  # seconds without a tl:nodes heartbeat before a node's filters go
    route_cache_size = 50_000

    def __init__(
        self,
        reactor: Any,
        connector: Connector,
        redis: Commands,
        keys: Keys,
        node: str,
        broker: Broker,
        wall: Callable[[], float] = time.time,
        forward_limit: int = FORWARD_LIMIT,
    ) -> None:
        self.reactor = reactor
        self.forward_limit = forward_limit
        self.redis = redis  # shared with the hooks: route updates stay in order
        self.keys = keys
        self.node = node
        self.broker = broker
        self.wall = wall
        self.channel = keys.mqtt_forward(node)
        # Its own connections: forwarding and snapshots do not wait behind the hooks' commands.
        self.client = connector.client("cluster")
        self.queue = keys.mqtt_forward_queue(node)
        self.queue_bytes = keys.mqtt_forward_bytes(node)
        self.subscriber = connector.subscriber(
            [self.channel, keys.mqtt_interest, keys.mqtt_retain_channel],
            on_message=self._message,
            on_subscribed=self._subscribed,
        )
        # Local interest: filter → number of sessions here subscribed to it.
        self.local: dict[str, int] = {}
        self._interest_ops: dict[str, str] = {}
        # Remote interest: filter → other nodes, and indexes for matching topics.
        self.remote: dict[str, tuple[str, ...]] = {}
        self._exact: dict[str, tuple[str, ...]] = {}
        self._wild: TopicTrie[tuple[str, ...]] = TopicTrie()
        self._shared: TopicTrie[tuple[tuple[str, str], tuple[str, ...]]] = TopicTrie()
        self._shared_count = 0
        self._routes: dict[str, tuple[tuple[str, ...], list[Any]]] = {}
        self._turn = itertools.count()
        # Outgoing records per node, retained changes, both written once per reactor turn.
        self._out: dict[str, list[bytes]] = {}
        self._out_bytes: dict[str, int] = {}
        self._retain_out: list[tuple[str, bytes]] = []
        # Connections accepted and ended this turn (claims and removals of tl:mqtt:clients).
        self._claims: list[tuple[MqttConnection, int]] = []
        self._releases: list[str] = []
        self._flush_call: Any = None
        # Messages that arrive while a snapshot is loading are replayed after it.
        self._syncing = True
        self._held: list[tuple[bytes, bytes]] = []
        self._synced: Deferred[None] = Deferred()
        self._kicked: dict[Client, int] = {}
        self._janitor = LoopingCall(self._purge_silent)
        self._janitor.clock = reactor
        self._stopping = False
        # The bound: bytes pushed to each node's queue and not yet answered, bytes its queue
        # held at the last answer, the nodes at the limit, and the publishers not read meanwhile.
        self._sending: dict[str, int] = {}
        self._waiting: dict[str, int] = {}
        self._full: set[str] = set()
        self._paused: dict[Any, None] = {}  # MqttConnections
        self._watch_call: Any = None
        self._unreported = [0, 0]  # QoS 0 drops and holds since the last warning
        self._reported_at = float("-inf")
        # Popping this node's own queue (held while a restart restores sessions).
        self._queue_held = False
        self._popping = False
        self._pop_again = False
        self._poller = LoopingCall(self._drain)
        self._poller.clock = reactor
        self._subscriptions = 0
        self.stats = dict.fromkeys(
            (
                "forwarded_out",
                "forwarded_in",
                "batches_out",
                "takeovers_sent",
                "takeovers_done",
                "forward_dropped",
                "publishers_held",
                "subscriber_reconnects",
            ),
            0,
        )

    # -- lifecycle --------------------------------------------------------------------------

    def attach(self) -> None:
        broker = self.broker
        broker.forward = self.forward
        broker.interest = self.interest
        broker.hooks = ClusterHooks(broker.hooks, self)  # type: ignore[assignment]

    def start(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._start())

    async def _start(self) -> None:
        await self.client.start()
        for source in SCRIPTS:
            await self.client.execute("SCRIPT", "LOAD", source)
        # A node that starts again under the same id (a restarted worker) has no sessions:
        # whatever interest the previous process left is stale.
        await run_script(
            self.client, PURGE_SCRIPT, 1, self.keys.mqtt_subs, self.node, self.keys.mqtt_interest
        )
        # What was forwarded to the previous process and not taken stays in the queue: it is
        # meant for the persistent sessions that process held, which this one restores before
        # it opens the queue (open_queue).
        await self.subscriber.start()
        await self._synced
        self._janitor.start(self.silent_after / 2, now=False)
        self._poller.start(POLL_INTERVAL, now=False)

    def stop(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        self._stopping = True
        if self._janitor.running:
            self._janitor.stop()
        if self._poller.running:
            self._poller.stop()
        if self._watch_call is not None and self._watch_call.active():
            self._watch_call.cancel()
        self._full.clear()
        self._resume_publishers()
        self.flush()
        if self.client.connected:
            try:
                await run_script(
                    self.client,
                    PURGE_SCRIPT,
                    1,
                    self.keys.mqtt_subs,
                    self.node,
                    self.keys.mqtt_interest,
                )
            except Exception as exc:
                log.warn("could not remove this node's subscriptions: {e}", e=str(exc))
        await self.subscriber.stop()
        await self.client.stop()

    # -- local interest ---------------------------------------------------------------------

    def interest(self, topic_filter: str, added: bool) -> None:
        count = self.local.get(topic_filter, 0)
        if added:
            self.local[topic_filter] = count + 1
            if count == 0:
                self._interest_ops[topic_filter] = "+"
                self._schedule()
        elif count <= 1:
            self.local.pop(topic_filter, None)
            if count == 1:
                self._interest_ops[topic_filter] = "-"
                self._schedule()
        else:
            self.local[topic_filter] = count - 1

    def _send_interest(self, ops: dict[str, str]) -> None:
        items = list(ops.items())
        for start in range(0, len(items), 1000):
            args: list[str] = []
            for topic_filter, op in items[start : start + 1000]:
                args += (op, topic_filter)
            d = run_script(
                self.client,
                INTEREST_SCRIPT,
                1,
                self.keys.mqtt_subs,
                self.node,
                self.keys.mqtt_interest,
                *args,
            )
            d.addErrback(self._warn, "subscription interest update failed")

    # -- remote interest --------------------------------------------------------------------

    def _set_remote(self, topic_filter: str, nodes: tuple[str, ...]) -> None:
        nodes = tuple(n for n in nodes if n != self.node)
        old = self.remote.get(topic_filter)
        if old == nodes or (old is None and not nodes):
            return
        try:
            shared = split_shared(topic_filter)
        except ValueError:
            return
        if nodes:
            self.remote[topic_filter] = nodes
        else:
            del self.remote[topic_filter]
        if shared is not None:
            if old is not None:
                self._shared.remove(shared[1], topic_filter)
                self._shared_count -= 1
            if nodes:
                self._shared.add(shared[1], topic_filter, (shared, nodes))
                self._shared_count += 1
        elif "+" in topic_filter or "#" in topic_filter:
            if old is not None:
                self._wild.remove(topic_filter, topic_filter)
            if nodes:
                self._wild.add(topic_filter, topic_filter, nodes)
        elif nodes:
            self._exact[topic_filter] = nodes
        else:
            self._exact.pop(topic_filter, None)
        self._routes.clear()

    def _reset_remote(self) -> None:
        self.remote.clear()
        self._exact.clear()
        self._wild = TopicTrie()
        self._shared = TopicTrie()
        self._shared_count = 0
        self._routes.clear()

    def nodes_for(self, topic: str) -> tuple[tuple[str, ...], list[Any]]:
        """The other nodes with a plain subscription matching ``topic``, and the shared groups
        (``(group, filter)``, nodes) that match it."""
        route = self._routes.get(topic)
        if route is not None:
            return route
        plain: set[str] = set(self._exact.get(topic, ()))
        if len(self._wild):
            for nodes in self._wild.match(topic):
                plain.update(nodes)
        shared = self._shared.match(topic) if self._shared_count else []
        if len(self._routes) >= self.route_cache_size:
            self._routes.clear()
        route = self._routes[topic] = (tuple(sorted(plain)), shared)
        return route

    # -- forwarding -------------------------------------------------------------------------

    def _expires_ms(self, message: Message) -> int:
        if message.expires_at is None:
            return 0
        return max(1, int((message.expires_at - self.reactor.seconds() + self.wall()) * 1000))

    def forward(self, message: Message) -> None:
        """The broker published ``message`` here: send it to the nodes that want it."""
        if message.retain:
            self._retain(message)
        plain, shared = self.nodes_for(message.topic)
        if not plain and not shared:
            return
        expires = self._expires_ms(message)
        if plain:
            record = encode_record(message, KIND_PUBLISH, "", expires)
            for node in plain:
                self._queue(node, record, message)
        for key, nodes in shared:
            if key in self.broker.shared_groups:
                continue  # a member on this node took it (local members first)
            node = nodes[next(self._turn) % len(nodes)]
            share = f"$share/{key[0]}/{key[1]}"
            self._queue(node, encode_record(message, KIND_SHARED, share, expires), message)

    def _queue(self, node: str, record: bytes, message: Message) -> None:
        if node in self._full:
            if not message.qos:
                self.stats["forward_dropped"] += 1
                self._unreported[0] += 1
                self._report()
                return
            self._hold(message)
        records = self._out.get(node)
        if records is None:
            records = self._out[node] = []
            self._out_bytes[node] = 0
        records.append(record)
        self._out_bytes[node] += len(record)
        self.stats["forwarded_out"] += 1
        if self._out_bytes[node] >= MAX_BATCH:
            self._publish_batch(node)
        self._schedule()

    def _publish_batch(self, node: str) -> None:
        records = self._out.pop(node, None)
        self._out_bytes.pop(node, None)
        if not records:
            return
        self.stats["batches_out"] += 1
        data = BATCH + b"".join(records)
        size = len(data)
        self._sending[node] = self._sending.get(node, 0) + size
        keys = self.keys
        d = run_script(
            self.client,
            PUSH_SCRIPT,
            2,
            keys.mqtt_forward_queue(node),
            keys.mqtt_forward_bytes(node),
            data,
            keys.mqtt_forward(node),
            QUEUE_TTL_MS,
        )
        d.addCallbacks(
            self._pushed,
            self._push_failed,
            callbackArgs=(node, size),
            errbackArgs=(node, size),
        )
        self._update(node)

    def _pushed(self, waiting: int, node: str, size: int) -> None:
        self._sending[node] -= size
        self._waiting[node] = int(waiting)
        self._update(node)

    def _push_failed(self, failure: Any, node: str, size: int) -> None:
        self._sending[node] -= size
        self._warn(failure, f"forwarding to {node} failed")
        self._update(node)

    # -- the bound ----------------------------------------------------------------------------

    def backlog(self, node: str) -> int:
        """Bytes on their way to ``node``'s queue or waiting in it, as last seen."""
        return self._sending.get(node, 0) + self._waiting.get(node, 0)

    def _update(self, node: str) -> None:
        backlog = self.backlog(node)
        if backlog >= self.forward_limit:
            if node not in self._full:
                self._full.add(node)
                self._watch_soon()
        elif node in self._full and backlog <= self.forward_limit // 2:
            self._full.discard(node)
            if not self._full:
                self._resume_publishers()

    def _hold(self, message: Message) -> None:
        """A QoS 1/2 message for a full queue: it is queued all the same, and its publisher is
        not read until every queue is back under half the limit."""
        session = self.broker.sessions.get(message.origin) if message.origin else None
        connection = session.connection if session is not None else None
        pause = getattr(connection, "pause_reading", None)  # an MqttConnection
        if pause is None or connection in self._paused:
            return
        self._paused[connection] = None
        self.stats["publishers_held"] += 1
        self._unreported[1] += 1
        self._report()
        pause(True)

    def _resume_publishers(self) -> None:
        paused, self._paused = self._paused, {}
        for connection in paused:
            connection.pause_reading(False)

    def _report(self) -> None:
        now = self.reactor.seconds()
        if now - self._reported_at < DROP_LOG_INTERVAL:
            return
        self._reported_at = now
        dropped, held = self._unreported
        self._unreported = [0, 0]
        log.warn(
            "forwarding to {nodes}: over {limit} bytes waiting; {dropped} QoS 0 messages "
            "dropped, {held} publishers held since the last report",
            nodes=",".join(sorted(self._full)),
            limit=self.forward_limit,
            dropped=dropped,
            held=held,
        )

    def _watch_soon(self) -> None:
        if self._watch_call is None or not self._watch_call.active():
            self._watch_call = self.reactor.callLater(WATCH_INTERVAL, self._watch)

    def _watch(self) -> None:
        """Read the byte counts of the full queues again (their nodes pop them)."""
        self._watch_call = None
        if not self._full or self._stopping:
            return
        known = {n for nodes in self.remote.values() for n in nodes}
        for node in [n for n in self._full if n not in known]:
            # That node is gone (its filters were purged): nothing goes to it any more.
            self._waiting.pop(node, None)
            self._update(node)
        nodes = sorted(self._full)
        if not nodes:
            return
        d = self.client.execute("MGET", *(self.keys.mqtt_forward_bytes(n) for n in nodes))

        def read(values: list[bytes | None]) -> None:
            for node, value in zip(nodes, values):
                self._waiting[node] = int(value or 0)
                self._update(node)
            if self._full:
                self._watch_soon()
                # A held publisher is not silent, it is not read: its keep alive must not
                # close it meanwhile.
                now = self.broker.clock.seconds()
                for connection in self._paused:
                    connection.last_seen = now

        def failed(failure: Any) -> None:
            self._warn(failure, "reading the forward queues failed")
            self._watch_soon()

        d.addCallbacks(read, failed)

    def _retain(self, message: Message) -> None:
        record = encode_record(message, KIND_PUBLISH, "", self._expires_ms(message))
        self._retain_out.append((message.topic, record if message.payload else b""))
        self._schedule()

    def _schedule(self) -> None:
        if self._flush_call is None:
            self._flush_call = self.reactor.callLater(0, self.flush)

    def flush(self) -> None:
        if self._flush_call is not None:
            if self._flush_call.active():
                self._flush_call.cancel()
            self._flush_call = None
        if self._claims:
            self._send_claims()
        if self._releases:
            self._send_releases()
        if self._interest_ops:
            ops, self._interest_ops = self._interest_ops, {}
            self._send_interest(ops)
        if self._retain_out:
            changes, self._retain_out = self._retain_out, []
            args: list[Any] = []
            batch = []
            for topic, record in changes:
                # The broadcast always carries the record (a clear has an empty payload).
                batch.append(record or encode_record(Message(topic, b"", 0, True)))
                args += (topic, record)
            d = run_script(
                self.client,
                RETAIN_SCRIPT,
                1,
                self.keys.mqtt_retained,
                self.keys.mqtt_retain_channel,
                BATCH + b"".join(batch),
                *args,
            )
            d.addErrback(self._warn, "retained message update failed")
        for node in list(self._out):
            self._publish_batch(node)

    @property
    def pending(self) -> int:
        """Records waiting for the end of the reactor turn."""
        return sum(len(records) for records in self._out.values())

    # -- this node's queue ------------------------------------------------------------------

    def hold_queue(self) -> None:
        """Take nothing from this node's queue until :meth:`open_queue` (the edge holds it
        while it restores the persistent sessions of a previous process of this node)."""
        self._queue_held = True

    def open_queue(self) -> Deferred[int]:
        """Deliver what waits in this node's queue, all of it (to the sessions there are now:
        the restored persistent ones), then take the queue as it fills. Fires with the number
        of batches that waited."""
        return Deferred.fromCoroutine(self._open_queue())

    async def _open_queue(self) -> int:
        waited = 0
        while True:
            items = await run_script(
                self.client, POP_SCRIPT, 2, self.queue, self.queue_bytes, POP_COUNT
            )
            if not items:
                break
            waited += len(items)
            self._popped(items, again=False)
        if waited:
            log.info(
                "delivered {count} forwarded batches that waited for this node while it was "
                "down",
                count=waited,
            )
        self._queue_held = False
        self._drain()
        return waited

    def _drain(self) -> None:
        """Pop this node's queue until it is empty (woken by a 'W', and every POLL_INTERVAL)."""
        if self._queue_held:
            return
        if self._popping:
            self._pop_again = True
            return
        if self._stopping:
            return
        self._popping = True
        self._pop_again = False
        d = run_script(self.client, POP_SCRIPT, 2, self.queue, self.queue_bytes, POP_COUNT)
        d.addCallbacks(self._popped, self._pop_failed)

    def _popped(self, items: list[bytes] | None, again: bool = True) -> None:
        if again:
            self._popping = False
        for item in items or ():
            try:
                self._deliver(item)
            except Exception:
                log.failure("bad forwarded batch in {queue}", queue=self.queue)
        if again and (items or self._pop_again):
            self._drain()

    def _pop_failed(self, failure: Any) -> None:
        self._popping = False
        self._warn(failure, "reading this node's forward queue failed")

    # -- incoming ---------------------------------------------------------------------------

    def _message(self, channel: bytes, data: bytes) -> None:
        if self._syncing and channel != self.channel.encode():
            self._held.append((channel, data))
            return
        try:
            self._dispatch(channel, data)
        except Exception:
            log.failure("bad cluster message on {channel}", channel=channel)

    def _dispatch(self, channel: bytes, data: bytes) -> None:
        keys = self.keys
        if channel == keys.mqtt_interest.encode():
            for topic_filter, nodes in json.loads(data):
                self._set_remote(topic_filter, _nodes(nodes))
        elif channel == keys.mqtt_retain_channel.encode():
            self._apply_retained(data[1:])
        elif data == b"W":
            self._drain()
        elif data[:1] == BATCH:
            self._deliver(data)
        elif data[:1] == KICK:
            self._kick(json.loads(data[1:]))

    def _to_clock(self, expires_ms: int) -> float | None:
        if not expires_ms:
            return None
        return self.reactor.seconds() + (expires_ms / 1000 - self.wall())

    def _deliver(self, data: bytes) -> None:
        broker = self.broker
        for kind, share, message, expires_ms in decode_records(data, 1):
            self.stats["forwarded_in"] += 1
            if expires_ms:
                message.expires_at = self._to_clock(expires_ms)
            if kind == KIND_PUBLISH:
                broker.publish(message, remote=True)
                continue
            parsed = split_shared(share)
            group = broker.shared_groups.get(parsed) if parsed is not None else None
            chosen = group.pick() if group is not None else None
            if chosen is None:
                broker.stats["dropped"] += 1
                continue
            ids = (chosen.identifier,) if chosen.identifier is not None else ()
            broker.deliver(
                chosen.session, message, min(chosen.options.qos, message.qos), False, ids
            )
        broker.flush()

    def _apply_retained(self, data: bytes) -> None:
        retained = self.broker.retained
        now = self.wall() * 1000
        for _kind, _share, message, expires_ms in decode_records(data):
            if not message.payload or (expires_ms and expires_ms <= now):
                retained.pop(message.topic, None)
                continue
            message.expires_at = self._to_clock(expires_ms)
            retained[message.topic] = message

    # -- snapshots --------------------------------------------------------------------------

    def _subscribed(self) -> None:
        """The pub/sub connection (re)subscribed. Again means Redis or the network cut it
        (Redis does so at its pubsub output-buffer limit): what it carried meanwhile is lost;
        the view is loaded again and the queue read (forwarded messages wait there)."""
        self._subscriptions += 1
        if self._subscriptions > 1:
            self.stats["subscriber_reconnects"] += 1
            log.warn("cluster pub/sub connection back; reloading the cluster view")
        self._resync()

    def _resync(self) -> None:
        """After (re)subscribing: load both snapshots, then replay what arrived meanwhile."""
        self._syncing = True
        replies = self.client.pipeline(
            [("HGETALL", self.keys.mqtt_subs), ("HGETALL", self.keys.mqtt_retained)]
        )
        if self.local:
            # Redis may have lost our filters (a restart): assert them again.
            self._send_interest(dict.fromkeys(self.local, "+"))

        def loaded(results: list[Any]) -> None:
            subs, retained = results
            self._reset_remote()
            for topic_filter, raw in zip(subs[::2], subs[1::2]):
                try:
                    nodes = _nodes(json.loads(raw))
                except ValueError:
                    continue
                self._set_remote(topic_filter.decode(), nodes)
            self.broker.retained.clear()
            self._apply_retained(b"".join(retained[1::2]))
            held, self._held = self._held, []
            self._syncing = False
            for channel, data in held:
                self._message(channel, data)
            if not self._stopping:
                self._drain()
            log.info(
                "cluster view loaded: {filters} remote filters, {retained} retained messages",
                filters=len(self.remote),
                retained=len(self.broker.retained),
            )
            if not self._synced.called:
                self._synced.callback(None)

        def failed(failure: Any) -> None:
            log.warn("cluster snapshot failed: {e}; retrying", e=failure.getErrorMessage())
            if not self._stopping:
                self.reactor.callLater(1.0, self._resync)

        gathered: Deferred[list[Any]] = gatherResults(replies, consumeErrors=True)
        gathered.addCallbacks(loaded, failed)

    # -- takeover across nodes --------------------------------------------------------------

    def claim(self, connection: MqttConnection) -> None:
        """Record that this node holds the connection's device and client id; close an older
        connection of either on the node that held it. The claims of one reactor turn go to
        Redis as one script call (a connect burst otherwise left a command and a Deferred per
        connection waiting for Redis). A device's claim goes at once, with those waiting:
        the presence hook writes its route right after this, and the claim must read the
        route's previous node first."""
        if self._releases:
            self._send_releases()  # a release queued before this claim goes first
        self._claims.append((connection, int(self.wall() * 1000)))
        if connection.identity is not None:
            self._send_claims()
        else:
            self._schedule()

    def _send_claims(self) -> None:
        claims, self._claims = self._claims, []
        args: list[str] = []
        for connection, _at in claims:
            args += (connection.identity or "", connection.client_id)
        d = run_script(
            self.redis, CLAIM_SCRIPT, 2, self.keys.route, self.keys.mqtt_clients, self.node, *args
        )

        def claimed(previous: list[bytes]) -> None:
            for index, (connection, at) in enumerate(claims):
                before_dev = previous[2 * index].decode()
                before_cid = previous[2 * index + 1].decode()
                device = connection.identity or ""
                kicks: dict[str, dict[str, Any]] = {}
                if before_dev and before_dev != self.node:
                    kicks.setdefault(before_dev, {})["dev"] = device
                if before_cid and before_cid != self.node:
                    # Only a connection of the same identity is closed there (H1).
                    kicks.setdefault(before_cid, {}).update(
                        cid=connection.client_id, who=connection.owner
                    )
                for node, what in kicks.items():
                    self.stats["takeovers_sent"] += 1
                    body = json.dumps({**what, "at": at, "by": self.node}).encode()
                    self.redis.execute(
                        "PUBLISH", self.keys.mqtt_forward(node), KICK + body
                    ).addErrback(self._warn, "takeover message failed")

        d.addCallbacks(claimed, self._warn, errbackArgs=("client registration failed",))

    def _send_releases(self) -> None:
        releases, self._releases = self._releases, []
        run_script(
            self.redis, DELETE_IF_OURS, 1, self.keys.mqtt_clients, self.node, *releases
        ).addErrback(self._warn, "client registration removal failed")

    def release(self, connection: MqttConnection, reason: str) -> bool:
        """A connection ended; False when a newer connection on another node took it over
        (that node reported it online: no offline status from here)."""
        kicked_at = self._kicked.pop(connection, None)
        self._paused.pop(connection, None)
        session = connection.session
        if self._claims:
            # Its claim (or another's) may still wait for the end of the turn: Redis sees
            # claims and removals in the order they happened.
            self._send_claims()
        if session is None or session.expiry_interval == 0 or kicked_at is not None:
            self._releases.append(connection.client_id)
            self._schedule()
        if kicked_at is None:
            return True
        hooks = self.broker.hooks
        uplink = getattr(getattr(hooks, "inner", None), "uplink", None)
        if connection.identity is not None and uplink is not None:
            # Dated just before the new connection's online event, so that the platform keeps
            # the device online (last writer wins on the event time).
            uplink.emit(
                tl.status_event(
                    connection.identity, False, kicked_at - 1, self.node, connection.peer, reason
                )
            )
        return False

    def _kick(self, body: dict[str, Any]) -> None:
        at = int(body.get("at", 0))
        broker = self.broker
        targets: list[Client] = []
        device = body.get("dev")
        if device:
            connection = broker.by_identity.get(device)
            if connection is not None:
                targets.append(connection)
        client_id = str(body.get("cid") or "")
        session = broker.sessions.get(client_id) if client_id else None
        if session is not None and session.owner != body.get("who"):
            # The client id's session here belongs to another identity: it stays, and so
            # does its connection.
            session = None
        if session is not None and session.connection is not None:
            targets.append(session.connection)
        for connection in targets:
            if connection.opened_at * 1000 < at and connection not in self._kicked:
                self._kicked[connection] = at
                self.stats["takeovers_done"] += 1
                connection.close(Reason.SESSION_TAKEN_OVER, "takeover")
        if (
            session is not None
            and session.connection is None
            and broker.sessions.get(client_id) is session
        ):
            # The client id now has its session on the other node.
            broker.discard_session(session)
        broker.flush()

    # -- housekeeping -----------------------------------------------------------------------

    def _purge_silent(self) -> None:
        """Drop the filters of nodes whose heartbeat stopped (a machine that went away)."""
        known = {n for nodes in self.remote.values() for n in nodes}
        if not known:
            return
        d = self.client.execute("HGETALL", self.keys.nodes)

        def check(reply: list[bytes]) -> None:
            beats = dict(zip(reply[::2], reply[1::2]))
            limit = (self.wall() - self.silent_after) * 1000
            for node in known:
                raw = beats.get(node.encode())
                try:
                    ts = json.loads(raw)["ts"] if raw else 0
                except (ValueError, KeyError, TypeError):
                    ts = 0
                if ts < limit:
                    log.warn("node {node} is silent; dropping its subscriptions", node=node)
                    run_script(
                        self.client,
                        PURGE_SCRIPT,
                        1,
                        self.keys.mqtt_subs,
                        node,
                        self.keys.mqtt_interest,
                    ).addErrback(self._warn, "purge failed")

        d.addCallbacks(check, self._warn, errbackArgs=("heartbeat read failed",))

    def _warn(self, failure: Any, what: str) -> None:
        if not self._stopping:
            log.warn("{what}: {error}", what=what, error=failure.getErrorMessage())

    def samples(self) -> list[tuple[Any, ...]]:
        stats = self.stats
        return [
            (
                "edge_cluster_forwarded_out_total",
                "counter",
                "Messages forwarded to other nodes",
                stats["forwarded_out"],
            ),
            (
                "edge_cluster_forwarded_in_total",
                "counter",
                "Messages received from other nodes",
                stats["forwarded_in"],
            ),
            (
                "edge_cluster_batches_out_total",
                "counter",
                "Forward batches published",
                stats["batches_out"],
            ),
            (
                "edge_cluster_forward_queue",
                "gauge",
                "Forwarded messages waiting for the end of the reactor turn",
                self.pending,
            ),
            (
                "edge_cluster_forward_dropped_total",
                "counter",
                "QoS 0 messages not forwarded: the other node's queue was full",
                stats["forward_dropped"],
            ),
            (
                "edge_cluster_forward_backlog_bytes",
                "gauge",
                "Bytes forwarded to other nodes and not yet taken by them (as last seen)",
                sum(self.backlog(node) for node in set(self._sending) | set(self._waiting)),
            ),
            (
                "edge_cluster_publishers_held",
                "gauge",
                "Connections not read while a queue they publish to is full",
                len(self._paused),
            ),
            (
                "edge_cluster_publisher_holds_total",
                "counter",
                "Times a QoS 1/2 publisher was held for a full queue",
                stats["publishers_held"],
            ),
            (
                "edge_cluster_subscriber_reconnects_total",
                "counter",
                "Times the cluster's pub/sub connection came back after being cut",
                stats["subscriber_reconnects"],
            ),
            (
                "edge_cluster_remote_filters",
                "gauge",
                "Topic filters subscribed on other nodes",
                len(self.remote),
            ),
            (
                "edge_cluster_local_filters",
                "gauge",
                "Topic filters subscribed on this node",
                len(self.local),
            ),
            (
                "edge_cluster_takeovers_total",
                "counter",
                "Connections closed for a newer one on another node",
                stats["takeovers_done"],
            ),
        ]
