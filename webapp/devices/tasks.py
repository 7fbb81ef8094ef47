"""Periodic device housekeeping (Celery beat)."""

from __future__ import annotations

import json

from celery import shared_task

from edge.clock import now_ms
from webapp.core.redis import get_redis, keys
from webapp.devices import actions
from webapp.devices.choices import ConnectStatus, NodeType
from webapp.devices.models import Device

NODE_STALE_MS = 30_000


@shared_task(name="devices.sweep_offline")
def sweep_offline() -> int:
    """Mark offline the devices whose edge node stopped heart-beating (crashed or killed).

    A clean disconnect is reported by the edge itself; this catches the connections an edge
    took down with it. Returns how many devices were marked offline.
    """
    r = get_redis()
    k = keys()
    now = now_ms()
    alive: set[str] = set()
    for node, raw in r.hgetall(k.nodes).items():
        try:
            beat = json.loads(raw)
        except ValueError:
            continue
        if now - int(beat.get("ts", 0)) < NODE_STALE_MS:
            alive.add(node.decode())
    routes = {d.decode(): n.decode() for d, n in r.hgetall(k.route).items()}
    marked = 0
    # Sub-devices are online through their gateway, which this sweep covers.
    online = Device.objects.filter(connect_status=ConnectStatus.ONLINE).exclude(
        node_type=NodeType.SUB).values_list("identifier", flat=True)
    for identifier in online.iterator(chunk_size=2000):
        if routes.get(identifier) in alive:
            continue
        if actions.record_connect_status(identifier, ConnectStatus.OFFLINE, now):
            # The node cannot report this disconnect: the history says why it was inferred.
            actions.record_connections([("", {
                "dev": identifier, "s": ConnectStatus.OFFLINE, "ts": now,
                "node": routes.get(identifier, ""), "reason": "node_lost", "transport": ""})])
            marked += 1
    return marked


@shared_task(name="devices.expire_commands")
def expire_commands() -> int:
    """Time out commands without a response by their deadline, or never sent by their TTL;
    send again the pending ones whose device is online."""
    expired = actions.expire_commands()
    actions.retry_pending()
    return expired
