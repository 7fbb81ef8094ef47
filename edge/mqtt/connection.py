"""One client's MQTT connection as a state machine: packets in, packets out, no I/O.

The Twisted protocol (``edge.mqtt.protocol``) feeds received bytes to :meth:`data_received`
and gives the connection two callables, ``write`` and ``close``. Output is buffered and written
once per batch by :meth:`Broker.flush`.
"""

from __future__ import annotations

import math
import socket
from collections import deque
from dataclasses import replace
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from edge.deferreds import gather

from .broker import CLIENT_ID_NOT_IDENTIFIER, CLIENT_ID_TAKEN, Broker
from .codec import CONNACK_REASONS, Decoder, encode, encode_publish_fields
from .errors import (
    MqttError,
    NotStored,
    PacketTooLarge,
    ProtocolError,
    QuotaExceeded,
    Reason,
    UnsupportedProtocolVersion,
)
from .message import Message, Outgoing
from .packets import (
    MQTT_3_1_1,
    MQTT_5,
    Auth,
    ConnAck,
    Connect,
    Disconnect,
    Packet,
    PingReq,
    PingResp,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    SubAck,
    Subscribe,
    UnsubAck,
    Unsubscribe,
)
from .policy import AUTH_FAILURES, OPEN_ACL, Acl, AuthResult
from .properties import NO_PROPERTIES, Properties
from .session import Loaded, Session
from .topics import split_shared, valid_filter

AWAIT_CONNECT, AUTHENTICATING, CONNECTED, CLOSED = range(4)

# A client's address: "host:port", or what its transport keeps: the (host, port, …) tuple, or
# an IPv4 address and port packed in 6 bytes (edge.transports.lean.compact_address).
Peer = str | bytes | tuple[Any, ...]


class Wire(Protocol):
    """What a connection writes to and closes: a transport (``ITransport``'s two methods)."""

    def write(self, data: bytes) -> None: ...

    def loseConnection(self) -> None: ...


# ``last_seen`` of a connection from which nothing has been read yet.
NOT_READ = -1.0

# MQTT 5 CONNACK reason → MQTT 3.1.1 return code.
V311_CONNACK = {
    Reason.UNSUPPORTED_PROTOCOL_VERSION: 0x01,
    Reason.CLIENT_IDENTIFIER_NOT_VALID: 0x02,
    Reason.SERVER_UNAVAILABLE: 0x03,
    Reason.SERVER_BUSY: 0x03,
    Reason.BAD_USER_NAME_OR_PASSWORD: 0x04,
    Reason.NOT_AUTHORIZED: 0x05,
    Reason.BANNED: 0x05,
    Reason.BAD_AUTHENTICATION_METHOD: 0x05,
}
REASON_TEXT: dict[int, str] = {
    Reason.NOT_AUTHORIZED: "not authorized for this topic",
    Reason.PAYLOAD_FORMAT_INVALID: "payload rejected; see datasResponse",
}
# Why a message or a subscription was refused by a budget, for its reason string.
BUDGET_TEXT = {
    "topic_levels": "topic name has more levels than the server allows",
    "topic_length": "topic name is longer than the server allows",
    "filter_levels": "topic filter has more levels than the server allows",
    "filter_length": "topic filter is longer than the server allows",
    "subscriptions": "too many subscriptions in this session",
    "publish_rate": "publish rate budget exceeded",
    "publish_bytes": "publish byte budget exceeded",
    "identity_retained_bytes": "retained message budget exceeded",
}


def _is_utf8(payload: bytes) -> bool:
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _forwarded(props: Properties) -> Properties:
    """The PUBLISH properties a receiver gets (3.3.2.3): alias and subscription ids removed."""
    if props is NO_PROPERTIES or (props.topic_alias is None and not props.subscription_identifiers):
        return props
    return props.with_(topic_alias=None, subscription_identifiers=())


def _keeps_connect(connect: Connect) -> bool:
    """Whether a connection still needs its CONNECT after CONNACK: for a reason-string
    refusal (MQTT 5 Request Problem Information 0) or a delayed will (its delay)."""
    if connect.properties.request_problem_information == 0:
        return True
    will = connect.will
    return will is not None and bool(will.properties.will_delay_interval)


class MqttConnection:
    """The server side of one MQTT network connection."""

    __slots__ = (
        "_acks",
        "_backlog",
        "_blocked",
        "_inbound",
        "_out",
        "_peer",
        "_transport",
        "acl",
        "address",
        "alias_out_max",
        "aliases_in",
        "aliases_out",
        "broker",
        "client_id",
        "congested",
        "connect",
        "decoder",
        "identity",
        "keep_alive",
        "last_seen",
        "max_outgoing_size",
        "opened_at",
        "owner",
        "send_quota",
        "session",
        "state",
        "strikes",
        "version",
        "will",
    )

    def __init__(self, broker: Broker, peer: Peer, transport: Wire) -> None:
        self.broker = broker
        # "host:port", or the address tuple the transport holds anyway (see ``peer``).
        self._peer = peer
        # Written to and closed through ``write`` and ``loseConnection`` (no bound methods
        # kept: 64 bytes each).
        self._transport = transport
        config = broker.config
        self.decoder = Decoder(
            max_packet_size=config.max_packet_size,
            max_connect_size=config.max_connect_size,
            property_limits=broker.property_limits(),
        )
        self.version = MQTT_3_1_1
        self.state = AWAIT_CONNECT
        self.session: Session | None = None
        self.connect: Connect | None = None
        self.client_id = ""
        # Set while the transport's send buffer is full (see send_message).
        self.congested = False
        self.identity: str | None = None
        # Who the client's session and budgets belong to (AuthResult.owner), once accepted.
        self.owner: str | None = None
        self.acl: Acl = OPEN_ACL
        self.keep_alive = 0
        self.opened_at = broker.clock.seconds()
        # Before CONNACK: when the first byte was read (NOT_READ until then), from which the
        # CONNECT timeout counts; afterwards: when the client was last heard from.
        self.last_seen = NOT_READ
        self.send_quota = 65535
        self.max_outgoing_size: int | None = None
        # Topic aliases (MQTT 5), made on first use: most clients never use them.
        self.aliases_in: dict[int, str] | None = None
        self.aliases_out: dict[str, int] | None = None
        self.alias_out_max = 0
        self.will: Message | None = None
        # Output of this reactor turn (see _queue and flush); None when nothing waits.
        self._out: list[bytes] | None = None
        self._backlog: deque[Packet] | None = None
        self._blocked = False
        self._acks: deque[list[Any]] | None = None
        # QoS 1/2 PUBLISH packets received on this connection and not yet answered with a
        # PUBACK, PUBCOMP or an error PUBREC: the count MQTT 5 Receive Maximum limits (3.3.4).
        self._inbound = 0
        # PUBLISH packets refused by the publish budget since the last one accepted.
        self.strikes = 0
        # The source address this connection counts against (M1), None when not counted.
        self.address = broker.counted_host(peer)
        if self.address is not None and not broker.open_from(self.address):
            # Over the connections from this address: closed before reading anything.
            self.address = None
            self.state = CLOSED
            transport.loseConnection()
            return
        broker.connections.add(self)

    def __repr__(self) -> str:
        return f"<MqttConnection {self.client_id or '?'} {self.peer}>"

    @property
    def peer(self) -> str:
        """The client's address as ``host:port`` (made when asked: kept as the transport's
        address tuple, a string per connection costs 65 bytes)."""
        peer = self._peer
        if type(peer) is str:
            return peer
        if type(peer) is bytes:
            host = socket.inet_ntop(socket.AF_INET, peer[:4])
            return f"{host}:{int.from_bytes(peer[4:6], 'big')}"
        return f"{peer[0]}:{peer[1]}"

    @property
    def v5(self) -> bool:
        return self.version == MQTT_5

    @property
    def _problem_info(self) -> bool:
        """Whether the client accepts reason strings beyond CONNACK/DISCONNECT (3.1.2.11.7)."""
        connect = self.connect
        return connect is None or connect.properties.request_problem_information != 0

    def _reason_props(self, reason: int, text: str | None = None) -> Properties:
        if reason < 0x80 or not self.v5 or not self._problem_info:
            return NO_PROPERTIES
        text = text or REASON_TEXT.get(reason) or Reason(reason).name.lower().replace("_", " ")
        return Properties(reason_string=text)

    # -- input --------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.state == CLOSED:
            return
        broker = self.broker
        if self.state == CONNECTED or self.last_seen == NOT_READ:
            self.last_seen = broker.clock.seconds()
        broker.stats["bytes_in"] += len(data)
        # Every packet the read completed, decoded in one pass (Decoder.decode_all).
        packets, error = self.decoder.decode_all(data)
        try:
            for packet in packets:
                if self._blocked:
                    if self._backlog is None:
                        self._backlog = deque()
                    self._backlog.append(packet)
                elif type(packet) is Publish and self.state == CONNECTED:
                    # The hot path: straight to the PUBLISH handler (what _run does).
                    waiting = self._on_publish(packet)
                    if waiting is not None and not waiting.called:
                        self._wait(waiting)
                else:
                    self._run(packet)
                if self.state == CLOSED:
                    return
        except MqttError as exc:
            self.protocol_violation(exc)
            return
        if error is not None:
            self.protocol_violation(error)

    def _run(self, packet: Packet) -> None:
        try:
            waiting = self._handle(packet)
        except MqttError as exc:
            self.protocol_violation(exc)
            return
        if waiting is not None and not waiting.called:
            self._wait(waiting)

    def _wait(self, waiting: Deferred[Any]) -> None:
        """Later packets wait (in the backlog) until ``waiting`` fires."""
        self._blocked = True
        waiting.addErrback(self._failed)
        waiting.addBoth(self._unblock)

    def _unblock(self, _: object) -> None:
        self._blocked = False
        backlog = self._backlog
        while backlog and not self._blocked and self.state != CLOSED:
            self._run(backlog.popleft())
        self.broker.flush()

    def _failed(self, failure: Failure) -> None:
        if failure.check(MqttError):
            self.protocol_violation(failure.value)
        elif failure.check(NotStored):
            # An expected outage, not a bug: a line, not a traceback per connection.
            self.broker.log.warn("{connection}: message not stored ({error}); closing so "
                                 "the client sends it again", connection=self,
                                 error=failure.getErrorMessage())
            self.close(Reason.SERVER_BUSY, "not_stored", "message not stored, send it again")
        else:
            self.broker.log_failure(failure, self)
            self.close(Reason.UNSPECIFIED_ERROR, "error")

    def _handle(self, packet: Packet) -> Deferred[Any] | None:
        if self.state == AWAIT_CONNECT:
            assert isinstance(packet, Connect)
            return self._on_connect(packet)
        kind = type(packet)
        if kind is Publish:
            return self._on_publish(packet)  # type: ignore[arg-type]
        if kind is PubAck:
            self._on_puback(packet)  # type: ignore[arg-type]
        elif kind is PubRec:
            self._on_pubrec(packet)  # type: ignore[arg-type]
        elif kind is PubRel:
            self._on_pubrel(packet)  # type: ignore[arg-type]
        elif kind is PubComp:
            self._on_pubcomp(packet)  # type: ignore[arg-type]
        elif kind is Subscribe:
            return self._on_subscribe(packet)  # type: ignore[arg-type]
        elif kind is Unsubscribe:
            self._on_unsubscribe(packet)  # type: ignore[arg-type]
        elif kind is PingReq:
            self.send(PingResp())
        elif kind is Disconnect:
            self._on_disconnect(packet)  # type: ignore[arg-type]
        elif kind is Auth:
            raise ProtocolError("AUTH without an authentication method")
        else:
            raise ProtocolError(f"{kind.__name__} may not be sent by a client")
        return None

    # -- CONNECT ------------------------------------------------------------------------------

    def _on_connect(self, connect: Connect) -> Deferred[Any] | None:
        self.connect = connect
        self.version = MQTT_5 if connect.protocol_level == MQTT_5 else MQTT_3_1_1
        self.state = AUTHENTICATING
        props = connect.properties
        if self.v5 and props.authentication_method is not None:
            self.refuse(
                Reason.BAD_AUTHENTICATION_METHOD, "enhanced authentication is not supported"
            )
            return None
        self.client_id = connect.client_id
        if not self.client_id:
            if not self.v5 and not connect.clean_start:
                self.refuse(
                    Reason.CLIENT_IDENTIFIER_NOT_VALID, "empty client id with a persistent session"
                )
                return None
            self.client_id = self.broker.new_client_id()
        self.keep_alive = connect.keep_alive
        if self.v5:
            self.send_quota = props.receive_maximum or 65535
            self.max_outgoing_size = props.maximum_packet_size
            self.alias_out_max = props.topic_alias_maximum or 0
        result = self.broker.hooks.authenticate(self)
        if isinstance(result, Deferred):
            return result.addCallback(self._authenticated)
        return self._authenticated(result)

    def _authenticated(self, result: AuthResult) -> Deferred[Any] | None:
        if self.state == CLOSED:
            return None
        if not result.ok:
            self.refuse(result.reason, result.detail or "refused")
            return None
        self.identity = result.identity
        self.owner = result.owner if result.owner is not None else result.identity
        if self.client_id == self.identity:
            # A device whose client id is its identifier: one string for both.
            self.client_id = self.identity
        self.acl = result.acl
        if self.broker.config.client_id_must_be_identity and self.identity is not None and \
                self.client_id != self.identity:
            self.broker.refused("client_id")
            self.refuse(Reason.CLIENT_IDENTIFIER_NOT_VALID, CLIENT_ID_NOT_IDENTIFIER)
            return None
        will = self.connect.will if self.connect is not None else None
        if will is None:
            return self._admit()
        allowed = self.acl.may_publish(will.topic)
        if isinstance(allowed, Deferred):
            return allowed.addCallback(self._will_checked)
        return self._will_checked(allowed)

    def _will_checked(self, allowed: bool) -> Deferred[Any] | None:
        if self.state == CLOSED:
            return None
        if not allowed:
            self.refuse(Reason.NOT_AUTHORIZED, "will topic not allowed")
            return None
        return self._admit()

    def _admit(self) -> Deferred[Any] | None:
        """Accept the CONNECT, after fetching a persisted session this process does not hold
        when the client wants its session back. A client id whose session belongs to another
        identity is refused, here or by the store (H1)."""
        store = self.broker.store
        connect = self.connect
        assert connect is not None
        if self._client_id_taken():
            return None
        if store is None or connect.clean_start or self.client_id in self.broker.sessions:
            return self._recheck()
        return store.load(self.client_id, self.owner).addCallback(self._loaded)

    def _loaded(self, found: Loaded) -> Deferred[Any] | None:
        if self.state == CLOSED:
            return None
        if found is Loaded.TAKEN:
            self._refuse_client_id()
            return None
        return self._recheck()

    def _client_id_taken(self) -> bool:
        """Refuse the CONNECT when this process holds the client id's session for another
        identity; the session and its connection are left alone."""
        session = self.broker.sessions.get(self.client_id)
        if session is None or session.owner == self.owner:
            return False
        self._refuse_client_id()
        return True

    def _refuse_client_id(self) -> None:
        self.broker.refused("client_id")
        self.refuse(Reason.CLIENT_IDENTIFIER_NOT_VALID, CLIENT_ID_TAKEN)

    def _recheck(self) -> Deferred[Any] | None:
        """A resumed session keeps only the subscriptions the client's ACL allows now."""
        connect = self.connect
        assert connect is not None
        session = self.broker.sessions.get(self.client_id)
        if connect.clean_start or session is None or not session.subscriptions:
            self._accept()
            return None
        filters = list(session.subscriptions)
        answers = gather([self.acl.may_subscribe(f) for f in filters])
        if isinstance(answers, Deferred):
            return answers.addCallback(self._rechecked, filters)
        self._rechecked(answers, filters)
        return None

    def _rechecked(self, answers: list[bool | int], filters: list[str]) -> None:
        if self.state == CLOSED:
            return
        session = self.broker.sessions.get(self.client_id)
        if session is not None and session.owner == self.owner:
            for topic_filter, allowed in zip(filters, answers):
                if allowed is not True:
                    self.broker.log.info(
                        "{client} may no longer subscribe to {filter}: removed",
                        client=self.client_id,
                        filter=topic_filter,
                    )
                    self.broker.unsubscribe(session, topic_filter)
        self._accept()

    def refuse(self, reason: int, detail: str) -> None:
        """Answer the CONNECT with a refusal and close."""
        if reason in AUTH_FAILURES:
            self.broker.stats["auth_failures"] += 1
        self.broker.log.info(
            "refused {client} from {peer}: {detail}",
            client=self.client_id,
            peer=self.peer,
            detail=detail,
        )
        code = reason if self.v5 else V311_CONNACK.get(Reason(reason), 0x03)
        props = (
            Properties(reason_string=detail) if self.v5 and self._problem_info else NO_PROPERTIES
        )
        self.send(ConnAck(code, False, props))
        self.close(None, "refused")

    def _session_expiry(self) -> int:
        """The expiry interval the session gets (MQTT 5 asks; 3.1.1 clean session 0: the
        maximum)."""
        connect = self.connect
        assert connect is not None
        config = self.broker.config
        if self.v5:
            return min(connect.properties.session_expiry_interval or 0, config.max_session_expiry)
        return 0 if connect.clean_start else config.max_session_expiry

    def _accept(self) -> None:
        assert self.connect is not None
        broker = self.broker
        connect = self.connect
        config = broker.config
        if self._client_id_taken():
            return
        owner = self.owner
        counted = False
        if owner is not None and self.identity is None:
            # Application keys and registrations: a bounded number of connections each (L8).
            old = broker.sessions.get(self.client_id)
            replaced = int(
                old is not None and old.connection is not None and old.connection.owner == owner
            )
            if not broker.open_as(owner, replaced):
                self.refuse(Reason.QUOTA_EXCEEDED, "too many connections for this client")
                return
            counted = True
        persistent = self._session_expiry() > 0
        if owner is not None and persistent and not broker.make_room(owner, self.client_id):
            if counted:
                broker.closed_as(owner)
            self.refuse(Reason.QUOTA_EXCEEDED, "too many persistent sessions for this client")
            return
        broker.take_over(self)
        session = broker.sessions.get(self.client_id)
        if session is not None and connect.clean_start:
            broker.discard_session(session)
            session = None
        present = session is not None
        if session is None:
            session = broker.sessions[self.client_id] = Session(self.client_id, owner)
        elif session.will_call is not None:
            # Reconnected within the will delay: the will is not sent (3.1.3.2.2).
            if session.will_call.active():
                session.will_call.cancel()
            session.will = session.will_call = None
            broker.will_identities.pop(self.client_id, None)
        session.connection = self
        session.expires_at = None
        self.session = session
        store = broker.store
        props = connect.properties
        connack = Properties()
        session.expiry_interval = self._session_expiry()
        broker.track(session)
        if self.v5:
            requested = props.session_expiry_interval or 0
            changes: dict[str, Any] = {
                "receive_maximum": config.receive_maximum,
                "topic_alias_maximum": config.topic_alias_maximum,
                "maximum_packet_size": config.max_packet_size,
            }
            if session.expiry_interval != requested:
                changes["session_expiry_interval"] = session.expiry_interval
            if not connect.client_id:
                changes["assigned_client_identifier"] = self.client_id
            if self.keep_alive > config.max_keep_alive or self.keep_alive == 0:
                self.keep_alive = config.max_keep_alive
                changes["server_keep_alive"] = self.keep_alive
            connack = connack.with_(**changes)
        if store is not None:
            if connect.clean_start:
                store.forget(self.client_id, owner)
            if session.expiry_interval:
                store.online(session)
        if connect.will is not None:
            will = connect.will
            expiry = will.properties.message_expiry_interval
            self.will = Message(
                will.topic,
                will.payload,
                will.qos,
                will.retain,
                will.properties.with_(will_delay_interval=None)
                if will.properties
                else NO_PROPERTIES,
                None if expiry is None else broker.clock.seconds() + expiry,
                self.client_id,
            )
        self.state = CONNECTED
        self.last_seen = broker.clock.seconds()
        self.send(ConnAck(0, present, connack))
        if self.identity is not None:
            broker.by_identity[self.identity] = self
        broker.log.info(
            "{client} connected from {peer} (MQTT {version}, identity {identity})",
            client=self.client_id,
            peer=self.peer,
            version="5.0" if self.v5 else "3.1.1",
            identity=self.identity or "anonymous",
        )
        broker.hooks.client_connected(self)
        for packet_id, outgoing in list(session.inflight.items()):
            if outgoing.released:
                self.send(PubRel(packet_id))
            elif not self.send_message(
                outgoing.message,
                outgoing.qos,
                outgoing.retain,
                outgoing.subscription_ids,
                packet_id,
                dup=True,
            ):
                del session.inflight[packet_id]
        self._drain_pending()
        if self.state == CONNECTED and not _keeps_connect(connect):
            # Nothing reads the CONNECT once it is answered (its client id is kept as
            # ``client_id``, its will as ``will``): ~200 bytes per idle connection.
            self.connect = None

    # -- PUBLISH from the client --------------------------------------------------------------

    def _on_publish(self, publish: Publish) -> Deferred[Any] | None:
        assert self.session is not None
        topic = publish.topic
        props = publish.properties
        broker = self.broker
        config = broker.config
        plain = props is NO_PROPERTIES  # the usual case: no property to look at
        if not plain and props.subscription_identifiers:
            raise ProtocolError("a client PUBLISH may not carry a subscription identifier")
        if not plain and props.topic_alias is not None and self.version == MQTT_5:
            alias = props.topic_alias
            if alias > config.topic_alias_maximum:
                raise ProtocolError(
                    f"topic alias {alias} above the maximum", Reason.TOPIC_ALIAS_INVALID
                )
            aliases = self.aliases_in
            if topic:
                if aliases is None:
                    aliases = self.aliases_in = {}
                aliases[alias] = topic
            else:
                known = aliases.get(alias) if aliases is not None else None
                if known is None:
                    raise ProtocolError(f"topic alias {alias} is not defined")
                topic = known
        over = None
        if self.owner is not None and broker.metered:
            over = broker.spend(self.owner, len(topic) + len(publish.payload), self.last_seen)
            if over is None:
                self.strikes = 0
            else:
                broker.refused(over)
                self.strikes += 1
                if not (publish.qos and self.v5) or self.strikes > max(config.publish_burst, 1):
                    # Only an MQTT 5 ack can say "over budget" and keep the connection; any
                    # other sender is disconnected (an unacknowledged QoS 1/2 message comes
                    # again after it reconnects).
                    self.close(Reason.MESSAGE_RATE_TOO_HIGH, "budget", BUDGET_TEXT[over])
                    return None
        if publish.qos:
            received = None
            if publish.qos == 2:
                received = self.session.qos2_received
                if received is None:
                    received = self.session.qos2_received = set()
                if publish.packet_id in received:
                    # A resent QoS 2 PUBLISH: acknowledged again, not delivered again (4.3.3).
                    self.send(PubRec(publish.packet_id))  # type: ignore[arg-type]
                    return None
            if self._inbound >= config.receive_maximum and self.v5:
                raise ProtocolError("receive maximum exceeded", Reason.RECEIVE_MAXIMUM_EXCEEDED)
            self._inbound += 1
            if received is not None:
                received.add(publish.packet_id)  # type: ignore[arg-type]
        if not plain and props.payload_format_indicator == 1 and not _is_utf8(publish.payload):
            # 3.3.2.3.2: a payload announced as UTF-8 that is not is refused (0x99).
            if not publish.qos:
                raise ProtocolError("payload is not UTF-8", Reason.PAYLOAD_FORMAT_INVALID)
            self._ack(publish, Reason.PAYLOAD_FORMAT_INVALID)
            return None
        if over is not None:
            self._ack(publish, Reason.QUOTA_EXCEEDED, BUDGET_TEXT[over])
            return None
        limit = config.max_topic_length
        if limit and len(topic) > limit:
            self._refuse_publish(publish, Reason.TOPIC_NAME_INVALID, "topic_length")
            return None
        limit = config.max_topic_levels
        if limit and topic.count("/") >= limit:
            self._refuse_publish(publish, Reason.TOPIC_NAME_INVALID, "topic_levels")
            return None
        if plain:
            message = Message(
                topic, publish.payload, publish.qos, publish.retain, props, None, self.client_id
            )
        else:
            expiry = props.message_expiry_interval
            message = Message(
                topic,
                publish.payload,
                publish.qos,
                publish.retain,
                _forwarded(props),
                None if expiry is None else broker.clock.seconds() + expiry,
                self.client_id,
            )
        raw = publish.raw
        if raw is not None:
            # Received as a subscriber of the same version gets it (Publish.raw).
            if self.version == MQTT_5:
                message.frame5 = raw
            else:
                message.frame4 = raw
        broker.stats["messages_in"] += 1
        allowed = self.acl.may_publish(topic)
        if allowed is True and not publish.retain:
            # What _publish_checked does for an allowed message that is not retained.
            code = broker.hooks.message_published(self, message)
            broker.publish(message, owner=self.owner)
            if publish.qos or not isinstance(code, int):
                self._ack(publish, code)
            return None
        if allowed is not True and allowed is not False:
            return allowed.addCallback(self._publish_checked, publish, message)
        self._publish_checked(allowed, publish, message)
        return None

    def _publish_checked(self, allowed: bool, publish: Publish, message: Message) -> None:
        if self.state == CLOSED:
            return
        if not allowed:
            self.broker.log.info(
                "{client} may not publish to {topic}: dropped",
                client=self.client_id,
                topic=message.topic,
            )
            self._ack(publish, Reason.NOT_AUTHORIZED if self.v5 else Reason.SUCCESS)
            return
        if message.retain and message.payload:
            over = self.broker.retain_refusal(message, self.owner)
            if over is not None:
                self._refuse_publish(publish, Reason.QUOTA_EXCEEDED, over)
                return
        broker = self.broker
        code = broker.hooks.message_published(self, message)
        broker.publish(message, owner=self.owner)
        if publish.qos or not isinstance(code, int):
            self._ack(publish, code)

    def _refuse_publish(self, publish: Publish, code: int, budget: str) -> None:
        """A message over a budget is dropped; an MQTT 5 ack says why (``code`` and a reason
        string), a 3.1.1 ack cannot (as for a topic outside the ACL)."""
        self.broker.refused(budget)
        self.broker.log.info(
            "{client} over budget ({budget}): message to {topic} dropped",
            client=self.client_id,
            budget=budget,
            topic=publish.topic[:100],
        )
        self._ack(publish, code if self.v5 else Reason.SUCCESS, BUDGET_TEXT[budget])

    def _ack(self, publish: Publish, code: int | Deferred[int], text: str | None = None) -> None:
        ready = isinstance(code, int)  # cheaper than checking for a Deferred (an ABC)
        if not publish.qos:
            if not ready:
                code.addErrback(self._failed)  # type: ignore[union-attr]
            return
        slot: list[Any] = [publish, None, text]
        if self._acks is None:
            self._acks = deque()
        self._acks.append(slot)
        if ready:
            self._ack_ready(code, slot)  # type: ignore[arg-type]
        else:
            code.addCallback(self._ack_ready, slot)  # type: ignore[union-attr]
            code.addErrback(self._failed)  # type: ignore[union-attr]

    def _ack_ready(self, code: int, slot: list[Any]) -> None:
        slot[1] = code
        # Acks go out in the order the PUBLISH packets came in (4.6).
        acks = self._acks
        assert acks is not None
        while acks and acks[0][1] is not None:
            publish, reason, text = acks.popleft()
            if self.state != CONNECTED:
                continue
            if publish.qos == 1:
                self._inbound -= 1
                self.send(PubAck(publish.packet_id, reason, self._reason_props(reason, text)))
            else:
                if reason >= 0x80:
                    # An error PUBREC ends the exchange (4.3.3).
                    self._inbound -= 1
                    if self.session is not None and self.session.qos2_received:
                        self.session.qos2_received.discard(publish.packet_id)
                self.send(PubRec(publish.packet_id, reason, self._reason_props(reason, text)))

    def _on_pubrel(self, packet: PubRel) -> None:
        assert self.session is not None
        received = self.session.qos2_received
        if received and packet.packet_id in received:
            received.discard(packet.packet_id)
            if self._inbound:  # not counted when it was received on an earlier connection
                self._inbound -= 1
            self.send(PubComp(packet.packet_id))
        else:
            self.send(PubComp(packet.packet_id, Reason.PACKET_IDENTIFIER_NOT_FOUND))

    # -- acknowledgements of messages we sent -------------------------------------------------

    def _on_puback(self, packet: PubAck) -> None:
        assert self.session is not None
        outgoing = self.session.inflight.get(packet.packet_id)
        if outgoing is not None and outgoing.qos == 1:
            del self.session.inflight[packet.packet_id]
            self._drain_pending()

    def _on_pubrec(self, packet: PubRec) -> None:
        assert self.session is not None
        outgoing = self.session.inflight.get(packet.packet_id)
        if outgoing is None or outgoing.qos != 2:
            self.send(PubRel(packet.packet_id, Reason.PACKET_IDENTIFIER_NOT_FOUND))
            return
        if packet.reason_code >= 0x80:
            del self.session.inflight[packet.packet_id]
            self._drain_pending()
            return
        outgoing.released = True
        self.send(PubRel(packet.packet_id))

    def _on_pubcomp(self, packet: PubComp) -> None:
        assert self.session is not None
        outgoing = self.session.inflight.get(packet.packet_id)
        if outgoing is not None and outgoing.released:
            del self.session.inflight[packet.packet_id]
            self._drain_pending()

    def _drain_pending(self) -> None:
        session = self.session
        if session is None:
            return
        while (
            session.pending and len(session.inflight) < self.send_quota and self.state == CONNECTED
        ):
            self.send_outgoing(session.pop(), session.allocate_packet_id())

    # -- SUBSCRIBE / UNSUBSCRIBE --------------------------------------------------------------

    def _on_subscribe(self, packet: Subscribe) -> Deferred[Any] | None:
        codes: list[int | None] = []
        checks: list[Any] = []
        note = None
        for sub in packet.subscriptions:
            code: int | None = None
            try:
                shared = split_shared(sub.topic_filter)
            except ValueError:
                shared = None
                code = Reason.TOPIC_FILTER_INVALID
            plain = sub.topic_filter if shared is None else shared[1]
            if code is None and not valid_filter(plain):
                code = Reason.TOPIC_FILTER_INVALID
            if code is None:
                budget = self._filter_budget(plain)
                if budget is not None:
                    # Refused before the ACL sees it: a deep filter is costly to hold (H9).
                    self.broker.refused(budget)
                    code = Reason.TOPIC_FILTER_INVALID
                    note = note or BUDGET_TEXT[budget]
            if shared is not None and sub.no_local and self.v5:
                raise ProtocolError("no local on a shared subscription")
            codes.append(code)
            checks.append(False if code is not None else self.acl.may_subscribe(sub.topic_filter))
        answers = gather(checks)
        if isinstance(answers, Deferred):
            return answers.addCallback(self._subscribe_checked, packet, codes, note)
        self._subscribe_checked(answers, packet, codes, note)
        return None

    def _filter_budget(self, topic_filter: str) -> str | None:
        """The budget a filter (without its $share prefix) is over, or None."""
        config = self.broker.config
        if config.max_topic_length and len(topic_filter) > config.max_topic_length:
            return "filter_length"
        if config.max_topic_levels and topic_filter.count("/") >= config.max_topic_levels:
            return "filter_levels"
        return None

    def _subscribe_checked(
        self,
        allowed: list[bool | int],
        packet: Subscribe,
        codes: list[int | None],
        note: str | None = None,
    ) -> None:
        session = self.session
        if self.state == CLOSED or session is None:
            return
        broker = self.broker
        ids = packet.properties.subscription_identifiers
        identifier = ids[0] if ids else None
        results = []
        retained: list[tuple[Message, int]] = []
        for sub, code, ok in zip(packet.subscriptions, codes, allowed):
            if code is not None:
                results.append(code if self.v5 else 0x80)
                continue
            if ok is not True:
                broker.log.info(
                    "{client} may not subscribe to {filter}",
                    client=self.client_id,
                    filter=sub.topic_filter,
                )
                refused = Reason.NOT_AUTHORIZED if ok is False else ok
                results.append(refused if self.v5 else 0x80)
                continue
            if (
                sub.topic_filter not in session.subscriptions
                and len(session.subscriptions) >= broker.config.max_subscriptions > 0
            ):
                broker.refused("subscriptions")
                note = note or BUDGET_TEXT["subscriptions"]
                results.append(Reason.QUOTA_EXCEEDED if self.v5 else 0x80)
                continue
            new = broker.subscribe(session, sub, identifier)
            results.append(sub.qos)
            if split_shared(sub.topic_filter) is None and (
                sub.retain_handling == 0 or (sub.retain_handling == 1 and new)
            ):
                retained.extend(
                    (message, sub.qos) for message in broker.retained_for(sub.topic_filter)
                )
        props = NO_PROPERTIES
        if note is not None and self.v5 and self._problem_info:
            props = Properties(reason_string=note)
        self.send(SubAck(packet.packet_id, tuple(results), props))
        sub_ids = (identifier,) if identifier is not None else ()
        for message, qos in retained:
            broker.deliver(session, message, min(qos, message.qos), True, sub_ids)

    def _on_unsubscribe(self, packet: Unsubscribe) -> None:
        assert self.session is not None
        codes = tuple(self._unsubscribe(f) for f in packet.topic_filters)
        self.send(UnsubAck(packet.packet_id, codes if self.v5 else ()))

    def _unsubscribe(self, topic_filter: str) -> int:
        assert self.session is not None
        if self.broker.unsubscribe(self.session, topic_filter):
            return Reason.SUCCESS
        try:
            shared = split_shared(topic_filter)
        except ValueError:
            return Reason.TOPIC_FILTER_INVALID
        if not valid_filter(topic_filter if shared is None else shared[1]):
            return Reason.TOPIC_FILTER_INVALID
        return Reason.NO_SUBSCRIPTION_EXISTED

    # -- DISCONNECT and closing ---------------------------------------------------------------

    def _on_disconnect(self, packet: Disconnect) -> None:
        assert self.session is not None
        if self.v5:
            expiry = packet.properties.session_expiry_interval
            if expiry is not None:
                if self.session.expiry_interval == 0 and expiry != 0:
                    raise ProtocolError("session expiry set on DISCONNECT after 0 on CONNECT")
                self.session.expiry_interval = min(expiry, self.broker.config.max_session_expiry)
        if packet.reason_code == Reason.SUCCESS:
            # Only a normal disconnection discards the will (3.1.2-10); 0x04 and the error
            # codes a client may send leave it to be published.
            self.will = None
        self.close(None, "disconnect")

    def check_timeouts(self, now: float) -> None:
        if self.state in (AWAIT_CONNECT, AUTHENTICATING):
            config = self.broker.config
            if self.last_seen == NOT_READ:
                # Accepted, nothing read yet: counted from the accept, with a longer bound.
                if now - self.opened_at > config.connect_silent_timeout:
                    self.broker.connect_timed_out("silent")
                    self.close(None, "timeout")
            elif now - self.last_seen > config.connect_timeout:
                self.broker.connect_timed_out("connect")
                self.close(None, "timeout")
        elif self.state == CONNECTED:
            if self.keep_alive:
                if now - self.last_seen > self.keep_alive * 1.5:
                    self.close(Reason.KEEP_ALIVE_TIMEOUT, "keepalive")
            elif self.broker.config.max_idle and now - self.last_seen > self.broker.config.max_idle:
                # A 3.1.1 client without keep-alive cannot be told one; silent this long, it
                # goes, so that a connection never lives forever unseen (L8).
                self.broker.refused("idle")
                self.close(Reason.KEEP_ALIVE_TIMEOUT, "idle")

    def protocol_violation(self, exc: MqttError) -> None:
        if isinstance(exc, QuotaExceeded):
            self.broker.refused(exc.budget)
        elif isinstance(exc, PacketTooLarge) and self.state == AWAIT_CONNECT:
            self.broker.refused("connect_size")
        self.broker.log.info(
            "closing {client} from {peer}: {error} (reason 0x{code:02x})",
            client=self.client_id or "?",
            peer=self.peer,
            error=str(exc),
            code=int(exc.reason),
        )
        if self.state == AWAIT_CONNECT:
            if isinstance(exc, UnsupportedProtocolVersion):
                # [MQTT-3.1.2-1/2]: another protocol name is not answered; an unsupported
                # level of MQTT gets CONNACK 0x01 (0x84 in the 5.0 format for level 5).
                if exc.mqtt:
                    self._queue(
                        b"\x20\x02\x00\x01" if exc.level != MQTT_5 else b"\x20\x03\x00\x84\x00"
                    )
            elif self.decoder.connect_level == MQTT_5:
                # A broken 5.0 CONNECT is answered with a CONNACK saying why (4.13.1).
                self.version = MQTT_5
                code = exc.reason if exc.reason in CONNACK_REASONS else Reason.PROTOCOL_ERROR
                self.send(ConnAck(code, False, Properties(reason_string=str(exc))))
            self.close(None, "error")
        elif self.state == AUTHENTICATING:
            if self.v5:
                self.send(ConnAck(exc.reason, False, Properties(reason_string=str(exc))))
            self.close(None, "error")
        else:
            self.close(exc.reason, "error", str(exc))

    def pause_reading(self, paused: bool) -> None:
        """Stop reading from the client, or read again: back-pressure from a queue further on
        (edge.bus.cluster holds a QoS 1/2 publisher while another node's backlog is full). A
        transport that cannot pause reads on."""
        if self.state == CLOSED and paused:
            return
        method = getattr(self._transport, "pauseProducing" if paused else "resumeProducing", None)
        if method is not None:
            method()

    def close(self, reason: int | None, why: str, text: str | None = None) -> None:
        """Close the connection; ``reason`` (and ``text``) go in a DISCONNECT to a 5.0 client."""
        if self.state == CLOSED:
            return
        if reason is not None and self.state == CONNECTED and self.v5:
            self.send(Disconnect(reason, Properties(reason_string=text) if text else NO_PROPERTIES))
        self._teardown(why)
        self.flush()
        self._transport.loseConnection()

    def connection_lost(self) -> None:
        """The transport is gone (closed by either side)."""
        self._teardown("error")

    def _teardown(self, why: str) -> None:
        if self.state == CLOSED:
            return
        was_connected = self.state == CONNECTED
        self.state = CLOSED
        broker = self.broker
        broker.connections.discard(self)
        self._backlog = None
        if self.address is not None:
            broker.closed_from(self.address)
        if not was_connected:
            return
        if self.identity is not None and broker.by_identity.get(self.identity) is self:
            del broker.by_identity[self.identity]
        elif self.identity is None and self.owner is not None:
            broker.closed_as(self.owner)
        session = self.session
        if session is not None and session.connection is self:
            session.connection = None
            will = self.will
            if will is not None:
                delay = (
                    self.connect.will.properties.will_delay_interval
                    if self.connect and self.connect.will
                    else None
                )
                if delay and session.expiry_interval:
                    session.will = will
                    if self.identity is not None:
                        broker.will_identities[session.client_id] = self.identity
                    session.will_call = broker.schedule(
                        min(delay, session.expiry_interval), broker.publish_will, session
                    )
                else:
                    broker.send_will(will, self.identity, self.owner)
            if session.expiry_interval == 0:
                broker.discard_session(session)
            else:
                session.expires_at = broker.clock.seconds() + session.expiry_interval
                if broker.store is not None:
                    broker.store.offline(session)
        broker.log.info("{client} disconnected ({why})", client=self.client_id, why=why)
        broker.hooks.client_disconnected(self, why)

    # -- output -------------------------------------------------------------------------------

    def send(self, packet: Packet) -> None:
        data = encode(packet, self.version)
        limit = self.max_outgoing_size
        if limit is not None and len(data) > limit and getattr(packet, "properties", None):
            # Too large for the client (3.1.2.11.4): reason strings and user properties may be
            # left out, and are.
            data = encode(replace(packet, properties=NO_PROPERTIES), self.version)  # type: ignore[arg-type]
        self._queue(data)

    def send_message(
        self,
        message: Message,
        qos: int,
        retain: bool,
        subscription_ids: tuple[int, ...],
        packet_id: int | None,
        dup: bool = False,
    ) -> bool:
        """Send one application message; False when it expired or is too large for the client."""
        if not qos and self.congested:
            # The client does not read as fast as messages come: QoS 0 ones are dropped rather
            # than buffered without bound (QoS 1/2 are bounded by the send quota and queue).
            self.broker.stats["dropped"] += 1
            return False
        if (
            not qos
            and not retain
            and not subscription_ids
            and not self.alias_out_max
            and message.expires_at is None
            and not message.qos
            and not message.retain
        ):
            # The same bytes for every such receiver of a version: the received ones or
            # those the first receiver encoded (Message.frame4/frame5).
            if self.version == MQTT_5:
                data = message.frame5
                if data is None:
                    data = message.frame5 = encode_publish_fields(
                        message.topic, message.payload, 0, False, False, None,
                        message.properties, True,
                    )  # fmt: skip
            else:
                data = message.frame4
                if data is None:
                    data = message.frame4 = encode_publish_fields(
                        message.topic, message.payload, 0, False, False, None,
                        NO_PROPERTIES, False,
                    )  # fmt: skip
            if self.max_outgoing_size is not None and len(data) > self.max_outgoing_size:
                self.broker.stats["dropped"] += 1
                return False
            self.broker.stats["messages_out"] += 1
            self._queue(data)
            return True
        props = message.properties
        if message.expires_at is not None:
            remaining = message.expires_at - self.broker.clock.seconds()
            if remaining <= 0:
                return False
            props = props.with_(message_expiry_interval=math.ceil(remaining))
        if subscription_ids:
            props = props.with_(subscription_identifiers=subscription_ids)
        topic = message.topic
        if self.alias_out_max:
            topic, props = self._alias(topic, props)
        data = encode_publish_fields(
            topic, message.payload, qos, retain, dup, packet_id, props, self.v5
        )
        if self.max_outgoing_size is not None and len(data) > self.max_outgoing_size:
            self.broker.stats["dropped"] += 1
            return False
        self.broker.stats["messages_out"] += 1
        self._queue(data)
        return True

    def _alias(self, topic: str, props: Properties) -> tuple[str, Properties]:
        """Use a topic alias towards a client that allows them (3.3.2.3.4): the first message on
        a topic names it and sets the alias, later ones send an empty topic and the alias."""
        aliases = self.aliases_out
        if aliases is None:
            aliases = self.aliases_out = {}
        alias = aliases.get(topic)
        if alias is not None:
            return "", props.with_(topic_alias=alias)
        if len(aliases) < self.alias_out_max:
            alias = aliases[topic] = len(aliases) + 1
            return topic, props.with_(topic_alias=alias)
        return topic, props

    def send_outgoing(self, outgoing: Outgoing, packet_id: int) -> None:
        assert self.session is not None
        self.session.hold(packet_id, outgoing)
        if not self.send_message(
            outgoing.message, outgoing.qos, outgoing.retain, outgoing.subscription_ids, packet_id
        ):
            del self.session.inflight[packet_id]

    def _queue(self, data: bytes) -> None:
        out = self._out
        if out is None:
            # The turn's first output: the broker flushes this connection once the turn ends.
            self._out = [data]
            self.broker.mark_dirty(self)
        else:
            out.append(data)

    def flush(self) -> None:
        out = self._out
        if out is None:
            return
        self._out = None
        data = b"".join(out)
        self.broker.stats["bytes_out"] += len(data)
        self._transport.write(data)
