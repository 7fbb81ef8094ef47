"""L9: with EDGE_ALLOW_ANONYMOUS=1 (development), an anonymous client may no longer publish on
devices' topics. The exploit: anonymous `datas` for any device were stored as its data (and
an anonymous `command` reached the device)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from edge.crypto import encrypt_secret
from tests.edge.edge_process import Edge, running_edge
from tests.security.access_edge import mqtt_clients_of
from tests.support.slow import starts_processes

SECRET_KEY = "anonymous-secret-key"
NOT_AUTHORIZED = 0x87


@pytest.fixture(scope="module")
@starts_processes
def edge(redis_url: str) -> Iterator[Edge]:
    prefix = f"anon{uuid.uuid4().hex[:8]}:"
    r = redis.Redis.from_url(redis_url)
    model = {"services": {"env": {"properties": {"temperature": {"datatype": "decimal"}}}}}
    r.hset(f"{prefix}prod:thermo", mapping={"model": json.dumps(model), "type": "common"})
    r.hset(f"{prefix}dev:d1", mapping={
        "product": "thermo", "status": "activated", "node_type": "direct", "gateway": "",
        "secret": encrypt_secret("secret-d1", SECRET_KEY)})
    r.close()
    env = {"DJANGO_SECRET_KEY": SECRET_KEY, "EDGE_ALLOW_ANONYMOUS": "1"}
    with running_edge(redis_url, prefix, env) as running:
        yield running


def test_anonymous_clients_cannot_publish_for_a_device(edge):
    """Anonymous `datas` and `command` on d1's topics are refused (0x87): nothing stored,
    nothing reaches d1. Anonymous clients still use topics of their own."""
    datas = {"devices": [{"deviceId": "d1", "services": [
        {"serviceCode": "env", "data": {"temperature": 99}}]}]}
    with mqtt_clients_of(edge) as make:
        d1, stranger, listener = make("d1"), make("stranger"), make("listener")
        assert d1.connect("d1", "secret-d1") == 0
        assert d1.subscribe("/v1/devices/d1/command") == [1]
        assert stranger.connect(None, None) == 0
        assert listener.connect(None, None) == 0
        stranger.publish("/v1/devices/d1/datas", datas)
        assert stranger.acks.get(timeout=5) == NOT_AUTHORIZED
        stranger.publish("/v1/devices/d1/command", {"cmd": "reboot"})
        assert stranger.acks.get(timeout=5) == NOT_AUTHORIZED
        assert d1.quiet() == []
        time.sleep(0.5)
        assert not [e for e in edge.events() if e["t"] == "data"]

        assert listener.subscribe("lab/#") == [1]
        stranger.publish("lab/x", b"hello")
        assert stranger.acks.get(timeout=5) == 0
        assert listener.next_message().payload == b"hello"
        d1.publish("/v1/devices/d1/datas", datas)  # the device itself still reports
        edge.wait_for_events(lambda e: e["t"] == "data" and e["dev"] == "d1")
