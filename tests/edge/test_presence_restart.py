"""A worker killed with SIGKILL comes back under the same node id: its devices' routes
point at it and its heartbeat never lapsed, so it reports them offline itself at start."""

from __future__ import annotations

import os
from typing import Any

from twisted.internet.defer import Deferred

from edge.thinglinks import presence as presence_module
from edge.thinglinks.presence import OnlineStamp, Presence
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


def test_offline_events_are_dated_after_the_dead_process_last_online(tmp_path: Any) -> None:
    """Dated just after the previous process's last online event (kept in a memory-mapped
    file that a SIGKILL does not lose): a device that reconnected elsewhere after the death,
    its route write still on the way, keeps its later online event as the last word."""
    path = str(tmp_path / "stamp")
    redis = fake_redis()
    sink = Sink()
    dead = Presence(redis.clock, redis.client(), KEYS, sink, "node-3", OnlineStamp(path))
    dead.online("dev-1", "10.0.0.1:1")
    last_online = sink.events[-1]["ts"]
    redis.clock.advance(5)  # killed; dev-1 reconnects to node-4 (online at START + 5 s)
    again = Presence(redis.clock, redis.client(), KEYS, sink, "node-3", OnlineStamp(path))
    d = Deferred.fromCoroutine(again.forget_previous_process())
    for _ in range(50):
        redis.clock.advance(0)
    assert d.called
    offline = [e for e in sink.events if e["s"] == "offline"]
    assert [(e["dev"], e["ts"]) for e in offline] == [("dev-1", last_online + 1)]


def test_online_stamp_survives_the_process_and_tolerates_no_file(tmp_path: Any) -> None:
    path = str(tmp_path / "stamp")
    first = OnlineStamp(path)
    assert first.read() is None
    first.write(1_796_000_000_123)
    assert OnlineStamp(path).read() == 1_796_000_000_123
    nowhere = OnlineStamp(str(tmp_path / "missing-dir" / "stamp"))
    assert nowhere.read() is None
    nowhere.write(5)  # no error
    assert OnlineStamp.for_node("tl:", "a", str(tmp_path)).map is not None


def test_a_clean_stop_removes_the_online_stamp_and_a_run_directory_holds_them(
    tmp_path: Any, monkeypatch: Any
) -> None:
    """Stamps no longer pile up in /tmp: a node that stops cleanly removes its file (only a
    crash needs it), and EDGE_STAMP_DIR (a supervisor's run directory) says where they go."""
    monkeypatch.setenv("EDGE_STAMP_DIR", str(tmp_path))
    stamp = OnlineStamp.for_node("tl:", "node-7")
    assert stamp.path.startswith(str(tmp_path)) and os.path.exists(stamp.path)
    redis = fake_redis()
    presence = Presence(redis.clock, redis.client(), KEYS, Sink(), "node-7", stamp)
    presence.online("dev-1", "10.0.0.1:1")
    presence.close()
    assert not os.path.exists(stamp.path) and stamp.read() is None
    presence.close()  # twice: no error
    presence.online("dev-1", "10.0.0.1:1")  # after close: no file is made again
    assert os.listdir(tmp_path) == []
