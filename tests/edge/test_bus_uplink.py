"""The uplink stream (edge.bus.uplink) on an in-memory Redis: the events of one reactor turn
become one stream entry, and a confirmed emit fires once that entry is stored."""

from __future__ import annotations

import json

from twisted.internet.task import Clock
from twisted.python.failure import Failure

from edge.bus.keys import Keys
from edge.bus.uplink import Uplink
from edge.mqtt.errors import NotStored
from tests.support.fake_redis import FakeRedis

KEYS = Keys("tl:")


def entries(redis: FakeRedis) -> list[list[dict]]:
    return [json.loads(fields[b"b"]) for _id, fields in redis.sync.xrange(KEYS.uplink)]


def test_one_entry_per_turn_and_confirmation_after_it_is_stored():
    redis = FakeRedis(Clock())
    uplink = Uplink(redis.client(), KEYS, redis.clock)
    confirmed: list[None] = []
    uplink.emit({"e": 1}, {"e": 2})
    uplink.emit_confirmed([{"e": 3}]).addCallback(confirmed.append)
    assert uplink.pending == 3 and entries(redis) == []
    redis.settle()
    assert entries(redis) == [[{"e": 1}, {"e": 2}, {"e": 3}]]
    assert confirmed == [None]
    assert (uplink.entries_written, uplink.events_written, uplink.pending) == (1, 3, 0)
    uplink.emit({"e": 4})
    redis.settle()
    assert entries(redis)[1:] == [[{"e": 4}]]


def test_a_refused_write_is_retried_then_its_waiters_fail():
    """The stream key holds another type: XADD fails, is tried again ``retries`` times, then
    the confirmed emits fail and the failure is counted."""
    redis = FakeRedis(Clock())
    redis.sync.set(KEYS.uplink, "not a stream")
    uplink = Uplink(redis.client(), KEYS, redis.clock)
    outcome: list[object] = []
    uplink.emit_confirmed([{"e": 1}]).addBoth(outcome.append)
    redis.settle()
    for _ in range(uplink.retries):
        assert outcome == []
        redis.clock.advance(uplink.retry_delay)
        redis.settle()
    assert len(outcome) == 1 and isinstance(outcome[0], Failure)
    # The MQTT connection knows this failure (not stored: closes with 'server busy').
    assert outcome[0].check(NotStored) and "WRONGTYPE" in outcome[0].getErrorMessage()
    assert uplink.failures == 1 and redis.sync.get(KEYS.uplink) == b"not a stream"
