"""``EDGE_WORKERS=2``: a supervisor and two workers sharing the ports with SO_REUSEPORT; paho
clients land on either worker, messages and takeovers cross between them, a killed worker is
restarted, SIGTERM stops everything cleanly."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest
import redis

from edge.crypto import encrypt_secret
from edge.mqtt.codec import encode
from edge.mqtt.packets import Connect
from edge.workers import aggregate, worker_count, worker_env
from tests.support.waiting import wait_for

from .edge_process import Client, Edge, running_edge

SECRET_KEY = "workers-test-secret-key"


def test_aggregate_sums_samples_of_workers():
    """The supervisor's /metrics sums equal series and keeps labels apart."""
    one = (
        "# HELP edge_connections Open MQTT connections\n# TYPE edge_connections gauge\n"
        "edge_connections 3\n"
        "# HELP edge_transport_connections x\n# TYPE edge_transport_connections gauge\n"
        'edge_transport_connections{transport="tcp"} 2\n'
        'edge_transport_connections{transport="ws"} 1\n'
    )
    two = one.replace("edge_connections 3", "edge_connections 4")
    text = aggregate([one, two], [("edge_workers", "gauge", "Workers", 2)])
    lines = text.splitlines()
    assert "edge_connections 7" in lines
    assert 'edge_transport_connections{transport="tcp"} 4' in lines
    assert 'edge_transport_connections{transport="ws"} 2' in lines
    assert "# TYPE edge_connections gauge" in lines and "edge_workers 2" in lines


def test_worker_environment_and_count():
    """Each worker gets its node id, an ephemeral metrics port and SO_REUSEPORT."""
    env = worker_env({"EDGE_WORKERS": "3", "EDGE_METRICS_PORT": "19100"}, 2, "edge-a")
    assert env["EDGE_NODE_ID"] == "edge-a-2" and env["EDGE_WORKERS"] == "1"
    assert env["EDGE_METRICS_PORT"] == "0" and env["EDGE_REUSE_PORT"] == "1"
    assert worker_count({}) == 1 and worker_count({"EDGE_WORKERS": "6"}) == 6
    with pytest.raises(ValueError):
        worker_count({"EDGE_WORKERS": "0"})


pytestmark = pytest.mark.e2e


def get(edge: Edge, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{edge.metrics_port}{path}") as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def healthy(edge: Edge) -> bool:
    try:
        return get(edge, "/healthz")[0] == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def workers(edge_redis_url: str) -> Iterator[Edge]:
    prefix = f"wk{uuid.uuid4().hex[:8]}:"
    r = redis.Redis.from_url(edge_redis_url)
    r.hset(
        f"{prefix}dev:wk-dev",
        mapping={
            "product": "p",
            "secret": encrypt_secret("s3cret", SECRET_KEY),
            "status": "activated",
        },
    )
    r.close()
    env = {"EDGE_WORKERS": "2", "EDGE_ALLOW_ANONYMOUS": "1", "DJANGO_SECRET_KEY": SECRET_KEY}
    with running_edge(edge_redis_url, prefix, env) as edge:
        wait_for(lambda: healthy(edge), 60, interval=0.1)
        yield edge


def nodes(edge: Edge) -> dict[str, dict]:
    return {k.decode(): json.loads(v) for k, v in edge.redis.hgetall(edge.key("nodes")).items()}


def placed(edge: Edge, client_id: str) -> str:
    """The worker node holding ``client_id`` (tl:mqtt:clients)."""
    found: list[bytes | None] = [None]

    def registered() -> bool:
        found[0] = edge.redis.hget(edge.key("mqtt:clients"), client_id)
        return found[0] is not None

    wait_for(registered, 5, interval=0.1)
    assert found[0] is not None
    return found[0].decode()


def on_each_worker(
    edge: Edge, clients: list[Client], tag: str, protocol: int = mqtt.MQTTv5
) -> dict[str, Client]:
    """Connect clients until one sits on each of the two workers (the kernel picks)."""
    by_node: dict[str, Client] = {}
    for i in range(40):
        client = Client(edge, f"{tag}-{i}", protocol)
        clients.append(client)
        assert client.connect(None, None) == 0
        by_node.setdefault(placed(edge, f"{tag}-{i}"), client)
        if len(by_node) == 2:
            return by_node
    raise AssertionError("every connection went to the same worker")


def test_workers_report_and_metrics_aggregate(workers: Edge, clients: list[Client]):
    """Both workers heart-beat as {node}-0 and {node}-1; the supervisor's /metrics sums them."""
    wait_for(lambda: {f"{workers.node}-0", f"{workers.node}-1"} <= set(nodes(workers)),
             60, interval=0.1)
    on_each_worker(workers, clients, f"m{uuid.uuid4().hex[:4]}")
    status, text = get(workers, "/metrics")
    assert status == 200
    lines = text.splitlines()
    assert "edge_workers 2" in lines
    assert 'edge_worker_up{worker="0"} 1' in lines and 'edge_worker_up{worker="1"} 1' in lines
    connections = next(
        int(line.split()[1]) for line in lines if line.startswith("edge_connections ")
    )
    assert connections == len(clients)


@pytest.mark.parametrize("protocol", [mqtt.MQTTv311, mqtt.MQTTv5])
def test_publish_on_one_worker_reaches_the_other(
    workers: Edge, clients: list[Client], protocol: int
):
    """Messages cross between workers in both directions, at QoS 0, 1 and 2 (3.1.1, 5.0)."""
    tag = uuid.uuid4().hex[:6]
    first, second = on_each_worker(workers, clients, tag, protocol).values()
    assert first.subscribe(f"{tag}/to-first", 2) == [2]
    assert second.subscribe(f"{tag}/to-second", 2) == [2]
    time.sleep(0.3)  # interest reaches the other worker
    for qos in (0, 1, 2):
        second.publish(f"{tag}/to-first", f"a{qos}".encode(), qos=qos)
        first.publish(f"{tag}/to-second", f"b{qos}".encode(), qos=qos)
        assert (first.next_message(5).payload, second.next_message(5).payload) == (
            f"a{qos}".encode(),
            f"b{qos}".encode(),
        )


def test_device_takeover_across_workers(workers: Edge, clients: list[Client]):
    """A device reconnecting to the other worker closes its connection on the first one."""
    old = Client(workers, "wk-dev-0", mqtt.MQTTv5)
    clients.append(old)
    assert old.connect("wk-dev", "s3cret") == 0
    first_node = placed(workers, "wk-dev-0")
    for i in range(1, 40):
        new = Client(workers, f"wk-dev-{i}", mqtt.MQTTv5)
        clients.append(new)
        assert new.connect("wk-dev", "s3cret") == 0
        if placed(workers, f"wk-dev-{i}") != first_node:
            break
        # Same worker: the local takeover closed the previous one; start again from this.
        old = new
    else:
        raise AssertionError("every connection went to the same worker")
    assert int(old.disconnects.get(timeout=5).value) == 0x8E
    wait_for(lambda: workers.redis.hget(workers.key("route"), "wk-dev") != first_node.encode(), 5,
             interval=0.1)


def test_killed_worker_is_restarted(workers: Edge):
    """A worker killed with SIGKILL comes back under the same node id, and the restart is
    counted; its stale subscriptions are gone."""
    victim = f"{workers.node}-1"
    pid = nodes(workers)[victim]["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: nodes(workers).get(victim, {}).get("pid") not in (None, pid), 60,
             interval=0.1)
    wait_for(lambda: healthy(workers), 60, interval=0.1)
    _, text = get(workers, "/metrics")
    assert 'edge_worker_restarts_total{worker="1"} 1' in text.splitlines()
    subs = workers.redis.hgetall(workers.key("mqtt:subs"))
    assert all(victim not in json.loads(nodes_json) for nodes_json in subs.values())


def test_devices_of_a_killed_worker_are_reported_offline(workers: Edge):
    """Its heartbeat never lapses (the worker is back under the same node id within a
    second), so the restarted worker reports the devices its predecessor held offline
    (reason node_lost) and drops their routes."""
    sock = socket.create_connection(("127.0.0.1", workers.mqtt_port), timeout=10)
    try:
        sock.sendall(encode(Connect("wk-raw", keep_alive=600, username="wk-dev",
                                    password=b"s3cret")))
        assert sock.recv(4) == b"\x20\x02\x00\x00"
        route: list[bytes | None] = [None]

        def routed() -> bool:
            route[0] = workers.redis.hget(workers.key("route"), "wk-dev")
            return route[0] is not None

        wait_for(routed, 10, interval=0.1)
        assert route[0] is not None
        node = route[0].decode()
        pid = nodes(workers)[node]["pid"]
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: workers.redis.hget(workers.key("route"), "wk-dev") is None, 60,
                 interval=0.1)
        lost = [e for e in workers.events() if e.get("t") == "status" and e["dev"] == "wk-dev"
                and e.get("reason") == "node_lost"]
        assert [(e["s"], e["node"]) for e in lost] == [("offline", node)]
        online = [e for e in workers.events() if e.get("t") == "status" and e["dev"] == "wk-dev"
                  and e["s"] == "online"]
        assert lost[0]["ts"] == max(e["ts"] for e in online if e["node"] == node) + 1
        wait_for(lambda: healthy(workers), 60, interval=0.1)
    finally:
        sock.close()


def test_sigterm_stops_supervisor_and_workers(edge_redis_url: str):
    """SIGTERM to the supervisor stops both workers and exits 0."""
    env = {"EDGE_WORKERS": "2", "EDGE_ALLOW_ANONYMOUS": "1"}
    with running_edge(edge_redis_url, f"wkstop{uuid.uuid4().hex[:6]}:", env) as edge:
        wait_for(lambda: healthy(edge), 60, interval=0.1)
        pids = [info["pid"] for info in nodes(edge).values()]
        assert len(pids) == 2
        edge.process.send_signal(signal.SIGTERM)
        assert edge.process.wait(30) == 0
        for pid in pids:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
        assert nodes(edge) == {}
