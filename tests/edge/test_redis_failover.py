"""Redis failover through Sentinel: the real edge (``python -m edge``) with
``REDIS_URL=redis+sentinel://…`` keeps every acknowledged point when the master is killed
(-9) under a QoS 1 load, and its devices go on publishing (docs/bus.md, "Redis failover").

The set is a master, one replica and three sentinels from the machine's ``redis-server``
(tests/edge/sentinel_set.py: down after 1 s, quorum 2). The figures printed (failover gap,
QoS 0 loss) are those docs/operations.md quotes ("Redis failover").
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from redis.sentinel import Sentinel

from edge.crypto import encrypt_secret
from tests.support.point_publisher import Point, PointPublisher, numbered
from tests.support.slow import starts_processes

from .edge_process import Edge, running_edge
from .sentinel_set import MASTER_NAME, SentinelSet, sentinel_set

pytestmark = pytest.mark.e2e

SECRET_KEY = "failover-test-secret-key"
MODEL = {"services": {"s": {"properties": {"seq": {"datatype": "int"}}}}}
DEVICES = 4
QOS1_RATE = 150  # messages per second per device
QOS0_RATE = 100
LOAD_BEFORE = 2.0  # seconds of load before the kill
LOAD_AFTER = 7.0  # seconds of load after it


@pytest.fixture
@starts_processes
def sentinels() -> Iterator[SentinelSet]:
    with sentinel_set() as group:
        yield group


def master_client(group: SentinelSet) -> redis.Redis:
    manager = Sentinel([("127.0.0.1", p) for p in group.sentinel_ports], socket_timeout=2)
    return manager.master_for(MASTER_NAME, socket_timeout=5)


def Publisher(
    edge: Edge, name: str, qos: int, rate: float, start_seq: int, password: str = "s3cret",  # noqa: S107
    point: Point = numbered,
) -> PointPublisher:
    """A device of this edge publishing numbered points (started with ``.thread.start()``)."""
    return PointPublisher(edge.mqtt_port, name, password, rate, qos=qos, start_seq=start_seq,
                          point=point)


def stored_seqs(client: redis.Redis, edge: Edge) -> dict[str, set[int]]:
    found: dict[str, set[int]] = {}
    for _id, fields in client.xrange(edge.key("uplink")):
        for event in json.loads(fields[b"b"]):
            if event.get("t") == "data" and "seq" in event.get("v", {}):
                found.setdefault(event["dev"], set()).add(event["v"]["seq"])
    return found


def test_acknowledged_points_survive_a_master_kill(sentinels: SentinelSet):
    """kill -9 of the master under QoS 1 load: every PUBACKed point is in the uplink stream of
    the new master, the devices are still (or again) connected and publish on."""

    def after(killed_at: float, promoted_after: float) -> float:
        time.sleep(LOAD_AFTER)
        return killed_at + promoted_after + 1

    figures = failover_under_load(sentinels, sentinels.kill_master, after, {})
    print("failover figures (kill -9):", figures)


def test_acknowledged_points_survive_a_manual_failover_in_strict_mode(sentinels: SentinelSet):
    """SENTINEL FAILOVER under QoS 1 load, the old master alive: with EDGE_REDIS_WAIT_STRICT
    nothing is acknowledged by the demoted master alone (nor by the new one before it has a
    replica again), so every PUBACKed point is on the new master; publishing resumes once the
    old master is its replica."""

    def after(started_at: float, promoted_after: float) -> float:
        old = sentinels.master_port
        if sentinels.master()[1] == old:  # (the set's master as the sentinels last said)
            old = sentinels.replica_port
        sentinels.wait_replica_of_master(old, timeout=30)
        resumed = time.monotonic()
        time.sleep(3)
        return resumed + 1

    # Refused messages pile up in the test's publishers and come again all at once on each
    # reconnection: no publish budget here (it would disconnect them for the burst).
    unlimited = {"EDGE_PUBLISH_RATE": "0", "EDGE_PUBLISH_BYTES_RATE": "0"}
    figures = failover_under_load(
        sentinels, sentinels.manual_failover, after, {"EDGE_REDIS_WAIT_STRICT": "1", **unlimited}
    )
    print("failover figures (SENTINEL FAILOVER, strict):", figures)


def failover_under_load(
    sentinels: SentinelSet,
    fail: Callable[[], tuple[float, float]],
    after: Callable[[float, float], float],
    env_extra: dict[str, str],
) -> dict[str, Any]:
    """Devices under load, ``fail()`` (returns when it happened and how long the promotion
    took), ``after(...)`` (the load goes on; returns when acknowledgements must have resumed);
    then every acknowledged point must be on the new master."""
    prefix = f"fo{uuid.uuid4().hex[:8]}:"
    setup = master_client(sentinels)
    setup.hset(
        f"{prefix}prod:p", mapping={"model": json.dumps(MODEL), "type": "common", "secret": ""}
    )
    names = [f"dev-{i}" for i in range(DEVICES)] + ["dev-q0"]
    for name in names:
        setup.hset(
            f"{prefix}dev:{name}",
            mapping={
                "product": "p",
                "secret": encrypt_secret("s3cret", SECRET_KEY),
                "status": "activated",
                "node_type": "direct",
                "gateway": "",
            },
        )
    setup.wait(1, 2000)  # the replica has the devices before the master dies
    env = {"DJANGO_SECRET_KEY": SECRET_KEY, "EDGE_REDIS_WAIT_TIMEOUT_MS": "500", **env_extra}
    with running_edge(sentinels.url, prefix, env, client=master_client(sentinels)) as edge:
        publishers = [Publisher(edge, n, 1, QOS1_RATE, 1) for n in names[:-1]]
        qos0 = Publisher(edge, "dev-q0", 0, QOS0_RATE, 1)
        everyone = [*publishers, qos0]
        for p in everyone:
            p.thread.start()
        try:
            time.sleep(LOAD_BEFORE)
            failed_at, promoted_after = fail()
            resumed_by = after(failed_at, promoted_after)
        finally:
            for p in everyone:
                p.stop()
        # Let the last acknowledgements come back.
        settle = time.monotonic() + 10
        while time.monotonic() < settle and any(
            len(p.acked) < len(p.sent) or not p.client.is_connected() for p in publishers
        ):
            time.sleep(0.1)

        new_master = master_client(sentinels)
        stored = stored_seqs(new_master, edge)
        log = edge.log()
        figures: dict[str, Any] = {"promoted_after_s": round(promoted_after, 2)}
        gaps = []
        for p in publishers:
            acked = p.acked_seqs()
            missing = acked - stored.get(p.name, set())
            assert not missing, f"{p.name}: {len(missing)} acknowledged points lost"
            # Publishing resumed: points sent after the failover were acknowledged.
            assert p.acked_seqs(after=resumed_by), (
                p.name, len(p.sent), len(p.acked), promoted_after,
                [round(at - failed_at, 2) for _m, at in p.acked[-5:]], p.disconnects,
            )
            after_fail = sorted(at for _mid, at in p.acked if at > failed_at)
            gaps.append(max(b - a for a, b in zip([failed_at, *after_fail], after_fail)))
            assert p.client.is_connected(), f"{p.name} is not connected"
            figures[p.name] = (len(p.sent), len(acked), p.disconnects)
        lost0 = set(qos0.sent) - stored.get("dev-q0", set())
        figures["qos0_sent"] = len(qos0.sent)
        figures["qos0_lost"] = len(lost0)
        figures["max_ack_gap_s"] = round(max(gaps), 2)
        assert "connected to redis+sentinel://" in log
        for p in everyone:
            p.close()
        new_master.close()
    setup.close()
    return figures
