"""MQTT reason codes and the errors the codec and the broker raise.

Every error carries the MQTT 5 reason code that the server sends back (in a CONNACK or a
DISCONNECT) before it closes the connection; for MQTT 3.1.1 the connection is just closed.
"""

from __future__ import annotations

from enum import IntEnum


class Reason(IntEnum):
    """MQTT 5.0 reason codes (section 2.4)."""

    SUCCESS = 0x00
    GRANTED_QOS_1 = 0x01
    GRANTED_QOS_2 = 0x02
    DISCONNECT_WITH_WILL = 0x04
    NO_MATCHING_SUBSCRIBERS = 0x10
    NO_SUBSCRIPTION_EXISTED = 0x11
    CONTINUE_AUTHENTICATION = 0x18
    RE_AUTHENTICATE = 0x19
    UNSPECIFIED_ERROR = 0x80
    MALFORMED_PACKET = 0x81
    PROTOCOL_ERROR = 0x82
    IMPLEMENTATION_SPECIFIC_ERROR = 0x83
    UNSUPPORTED_PROTOCOL_VERSION = 0x84
    CLIENT_IDENTIFIER_NOT_VALID = 0x85
    BAD_USER_NAME_OR_PASSWORD = 0x86
    NOT_AUTHORIZED = 0x87
    SERVER_UNAVAILABLE = 0x88
    SERVER_BUSY = 0x89
    BANNED = 0x8A
    SERVER_SHUTTING_DOWN = 0x8B
    BAD_AUTHENTICATION_METHOD = 0x8C
    KEEP_ALIVE_TIMEOUT = 0x8D
    SESSION_TAKEN_OVER = 0x8E
    TOPIC_FILTER_INVALID = 0x8F
    TOPIC_NAME_INVALID = 0x90
    PACKET_IDENTIFIER_IN_USE = 0x91
    PACKET_IDENTIFIER_NOT_FOUND = 0x92
    RECEIVE_MAXIMUM_EXCEEDED = 0x93
    TOPIC_ALIAS_INVALID = 0x94
    PACKET_TOO_LARGE = 0x95
    MESSAGE_RATE_TOO_HIGH = 0x96
    QUOTA_EXCEEDED = 0x97
    ADMINISTRATIVE_ACTION = 0x98
    PAYLOAD_FORMAT_INVALID = 0x99
    RETAIN_NOT_SUPPORTED = 0x9A
    QOS_NOT_SUPPORTED = 0x9B
    USE_ANOTHER_SERVER = 0x9C
    SERVER_MOVED = 0x9D
    SHARED_SUBSCRIPTIONS_NOT_SUPPORTED = 0x9E
    CONNECTION_RATE_EXCEEDED = 0x9F
    MAXIMUM_CONNECT_TIME = 0xA0
    SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED = 0xA1
    WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED = 0xA2


SUBACK_FAILURE_V311 = 0x80


class NotStored(Exception):
    """A message the broker's hooks could not store (the bus is unavailable, or behind
    Sentinel no replica confirmed it): it is not acknowledged, the connection closes with
    "server busy" and the client sends it again once it has reconnected."""


class MqttError(Exception):
    """Base of every error the codec raises; ``reason`` is the MQTT 5 reason code."""

    default_reason = Reason.UNSPECIFIED_ERROR

    def __init__(self, message: str, reason: int | None = None) -> None:
        super().__init__(message)
        self.reason = Reason(reason if reason is not None else self.default_reason)


class MalformedPacket(MqttError):
    """The bytes are not a packet the specification allows."""

    default_reason = Reason.MALFORMED_PACKET


class ProtocolError(MqttError):
    """A well-formed packet that breaks the protocol rules."""

    default_reason = Reason.PROTOCOL_ERROR


class PacketTooLarge(MqttError):
    default_reason = Reason.PACKET_TOO_LARGE


class QuotaExceeded(ProtocolError):
    """A packet goes beyond one of the server's budgets (``budget`` names it for the
    refusal counters), such as the size or number of its properties."""

    default_reason = Reason.QUOTA_EXCEEDED

    def __init__(self, message: str, budget: str) -> None:
        super().__init__(message)
        self.budget = budget


class UnsupportedProtocolVersion(ProtocolError):
    """The CONNECT names a protocol this server does not speak; ``level`` says which."""

    default_reason = Reason.UNSUPPORTED_PROTOCOL_VERSION

    def __init__(self, message: str, level: int, mqtt: bool = True) -> None:
        super().__init__(message)
        self.level = level
        # False when the protocol name is not MQTT's at all (nothing to answer in MQTT).
        self.mqtt = mqtt
