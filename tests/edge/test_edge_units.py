"""Edge plumbing without sockets: throttle, registry parsing and cache, the RESP protocol."""

from __future__ import annotations

import json

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from edge.bus.redis import RedisAddress, RedisError, RespProtocol, pack_command
from edge.bus.registry import AsyncCache, parse_device, parse_product
from edge.crypto import encrypt_secret
from edge.service import ConfigError, EdgeConfig
from edge.throttle import FailureThrottle


def test_throttle_blocks_after_limit_until_window_ends():
    """limit failures within the window block the key; the block lifts when the window ends."""
    clock = Clock()
    throttle = FailureThrottle(clock, limit=3, window=60)
    for _ in range(3):
        assert not throttle.blocked("k")
        throttle.failed("k")
    assert throttle.blocked("k") and not throttle.blocked("other")
    clock.advance(61)
    assert not throttle.blocked("k")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:6380/2", RedisAddress("127.0.0.1", 6380, db=2)),
        ("redis://:pw@h", RedisAddress("h", 6379, password="pw")),
        ("redis://user:p%40ss@h:1/0", RedisAddress("h", 1, username="user", password="p@ss")),
        ("unix:///tmp/r.sock?db=3", RedisAddress(path="/tmp/r.sock", db=3)),
    ],
)
def test_redis_url_parsing(url, expected):
    """redis:// and unix:// URLs with db numbers and credentials."""
    assert RedisAddress.parse(url) == expected


def test_config_from_env():
    """REDIS_URL is required; the rest has defaults; EDGE_ACL_DENY is a list."""
    with pytest.raises(ConfigError):
        EdgeConfig.from_env({})
    config = EdgeConfig.from_env(
        {"REDIS_URL": "redis://x/1", "EDGE_ACL_DENY": "a/#, b/+ ,", "EDGE_ALLOW_ANONYMOUS": "1",
         "DJANGO_SECRET_KEY": "k" * 50}
    )
    assert (config.mqtt_port, config.metrics_port, config.prefix) == (11883, 19100, "tl:")
    assert config.metrics_host == "127.0.0.1" and config.secret_key == "k" * 50
    assert config.acl_deny == ("a/#", "b/+") and config.allow_anonymous
    assert (config.device_lease, config.mailbox_max) == (300.0, 16)


def test_device_lease_and_mailbox_from_env():
    """How long a device without a connection stays online, and how many commands wait for
    it, come from EDGE_DEVICE_LEASE and EDGE_MAILBOX_MAX; nonsense is refused at start."""
    base = {"REDIS_URL": "redis://x/1", "DJANGO_SECRET_KEY": "k" * 50}
    config = EdgeConfig.from_env({**base, "EDGE_DEVICE_LEASE": "90", "EDGE_MAILBOX_MAX": "4"})
    assert (config.device_lease, config.mailbox_max) == (90.0, 4)
    for bad in ({"EDGE_DEVICE_LEASE": "0"}, {"EDGE_MAILBOX_MAX": "-1"}, {"EDGE_DEVICE_LEASE": "x"}):
        with pytest.raises(ConfigError):
            EdgeConfig.from_env({**base, **bad})


def test_resp_protocol_pipelines_and_errors():
    """Commands are packed as RESP arrays; replies (split anywhere) fire in order."""
    proto = RespProtocol()
    proto.makeConnection(StringTransport())
    first, second = proto.send([("SET", "k", b"\x00v"), ("GET", "k")])
    assert proto.transport.value() == pack_command(("SET", "k", b"\x00v")) + pack_command(
        ("GET", "k")
    )
    assert proto.transport.value().startswith(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n\x00v\r\n")
    results: list = []
    first.addCallback(results.append)
    second.addErrback(lambda f: results.append(f.check(RedisError)))
    for byte in b"+OK\r\n-ERR wrong\r\n":
        proto.dataReceived(bytes([byte]))
    assert results == [b"OK", RedisError]


def test_resp_protocol_fails_pending_on_connection_loss():
    """Commands waiting for a reply fail with ConnectionLost when the connection drops."""
    proto = RespProtocol()
    proto.makeConnection(StringTransport())
    (waiting,) = proto.send([("PING",)])
    failures: list = []
    waiting.addErrback(lambda f: failures.append(f.check(ConnectionLost)))
    proto.connectionLost(None)
    assert failures == [ConnectionLost]


def test_pubsub_messages_go_to_push_handler():
    """Pub/sub messages are handed to on_push, not to waiting commands."""
    pushed: list = []
    proto = RespProtocol(on_push=pushed.append)
    proto.makeConnection(StringTransport())
    proto.dataReceived(b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$5\r\ndev:x\r\n")
    assert pushed == [[b"message", b"ch", b"dev:x"]]


def test_parse_device_decrypts_secret():
    """The Fernet token in tl:dev:* is decrypted; a token from another key leaves no secret."""
    token = encrypt_secret("s3", "key-a")
    reply = [
        b"product",
        b"p",
        b"secret",
        token.encode(),
        b"status",
        b"locked",
        b"node_type",
        b"gateway",
        b"gateway",
        b"",
    ]
    record = parse_device("d", reply, "key-a")
    assert (
        record is not None
        and record.secret == "s3"
        and record.status == "locked"
        and record.node_type == "gateway"
    )
    assert parse_device("d", reply, "key-b").secret is None
    assert parse_device("d", [], "key-a") is None


def test_parse_product_model_errors():
    """A product with a broken model keeps the error text instead of a model."""
    good = parse_product(
        "p", [b"model", json.dumps({"services": {}}).encode(), b"type", b"gateway"]
    )
    assert good is not None and good.model is not None and good.type == "gateway"
    bad = parse_product("p", [b"model", b"{not json"])
    assert bad is not None and bad.model is None and "invalid thing model" in bad.model_error


def test_async_cache_shares_loads_and_honours_drops():
    """Concurrent gets share one load; a drop during a load keeps the result out of the cache."""
    loads: list[Deferred] = []

    def load(key):
        d: Deferred = Deferred()
        loads.append(d)
        return d

    cache: AsyncCache[str] = AsyncCache(load)
    a, b = cache.get("k"), cache.get("k")
    assert len(loads) == 1
    got: list = []
    a.addCallback(got.append)
    b.addCallback(got.append)
    loads[0].callback("v1")
    assert got == ["v1", "v1"] and cache.get("k") == "v1"
    cache.drop("k")
    c = cache.get("k")
    cache.drop("k")
    loads[1].callback("stale")
    assert c.result == "stale" and "k" not in cache.values
