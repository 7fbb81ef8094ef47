"""Persistent MQTT sessions in Redis, so that they survive an edge restart and follow a client
that reconnects to another node (docs/bus.md, "Persistent MQTT sessions").

A session is persistent when its expiry interval is above zero (5.0 Session Expiry, or 3.1.1
clean session 0). Its state lives in ``tl:mqtt:sess:{client id}`` (hash: ``owner`` node,
``who`` the client identity it belongs to, ``meta``, ``subs``) and
``tl:mqtt:sessq:{client id}`` (list of queued messages), and ``tl:mqtt:sessions`` indexes the
client ids. Only a client of the same identity may resume or replace a session: every write
leaves alone a session whose ``who`` differs (H1). What is written, batched per reactor turn:

* the subscriptions, whenever they change;
* each QoS 1/2 message queued while the client is away (appended, trimmed to the queue bound);
* a snapshot (in-flight and queued messages, QoS 2 ids awaiting PUBREL) when the client goes
  away, with the session's expiry as the keys' TTL.

A node writes only the sessions it owns (``owner``); it becomes the owner when the client
connects to it or when it restores the session at start from a node that is gone. Messages in
flight to a connected client are only written when it disconnects (or the edge stops): a
crash loses those, not the subscriptions.
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.logger import Logger

from edge.mqtt.broker import Broker
from edge.mqtt.message import Message, Outgoing
from edge.mqtt.packets import Subscription
from edge.mqtt.properties import NO_PROPERTIES, PUBLISH, decode_properties, encode_properties
from edge.mqtt.session import Loaded, Session
from edge.mqtt.wire import Reader

from .client import Commands
from .keys import Keys

log = Logger(namespace="edge.sessions")

# KEYS: session hash, queue list, index hash. ARGV: node, client id, mode, identity ('' for
# anonymous), then per mode. A session of another identity is never touched; one written
# before identities were kept (no 'who') may be replaced or deleted.
WRITE_SCRIPT = """
local node, cid, mode, who = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local held = redis.call('HMGET', KEYS[1], 'owner', 'who')
if held[2] and held[2] ~= who then return 0 end
if mode == 'forget' then
  redis.call('DEL', KEYS[1], KEYS[2])
  redis.call('HDEL', KEYS[3], cid)
  return 1
end
if mode == 'own' then
  -- Connected: the queue is in the node's memory now (written again at disconnect).
  redis.call('HSET', KEYS[1], 'owner', node, 'who', who, 'meta', ARGV[5], 'subs', ARGV[6])
  redis.call('PERSIST', KEYS[1])
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[3], cid, node)
  return 1
end
if held[1] ~= node then return 0 end
if mode == 'subs' then
  redis.call('HSET', KEYS[1], 'subs', ARGV[5])
elseif mode == 'push' then
  for i = 6, #ARGV do redis.call('RPUSH', KEYS[2], ARGV[i]) end
  redis.call('LTRIM', KEYS[2], -tonumber(ARGV[5]), -1)
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
elseif mode == 'snap' then
  redis.call('HSET', KEYS[1], 'meta', ARGV[5], 'subs', ARGV[6])
  redis.call('DEL', KEYS[2])
  for i = 8, #ARGV do redis.call('RPUSH', KEYS[2], ARGV[i]) end
  local ttl = tonumber(ARGV[7])
  if ttl > 0 then
    redis.call('PEXPIRE', KEYS[1], ttl)
    if #ARGV >= 8 then redis.call('PEXPIRE', KEYS[2], ttl) end
  else
    redis.call('PERSIST', KEYS[1])
  end
elseif mode == 'del' then
  redis.call('DEL', KEYS[1], KEYS[2])
  redis.call('HDEL', KEYS[3], cid)
end
return 1
"""

# The clean starts of one reactor turn in one call (a connect burst otherwise sent the whole
# WRITE_SCRIPT and made a Deferred per connection). KEYS: index hash. ARGV: the session and
# queue key prefixes, then client id / identity pairs; per pair 1 (forgotten) or 0 (the
# session of another identity: left as it is), as WRITE_SCRIPT's 'forget'.
FORGET_SCRIPT = """
local out = {}
for i = 3, #ARGV, 2 do
  local cid, who = ARGV[i], ARGV[i + 1]
  local key = ARGV[1] .. cid
  local held = redis.call('HGET', key, 'who')
  if held and held ~= who then
    out[#out + 1] = 0
  else
    redis.call('DEL', key, ARGV[2] .. cid)
    redis.call('HDEL', KEYS[1], cid)
    out[#out + 1] = 1
  end
end
return out
"""

# KEYS: session hash, queue list, index hash, node heartbeats. ARGV: node, client id, mode
# ('restore': only from a node that is gone; 'connect': always), now (ms), silence (ms), the
# connecting client's identity ('connect'; '' for anonymous). Returns false (no session),
# 'taken' (a session of another identity: left as it is) or [meta, subs, queue, who]. A
# session written before identities were kept has no 'who': nobody can be sure to resume it
# as its own, so it is dropped.
CLAIM_SCRIPT = """
local node, cid = ARGV[1], ARGV[2]
local held = redis.call('HMGET', KEYS[1], 'owner', 'who')
local owner, who = held[1], held[2]
if owner and not who then
  redis.call('DEL', KEYS[1], KEYS[2])
  owner = nil
end
if not owner then
  redis.call('HDEL', KEYS[3], cid)
  return false
end
if ARGV[3] == 'connect' and who ~= ARGV[6] then return 'taken' end
if ARGV[3] == 'restore' and owner ~= node then
  local beat = redis.call('HGET', KEYS[4], owner)
  if beat then
    local ok, info = pcall(cjson.decode, beat)
    if ok and type(info) == 'table'
       and tonumber(info.ts or 0) > tonumber(ARGV[4]) - tonumber(ARGV[5]) then
      return false
    end
  end
end
redis.call('HSET', KEYS[1], 'owner', node)
redis.call('HSET', KEYS[3], cid, node)
return {redis.call('HGET', KEYS[1], 'meta') or '', redis.call('HGET', KEYS[1], 'subs') or '',
        redis.call('LRANGE', KEYS[2], 0, -1), who}
"""

# flags (delivery QoS | retain << 2 | released << 3 | message retain << 4 | message QoS << 5),
# packet id (0 = not yet sent), expiry (epoch ms, 0 = none), lengths of topic, origin and
# properties, number of subscription identifiers; then those, then the payload.
_RECORD = struct.Struct(">BHQHHIB")


def encode_outgoing(outgoing: Outgoing, packet_id: int, expires_ms: int) -> bytes:
    message = outgoing.message
    topic = message.topic.encode()
    origin = (message.origin or "").encode()
    props = b"" if message.properties is NO_PROPERTIES else encode_properties(message.properties)
    ids = outgoing.subscription_ids
    flags = (
        outgoing.qos
        | outgoing.retain << 2
        | outgoing.released << 3
        | message.retain << 4
        | message.qos << 5
    )
    head = _RECORD.pack(flags, packet_id, expires_ms, len(topic), len(origin), len(props), len(ids))
    return b"".join(
        (head, topic, origin, props, b"".join(i.to_bytes(4, "big") for i in ids), message.payload)
    )


def decode_outgoing(data: bytes) -> tuple[Outgoing, int, int]:
    """``(outgoing, packet id, expiry ms)``; the message's ``expires_at`` is left unset."""
    flags, packet_id, expires_ms, n_topic, n_origin, n_props, n_ids = _RECORD.unpack_from(data)
    pos = _RECORD.size
    topic = data[pos : pos + n_topic].decode()
    pos += n_topic
    origin = data[pos : pos + n_origin].decode() or None
    pos += n_origin
    props = NO_PROPERTIES
    if n_props:
        props = decode_properties(Reader(data, pos, pos + n_props), PUBLISH)
    pos += n_props
    ids = tuple(int.from_bytes(data[pos + 4 * i : pos + 4 * i + 4], "big") for i in range(n_ids))
    pos += 4 * n_ids
    message = Message(topic, data[pos:], (flags >> 5) & 3, bool(flags & 0x10), props, None, origin)
    outgoing = Outgoing(message, flags & 3, bool(flags & 4), ids)
    outgoing.released = bool(flags & 8)
    return outgoing, packet_id, expires_ms


def encode_subscriptions(session: Session) -> str:
    subs = [
        [
            entry.options.topic_filter,
            entry.options.qos,
            int(entry.options.no_local),
            int(entry.options.retain_as_published),
            entry.options.retain_handling,
            entry.identifier,
        ]
        for entry in session.subscriptions.values()
    ]
    return json.dumps(subs, separators=(",", ":"))


class SessionStore:
    """Writes this node's persistent sessions to Redis and loads them back."""

    silence_ms = 30_000  # a node whose heartbeat is older is gone (docs/bus.md, tl:nodes)
    retry_restore_after = 35.0

    def __init__(
        self,
        redis: Commands,
        keys: Keys,
        node: str,
        broker: Broker,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.node = node
        self.broker = broker
        self.wall = wall
        # Client ids whose session this node wrote (so that discarding others costs nothing).
        self.owned: set[str] = set()
        self._snapshots: dict[str, Session] = {}
        self._subs: dict[str, Session] = {}
        self._pushes: dict[str, tuple[Session, list[bytes]]] = {}
        self._ops: list[tuple[str, str, tuple[Any, ...]]] = []
        self._writing: set[Deferred[Any]] = set()
        self._flush_call: Any = None
        self._loading = False  # restoring: the broker's callbacks must not write back
        self._retry: Any = None
        self.stats = dict.fromkeys(("restored", "loaded", "writes"), 0)

    def attach(self) -> None:
        self.broker.store = self

    def start(self) -> Deferred[int]:
        """Restore the sessions of nodes that are gone, and look again once a node that
        stopped just before has missed enough heartbeats to count as gone."""
        self._retry = self.broker.clock.callLater(self.retry_restore_after, self._restore_again)
        return self.restore()

    def _restore_again(self) -> None:
        self._retry = None
        self.restore().addErrback(self._failed, "*", "restore")

    def stop(self) -> Deferred[Any]:
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        return self.drain()

    # -- broker callbacks (cheap: they only mark what the next flush writes) ------------------

    def forget(self, client_id: str, owner: str | None) -> None:
        """A clean start by ``owner``: what Redis holds for this client id is gone, unless it
        is the session of another identity."""
        self._snapshots.pop(client_id, None)
        self._subs.pop(client_id, None)
        self._pushes.pop(client_id, None)
        self.owned.discard(client_id)
        self._ops.append((client_id, "forget", (owner or "",)))
        self._schedule()

    def online(self, session: Session) -> None:
        """A persistent session is now used by a connection on this node."""
        self.owned.add(session.client_id)
        self._pushes.pop(session.client_id, None)
        self._subs.pop(session.client_id, None)
        self._ops.append((session.client_id, "own", self._whole(session)))
        self._schedule()

    def subscriptions_changed(self, session: Session) -> None:
        if self._loading or session.client_id not in self.owned:
            return
        if session.client_id not in self._snapshots:
            self._subs[session.client_id] = session
            self._schedule()

    def queued(self, session: Session, outgoing: Outgoing) -> None:
        """A QoS 1/2 message was queued for an offline persistent session."""
        client_id = session.client_id
        if self._loading or client_id not in self.owned or client_id in self._snapshots:
            return
        pushed = self._pushes.get(client_id)
        if pushed is None:
            pushed = self._pushes[client_id] = (session, [])
        pushed[1].append(encode_outgoing(outgoing, 0, self._expires_ms(outgoing.message)))
        self._schedule()

    def offline(self, session: Session) -> None:
        """The session's connection ended; it stays for its expiry interval."""
        if session.client_id not in self.owned:
            self.owned.add(session.client_id)
            self._ops.append((session.client_id, "own", self._whole(session)))
        self._snapshots[session.client_id] = session
        self._subs.pop(session.client_id, None)
        self._pushes.pop(session.client_id, None)
        self._schedule()

    def discarded(self, session: Session) -> None:
        client_id = session.client_id
        if client_id not in self.owned or self._loading:
            return
        self.owned.discard(client_id)
        self._snapshots.pop(client_id, None)
        self._subs.pop(client_id, None)
        self._pushes.pop(client_id, None)
        self._ops.append((client_id, "del", (session.owner or "",)))
        self._schedule()

    # -- writing ----------------------------------------------------------------------------

    def _schedule(self) -> None:
        if self._flush_call is None:
            self._flush_call = self.broker.clock.callLater(0, self.flush)

    def _whole(self, session: Session) -> tuple[str, str, str]:
        """The arguments of an 'own' write: identity, meta and subscriptions."""
        return session.owner or "", self._meta(session), encode_subscriptions(session)

    def _meta(self, session: Session) -> str:
        meta: dict[str, Any] = {"exp": session.expiry_interval, "next": session.next_packet_id}
        if session.connection is None:
            meta["off"] = int(self.wall() * 1000)
        if session.qos2_received:
            meta["q2"] = sorted(session.qos2_received)
        return json.dumps(meta, separators=(",", ":"))

    def _expires_ms(self, message: Message) -> int:
        if message.expires_at is None:
            return 0
        remaining = message.expires_at - self.broker.clock.seconds()
        return max(1, int((self.wall() + remaining) * 1000))

    def _write(self, client_id: str, mode: str, *args: Any) -> Deferred[Any]:
        """One WRITE_SCRIPT call; ``args`` are the identity, then what the mode needs. Fires
        with 1 when written, 0 when the session is another node's or another identity's."""
        keys = self.keys
        d = self.redis.execute(
            "EVAL",
            WRITE_SCRIPT,
            3,
            keys.mqtt_session(client_id),
            keys.mqtt_session_queue(client_id),
            keys.mqtt_sessions,
            self.node,
            client_id,
            mode,
            *args,
        )
        self.stats["writes"] += 1
        self._writing.add(d)
        d.addErrback(self._failed, client_id, mode)
        d.addBoth(self._written, d)
        return d

    def _forget(self, forgets: list[tuple[str, str]]) -> None:
        """The 'forget' writes of one turn, in one FORGET_SCRIPT call."""
        args: list[str] = []
        for client_id, who in forgets:
            args += (client_id, who)
        keys = self.keys
        d = self.redis.execute(
            "EVAL",
            FORGET_SCRIPT,
            1,
            keys.mqtt_sessions,
            keys.mqtt_session(""),
            keys.mqtt_session_queue(""),
            *args,
        )
        self.stats["writes"] += 1
        self._writing.add(d)
        d.addCallback(self._forgotten, forgets)
        who = forgets[0][0] if len(forgets) == 1 else f"{len(forgets)} clients"
        d.addErrback(self._failed, who, "forget")
        d.addBoth(self._written, d)

    def _forgotten(self, results: list[int], forgets: list[tuple[str, str]]) -> None:
        """A clean start was accepted here, and Redis says the client id's persisted session
        is another identity's (the node had no copy to refuse it by): that connection ends."""
        for result, (client_id, who) in zip(results, forgets):
            if result == 0:
                self.broker.client_id_taken(client_id, who or None)

    def _written(self, result: Any, d: Deferred[Any]) -> Any:
        self._writing.discard(d)
        return result

    def _failed(self, failure: Any, client_id: str, mode: str) -> None:
        log.warn(
            "persisting session {client} ({mode}) failed: {error}",
            client=client_id,
            mode=mode,
            error=failure.getErrorMessage(),
        )

    def flush(self) -> None:
        if self._flush_call is not None:
            if self._flush_call.active():
                self._flush_call.cancel()
            self._flush_call = None
        ops, self._ops = self._ops, []
        forgets: list[tuple[str, str]] = []
        for client_id, mode, args in ops:
            if mode == "forget":
                forgets.append((client_id, args[0]))
                continue
            if forgets:
                self._forget(forgets)  # in order: before this client id's next write
                forgets = []
            self._write(client_id, mode, *args)
        if forgets:
            self._forget(forgets)
        subs, self._subs = self._subs, {}
        for client_id, session in subs.items():
            self._write(client_id, "subs", session.owner or "", encode_subscriptions(session))
        pushes, self._pushes = self._pushes, {}
        for client_id, (session, records) in pushes.items():
            # Redis keeps what the session holds: its queue may have dropped its oldest
            # messages for the count or the bytes budget.
            keep = max(1, len(session.inflight) + len(session.pending or ()))
            self._write(client_id, "push", session.owner or "", keep, *records)
        snapshots, self._snapshots = self._snapshots, {}
        for client_id, session in snapshots.items():
            self._snapshot(client_id, session)

    def _snapshot(self, client_id: str, session: Session) -> None:
        records = [
            encode_outgoing(o, packet_id, self._expires_ms(o.message))
            for packet_id, o in session.inflight.items()
        ]
        records += [
            encode_outgoing(o, 0, self._expires_ms(o.message)) for o in session.pending or ()
        ]
        ttl = 0 if session.connection is not None else session.expiry_interval * 1000
        self._write(
            client_id,
            "snap",
            session.owner or "",
            self._meta(session),
            encode_subscriptions(session),
            ttl,
            *records,
        )

    def drain(self) -> Deferred[Any]:
        """Write what is pending and wait for every write in progress (before stopping)."""
        self.flush()
        return DeferredList(list(self._writing))

    # -- loading ----------------------------------------------------------------------------

    def restore(self) -> Deferred[int]:
        """Take over the persistent sessions of nodes that are gone (or of this node id before
        a restart); fires with how many were restored."""
        d = self.redis.execute("HGETALL", self.keys.mqtt_sessions)

        def claim_all(reply: list[bytes]) -> Deferred[int]:
            client_ids = [
                cid.decode()
                for cid, owner in zip(reply[::2], reply[1::2])
                if cid.decode() not in self.broker.sessions
            ]
            claims = [self._claim(cid, "restore") for cid in client_ids]
            done = DeferredList(claims, consumeErrors=True)
            return done.addCallback(
                lambda results: sum(ok and found is Loaded.FOUND for ok, found in results)
            )

        def counted(count: int) -> int:
            self.stats["restored"] += count
            if count:
                log.info("restored {count} persistent MQTT sessions", count=count)
            return count

        return d.addCallback(claim_all).addCallback(counted)

    def load(self, client_id: str, owner: str | None) -> Deferred[Loaded]:
        """A client of identity ``owner`` connects with clean start 0 and this node has no
        session for it: take the one Redis holds, if any (from a node that is gone or another
        node), unless it belongs to another identity (TAKEN: left where it is)."""
        if client_id in self.broker.sessions:
            return succeed(Loaded.FOUND)
        d = self._claim(client_id, "connect", owner or "")
        d.addCallback(self._count_load)
        return d

    def _count_load(self, found: Loaded) -> Loaded:
        if found is Loaded.FOUND:
            self.stats["loaded"] += 1
        return found

    def _claim(self, client_id: str, mode: str, who: str = "") -> Deferred[Loaded]:
        keys = self.keys
        d = self.redis.execute(
            "EVAL",
            CLAIM_SCRIPT,
            4,
            keys.mqtt_session(client_id),
            keys.mqtt_session_queue(client_id),
            keys.mqtt_sessions,
            keys.nodes,
            self.node,
            client_id,
            mode,
            int(self.wall() * 1000),
            self.silence_ms,
            who,
        )
        return d.addCallback(self._restored, client_id)

    def _restored(self, reply: Any, client_id: str) -> Loaded:
        if not reply:
            return Loaded.ABSENT
        if reply == b"taken":
            return Loaded.TAKEN
        broker = self.broker
        if client_id in broker.sessions:
            return Loaded.FOUND  # a connection made it meanwhile
        raw_meta, raw_subs, records, raw_who = reply
        who = raw_who.decode()
        try:
            meta = json.loads(raw_meta) if raw_meta else {}
            subs = json.loads(raw_subs) if raw_subs else []
        except ValueError:
            log.warn("unreadable persisted session {client}; dropped", client=client_id)
            self._write(client_id, "del", who)
            return Loaded.ABSENT
        now_wall = self.wall()
        clock_now = broker.clock.seconds()
        expiry = int(meta.get("exp", 0))
        off_ms = meta.get("off")
        remaining = expiry - (now_wall - off_ms / 1000 if off_ms else 0)
        self.owned.add(client_id)
        if remaining <= 0:
            self.owned.discard(client_id)
            self._write(client_id, "del", who)
            return Loaded.ABSENT
        session = Session(client_id, who or None)
        session.expiry_interval = expiry
        session.expires_at = clock_now + remaining
        session.next_packet_id = int(meta.get("next", 1)) or 1
        if meta.get("q2"):
            session.qos2_received = {int(i) for i in meta["q2"]}
        self._loading = True
        try:
            broker.add_session(session)
            for topic_filter, qos, no_local, rap, handling, identifier in subs:
                options = Subscription(topic_filter, qos, bool(no_local), bool(rap), handling)
                broker.subscribe(session, options, identifier)
            for raw in records:
                outgoing, packet_id, expires_ms = decode_outgoing(raw)
                if expires_ms:
                    left = expires_ms / 1000 - now_wall
                    if left <= 0:
                        continue
                    outgoing.message.expires_at = clock_now + left
                if packet_id and packet_id not in session.inflight:
                    session.hold(packet_id, outgoing)
                else:
                    session.push(outgoing)
            budget = broker.config.max_queued_bytes
            while budget and session.pending and session.queued_bytes > budget:
                session.pop()
        finally:
            self._loading = False
        return Loaded.FOUND
