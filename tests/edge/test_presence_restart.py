"""A worker killed with SIGKILL comes back under the same node id: its devices' routes
point at it and its heartbeat never lapsed, so it reports them offline itself at start."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred

from edge.thinglinks import presence as presence_module
from edge.thinglinks.presence import Presence
from tests.edge.bus_memory import KEYS, fake_redis


class Sink:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def emit(self, *events: dict[str, Any]) -> None:
        self.events.extend(events)


def test_restarted_node_reports_its_previous_devices_offline(monkeypatch: Any) -> None:
    monkeypatch.setattr(presence_module, "ROUTE_SCAN_COUNT", 7)  # several HSCAN pages
    redis = fake_redis()
    client = redis.client()
    routes = {f"dev-{i}": ("node-3" if i % 3 else "node-4") for i in range(60)}
    redis.sync.hset(KEYS.route, mapping=routes)
    sink = Sink()
    presence = Presence(redis.clock, client, KEYS, sink, "node-3")
    d = Deferred.fromCoroutine(presence.forget_previous_process())
    for _ in range(200):
        redis.clock.advance(0)
        if d.called:
            break
    results: list[int] = []
    d.addCallback(results.append)
    ours = sorted(dev for dev, node in routes.items() if node == "node-3")
    assert results == [len(ours)]
    assert sorted(e["dev"] for e in sink.events) == ours
    assert {(e["s"], e["reason"], e["node"]) for e in sink.events} == {
        ("offline", "node_lost", "node-3")
    }
    left = {k.decode(): v.decode() for k, v in redis.sync.hgetall(KEYS.route).items()}
    assert left == {dev: node for dev, node in routes.items() if node == "node-4"}
