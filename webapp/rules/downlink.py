"""What rule actions send towards devices and the platform's own broker.

- Commands go through the devices app (`webapp.devices.actions.send_command`, source `rule`):
  validated against the thing model, recorded, sent now or when the device comes online.
- Publishing to a topic of our own broker: an entry without `dev` on the downlink stream of
  one live edge node (`tl:down:{node}`, docs/bus.md), chosen by the topic so that a topic's
  messages keep their order; that node publishes it as if a client had, and cross-node
  routing (edge.bus.cluster) takes it to the subscribers on other nodes, so every subscriber
  gets it once. (Writing it to every node delivered it once per node to remote subscribers.)
- Desired shadow values go through the devices app too (`set_desired`, merged, validated
  against the thing model; the device gets the delta after commit when it is online).
"""

from __future__ import annotations

import json
import zlib
from typing import Any

from edge.clock import now_ms
from webapp.core.redis import get_redis, keys

NODE_STALE_MS = 30_000
DOWNLINK_MAXLEN = 100_000


def live_nodes() -> list[str]:
    now = now_ms()
    nodes = []
    for node, raw in get_redis().hgetall(keys().nodes).items():
        try:
            beat = json.loads(raw)
        except ValueError:
            continue
        if now - int(beat.get("ts", 0)) < NODE_STALE_MS:
            nodes.append(node.decode())
    return sorted(nodes)


def publish_topic(topic: str, payload: bytes, *, qos: int = 0, retain: bool = False) -> int:
    """Publish on our broker through one live edge node; returns how many nodes were handed
    the message (1, or 0 when no edge node is up)."""
    if not topic or "#" in topic or "+" in topic:
        raise ValueError("a topic to publish on has no wildcard")
    nodes = live_nodes()
    if not nodes:
        return 0
    node = nodes[zlib.crc32(topic.encode()) % len(nodes)]
    fields = {"topic": topic, "payload": payload, "qos": str(qos)}
    if retain:
        fields["retain"] = "1"
    get_redis().xadd(keys().downlink(node), fields,
                     maxlen=DOWNLINK_MAXLEN, approximate=True)
    return 1


def send_command(device: str, service: str, command: str, params: dict[str, Any]) -> Any:
    from webapp.devices.actions import send_command as devices_send_command
    from webapp.devices.choices import CommandSource

    return devices_send_command(acting_user=None, device=device, service=service,
                                command=command, params=params, source=CommandSource.RULE)


def set_desired(device: str, service: str, values: dict[str, Any]) -> int:
    """Merge values into the device's desired shadow; returns the new version."""
    from webapp.core.errors import NotFound
    from webapp.devices.actions import set_desired as devices_set_desired
    from webapp.devices.models import Device

    found = Device.objects.select_related("product").filter(identifier=device).first()
    if found is None:
        raise NotFound(f"device {device!r} does not exist", code="unknown_device")
    document = devices_set_desired(device=found, desired={service: values},
                                   merge=True)
    return int(document["version"])
