"""The edge's registry (edge.bus.registry) on an in-memory Redis: records are read from the
``tl:dev:*`` / ``tl:prod:*`` / ``tl:app:*`` hashes the webapp writes, cached, and dropped when
``tl:registry`` announces a change, wired as the edge service wires it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from edge.bus.keys import Keys
from edge.bus.registry import DeviceRecord, Registry
from edge.crypto import encrypt_secret
from tests.support.fake_redis import FakeRedis

SECRET_KEY = "registry-test-secret-key"
MODEL = {"services": {"env": {"properties": {"t": {"datatype": "int"}}}}}


class Bus:
    """A registry and the ``tl:registry`` subscription the edge service gives it."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.redis = FakeRedis(self.clock)
        self.keys = Keys("tl:")
        self.client = self.redis.client()
        self.registry = Registry(self.client, self.keys, SECRET_KEY)
        self.changes: list[tuple[str, str]] = []
        self.registry.on_change = lambda kind, name: self.changes.append((kind, name))
        self.subscriber = self.redis.subscriber(
            [self.keys.registry_channel],
            on_message=lambda _channel, data: self.registry.changed(data),
            on_subscribed=self.registry.clear,
        )
        self.subscriber.start()
        self.redis.settle()

    def lookup(self, method: Any, name: str) -> Any:
        """A lookup's value, whether cached or loaded (the load answered on the next turn)."""
        value = method(name)
        if not isinstance(value, Deferred):
            return value
        results: list[Any] = []
        value.addBoth(results.append)
        self.redis.settle()
        return results[0]

    def loads(self) -> int:
        return sum(1 for c in self.client.commands if c[0] == "HGETALL")

    def write_device(self, name: str, **fields: str) -> None:
        self.redis.sync.hset(self.keys.device(name), mapping=fields)


@pytest.fixture
def bus() -> Bus:
    return Bus()


def test_device_read_decrypted_then_cached(bus: Bus) -> None:
    """A device's hash becomes a record with its secret decrypted; the next lookup is
    answered from memory, without a command."""
    bus.write_device(
        "d1",
        product="p1",
        secret=encrypt_secret("s3cret", SECRET_KEY),
        department="7",
        owner="3",
    )
    record = bus.lookup(bus.registry.device, "d1")
    assert isinstance(record, DeviceRecord)
    assert (record.product, record.secret, record.status, record.node_type) == (
        "p1",
        "s3cret",
        "activated",
        "direct",
    )
    assert (record.department, record.owner) == ("7", "3")
    assert bus.registry.device("d1") is record
    assert bus.loads() == 1


def test_unknown_device_is_none_and_asked_again_after_a_while(bus: Bus) -> None:
    assert bus.lookup(bus.registry.device, "ghost") is None
    assert bus.lookup(bus.registry.device, "ghost") is None
    assert bus.loads() == 1
    bus.registry.devices.missing["ghost"] = 0.0  # the miss lapsed
    bus.write_device("ghost", product="p1")
    assert bus.lookup(bus.registry.device, "ghost").product == "p1"


def test_a_change_announced_on_the_channel_drops_the_cached_copy(bus: Bus) -> None:
    """The webapp rewrites the hash, then publishes ``dev:{id}``: the edge reads it again
    and tells the hooks (on_change)."""
    bus.write_device("d1", product="p1", status="activated")
    assert bus.lookup(bus.registry.device, "d1").status == "activated"
    bus.write_device("d1", status="disabled")
    assert bus.lookup(bus.registry.device, "d1").status == "activated"  # not announced yet
    bus.redis.publish(bus.keys.registry_channel, "dev:d1")
    bus.redis.settle()
    assert bus.changes == [("dev", "d1")]
    assert bus.lookup(bus.registry.device, "d1").status == "disabled"
    assert bus.loads() == 2


def test_products_and_application_keys(bus: Bus) -> None:
    """A product's thing model is parsed once; an app key's hash gives its data scope; each
    is dropped by its own message."""
    key = bus.keys.product("p1")
    bus.redis.sync.hset(key, mapping={"type": "gateway", "model": json.dumps(MODEL)})
    product = bus.lookup(bus.registry.product, "p1")
    assert (product.type, product.model_error, product.disabled) == ("gateway", None, False)
    assert product.model is not None
    bus.redis.sync.hset(bus.keys.app("k1"), mapping={"key_hash": "ab" * 32, "user": "5"})
    app = bus.lookup(bus.registry.app, "k1")
    assert (app.user, app.everything, app.departments) == ("5", False, frozenset())
    bus.redis.sync.hset(key, "status", "disabled")
    bus.redis.sync.hset(bus.keys.app("k1"), "scope", "all")
    bus.redis.publish(bus.keys.registry_channel, "prod:p1")
    bus.redis.publish(bus.keys.registry_channel, "app:k1")
    bus.redis.settle()
    assert bus.lookup(bus.registry.product, "p1").disabled
    assert bus.lookup(bus.registry.app, "k1").everything
    assert bus.changes == [("prod", "p1"), ("app", "k1")]


def test_all_and_a_new_subscription_forget_everything(bus: Bus) -> None:
    """``all`` (the webapp republished everything) and a pub/sub reconnect (changes may
    have been missed) both empty the caches, without telling on_change."""
    bus.write_device("d1", product="p1")
    bus.lookup(bus.registry.device, "d1")
    bus.redis.publish(bus.keys.registry_channel, "all")
    bus.redis.settle()
    assert len(bus.registry.devices) == 0
    bus.lookup(bus.registry.device, "d1")
    bus.redis.resubscribe()
    assert len(bus.registry.devices) == 0
    assert bus.changes == []


def test_a_change_during_a_load_is_not_lost(bus: Bus) -> None:
    """A change announced while the hash is being read: that answer is returned but not
    kept, so the next lookup reads the new one."""
    bus.write_device("d1", product="p1")
    pending = bus.registry.device("d1")
    assert isinstance(pending, Deferred)
    bus.write_device("d1", product="p2")
    bus.registry.changed(b"dev:d1")
    bus.redis.settle()
    assert bus.lookup(bus.registry.device, "d1").product == "p2"
