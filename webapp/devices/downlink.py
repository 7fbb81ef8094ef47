"""Sending a message to a device (docs/bus.md "Routing and downlink").

The one way everything in webapp reaches a device: the edge node holding the device's
connection is found in ``tl:route``, and the message is appended to that node's stream
``tl:down:{node}``, which the edge publishes to the device's topic. A device without a route
is offline: the caller decides whether to keep the message for later (commands do).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from edge.clock import now_ms
from edge.codecs.thinglinks import TOPIC_PREFIX
from webapp.core.redis import get_redis, keys

log = logging.getLogger(__name__)

# The edge deletes delivered entries; the cap only matters for a node that died with a backlog.
DOWNLINK_MAXLEN = 100_000


def topic(identifier: str, suffix: str) -> str:
    return f"{TOPIC_PREFIX}{identifier}/{suffix}"


def envelope(body: Any, mid: int | None = None) -> bytes:
    """The ThingLinks envelope (docs/protocol.md): ``head`` with ``mid``, ``dataBody`` and a
    blank ``dataSign``."""
    message = {
        "head": {"mid": mid if mid is not None else now_ms() % 2_000_000_000 + 1,
                 "cipherFlag": 0, "timeStamp": now_ms()},
        "dataBody": body,
        "dataSign": "",
    }
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False,
                      default=str).encode()


def route(identifier: str) -> str | None:
    """The edge node holding the device's connection, or None when it is offline."""
    node = get_redis().hget(keys().route, identifier)
    return node.decode() if node else None


def routes(identifiers: list[str]) -> dict[str, str]:
    """The nodes of several devices at once (the online ones only)."""
    if not identifiers:
        return {}
    found = get_redis().hmget(keys().route, identifiers)
    return {i: n.decode() for i, n in zip(identifiers, found) if n}


def publish(node: str, topic_name: str, payload: bytes, *, device: str, qos: int = 1,
            mid: int | None = None, pipe: Any = None, conn: str | None = None) -> None:
    """Append one message to a node's downlink stream (to ``pipe`` when given). ``conn``
    names the one connection that may receive it (a registration answer)."""
    fields: dict[str, Any] = {"topic": topic_name, "payload": payload, "qos": str(qos),
                              "dev": device}
    if mid is not None:
        fields["mid"] = str(mid)
    if conn is not None:
        fields["conn"] = conn
    target = pipe if pipe is not None else get_redis()
    target.xadd(keys().downlink(node), fields, maxlen=DOWNLINK_MAXLEN, approximate=True)


def send(identifier: str, suffix: str, body: Any, *, mid: int | None = None, qos: int = 1,
         via: str | None = None, for_device: str | None = None) -> bool:
    """Send ``body`` (enveloped) on ``/v1/devices/{identifier}/{suffix}``.

    ``via`` names the device whose connection carries the message when it is not
    ``identifier`` itself; ``for_device`` is the device the message is about (for its log),
    e.g. a sub-device whose command travels on its gateway's topic. Returns False, sending
    nothing, when the device (or ``via``) is offline.
    """
    node = route(via or identifier)
    if node is None:
        return False
    publish(node, topic(identifier, suffix), envelope(body, mid), device=for_device or identifier,
            qos=qos, mid=mid)
    return True
