"""M2 and M8 of the security review, against ``python -m edge`` and the machine's Redis.

M2: failed passwords lock out the attacker, not the device: strangers failing a device's
password get 0x9F, while the device's correct secret or signed password still connects; the
counts are shared by every edge worker. M8: a signed password is accepted once.

Each attacker speaks from a loopback address of its own (127.0.0.x), so that the tests'
counts never mix; the device itself connects from 127.0.0.1.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest
import redis

from edge.auth import sign_password
from edge.crypto import encrypt_secret
from edge.mqtt.codec import Decoder, encode
from edge.mqtt.packets import MQTT_5, ConnAck, Connect
from edge.throttle import FAILURE_LIMIT, FailureThrottle
from tests.edge.conftest import clients  # noqa: F401  (fixture)
from tests.edge.edge_process import Client, Edge, running_edge

pytestmark = pytest.mark.e2e

SECRET_KEY = "throttle-test-secret-key"
RATE_EXCEEDED = 0x9F
BAD_PASSWORD = 0x86


def _put_device(r: redis.Redis, prefix: str, identifier: str, secret: str) -> None:
    r.hset(
        f"{prefix}dev:{identifier}",
        mapping={
            "product": "thermo",
            "secret": encrypt_secret(secret, SECRET_KEY),
            "status": "activated",
            "node_type": "direct",
            "gateway": "",
        },
    )


@pytest.fixture(scope="module")
def prefix() -> str:
    return f"thr{uuid.uuid4().hex[:8]}:"


@pytest.fixture(scope="module")
def two_edges(redis_url: str, prefix: str) -> Iterator[tuple[Edge, Edge]]:
    """Two edge processes sharing one Redis prefix, as EDGE_WORKERS or several nodes do."""
    r = redis.Redis.from_url(redis_url)
    r.hset(f"{prefix}prod:thermo", mapping={"model": "{}", "type": "common"})
    for identifier in ("victim", "shared", "signed"):
        _put_device(r, prefix, identifier, f"{identifier}-secret")
    r.close()
    env = {"DJANGO_SECRET_KEY": SECRET_KEY, "EDGE_TLS_CERT": "", "EDGE_WSS_PORT": "0"}
    with (
        running_edge(redis_url, prefix, env) as first,
        running_edge(redis_url, prefix, env) as second,
    ):
        yield first, second


def connack(edge: Edge, username: str, password: str, source: str) -> int:
    """An MQTT 5 CONNECT from ``source`` on a plain socket; the CONNACK reason code."""
    with socket.create_connection(
        ("127.0.0.1", edge.mqtt_port), timeout=5, source_address=(source, 0)
    ) as sock:
        packet = Connect(
            f"x-{uuid.uuid4().hex[:8]}", MQTT_5, username=username, password=password.encode()
        )
        sock.sendall(encode(packet, MQTT_5))
        decoder = Decoder(MQTT_5)
        while True:
            data = sock.recv(256)
            assert data, "connection closed without CONNACK"
            packets = list(decoder.feed(data))
            if packets:
                assert isinstance(packets[0], ConnAck)
                return packets[0].reason_code


def device(edge: Edge, made: list[Client], client_id: str) -> Client:
    client = Client(edge, client_id, mqtt.MQTTv5)
    made.append(client)
    return client


def test_strangers_failing_a_password_do_not_keep_the_device_out(
    two_edges: tuple[Edge, Edge], clients: list[Client]  # noqa: F811
):
    """20 wrong passwords for "victim" from one address: the first ten are refused as wrong
    (0x86), the rest 0x9F. The device's secret and a signed password still connect from the
    device's own address; a second stranger's wrong passwords for the device get 0x9F at once
    (its user name is over budget); the first stranger's address is refused even with the
    right secret (password guessing is bounded per address)."""
    edge = two_edges[0]
    codes = [connack(edge, "victim", f"guess-{i}", "127.0.0.31") for i in range(20)]
    assert codes[:FAILURE_LIMIT] == [BAD_PASSWORD] * FAILURE_LIMIT
    assert codes[FAILURE_LIMIT:] == [RATE_EXCEEDED] * (20 - FAILURE_LIMIT)

    assert device(edge, clients, "victim-1").connect("victim", "victim-secret") == 0
    signed = sign_password("victim", "victim-secret", int(time.time() * 1000))
    assert device(edge, clients, "victim-2").connect("victim", signed) == 0

    assert connack(edge, "victim", "another-guess", "127.0.0.32") == RATE_EXCEEDED
    assert connack(edge, "victim", "victim-secret", "127.0.0.31") == RATE_EXCEEDED


def test_failure_counts_are_shared_by_edge_workers(two_edges: tuple[Edge, Edge]):
    """Five failures on each of two edge processes block the address on both: the right
    secret from it is refused by either (each process alone saw only five)."""
    first, second = two_edges
    source = "127.0.0.33"
    for edge in (first, second):
        for i in range(FAILURE_LIMIT // 2):
            assert connack(edge, "shared", f"guess-{i}", source) == BAD_PASSWORD
    time.sleep(0.3)  # the announcement of the blocked address travels through pub/sub
    for edge in (first, second):
        assert connack(edge, "shared", "shared-secret", source) == RATE_EXCEEDED
    # The device itself, elsewhere, is not affected.
    assert connack(first, "shared", "shared-secret", "127.0.0.34") == 0


def test_a_signed_password_is_accepted_once(
    two_edges: tuple[Edge, Edge], clients: list[Client]  # noqa: F811
):
    """A captured signed password replayed is refused, on the same edge process and on
    another; a timestamp more than 30 s ahead of the edge's clock is refused."""
    first, second = two_edges
    now_ms = int(time.time() * 1000)
    password = sign_password("signed", "signed-secret", now_ms)
    original = device(first, clients, "signed-1")
    assert original.connect("signed", password) == 0
    original.close()
    assert device(first, clients, "signed-2").connect("signed", password) == BAD_PASSWORD
    assert device(second, clients, "signed-3").connect("signed", password) == BAD_PASSWORD
    ahead = sign_password("signed", "signed-secret", now_ms + 120_000)
    assert device(first, clients, "signed-4").connect("signed", ahead) == BAD_PASSWORD
    slightly_ahead = sign_password("signed", "signed-secret", now_ms + 10_000)
    assert device(second, clients, "signed-5").connect("signed", slightly_ahead) == 0


def test_local_counts_never_forget_everyone_at_once():
    """The in-process counts (used while Redis is unreachable) drop their oldest window when
    full instead of clearing every key, so a flood of new addresses does not unblock one."""

    class Clock:
        now = 0.0

        def seconds(self) -> float:
            return self.now

    throttle = FailureThrottle(Clock(), limit=1, window=60, max_keys=2)
    throttle.failed("flood-1")
    throttle.failed("attacker")
    throttle.failed("flood-2")
    assert throttle.blocked("attacker")
    assert not throttle.blocked("flood-1")
