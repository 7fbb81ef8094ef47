"""What the cluster's channels carry (edge.bus.cluster): forwarded messages as binary records,
batched behind ``M``, and takeover requests (``K`` and JSON). The retained-message hash and
its broadcast use the same records. Every node must read what the others write: the layout
below is a wire format.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from edge.mqtt.message import Message
from edge.mqtt.properties import NO_PROPERTIES, PUBLISH, decode_properties, encode_properties
from edge.mqtt.wire import Reader

# kind, flags (qos | retain << 2 | expires << 3), lengths of topic, origin, share key,
# properties and payload, expiry (epoch milliseconds).
_HEAD = struct.Struct(">BBHHHIIQ")
KIND_PUBLISH, KIND_SHARED = 0, 1
BATCH, KICK = b"M", b"K"


def encode_record(
    message: Message,
    kind: int = KIND_PUBLISH,
    share: str = "",
    expires_ms: int = 0,
) -> bytes:
    topic = message.topic.encode()
    origin = (message.origin or "").encode()
    share_raw = share.encode()
    props = b"" if message.properties is NO_PROPERTIES else encode_properties(message.properties)
    flags = message.qos | (message.retain << 2) | ((expires_ms > 0) << 3)
    head = _HEAD.pack(
        kind,
        flags,
        len(topic),
        len(origin),
        len(share_raw),
        len(props),
        len(message.payload),
        expires_ms,
    )
    return b"".join((head, topic, origin, share_raw, props, message.payload))


def decode_records(data: bytes, offset: int = 0) -> Iterator[tuple[int, str, Message, int]]:
    """``(kind, share key, message, expires_ms)`` for each record; the message's
    ``expires_at`` is left None (the caller converts ``expires_ms`` to its clock)."""
    size = len(data)
    head_size = _HEAD.size
    while offset < size:
        if offset + head_size > size:
            raise ValueError("truncated record")
        kind, flags, n_topic, n_origin, n_share, n_props, n_payload, expires_ms = _HEAD.unpack_from(
            data, offset
        )
        pos = offset + head_size
        topic = data[pos : pos + n_topic].decode()
        pos += n_topic
        origin = data[pos : pos + n_origin].decode() or None
        pos += n_origin
        share = data[pos : pos + n_share].decode()
        pos += n_share
        props = (
            decode_properties(Reader(data, pos, pos + n_props), PUBLISH)
            if n_props
            else NO_PROPERTIES
        )
        pos += n_props
        payload = data[pos : pos + n_payload]
        offset = pos + n_payload
        if offset > size:
            raise ValueError("truncated record")
        message = Message(topic, payload, flags & 3, bool(flags & 4), props, None, origin)
        yield kind, share, message, expires_ms if flags & 8 else 0
