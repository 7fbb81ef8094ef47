"""The web processes behind Redis Sentinel: the cache, Channels and Celery settings derived
from a ``redis+sentinel://`` REDIS_URL (config.redis_settings), and each client — redis-py
(webapp.core.redis, which ingest and the web use), Django's cache (webapp.core.cache),
channels_redis and kombu — reaching the master of a real Sentinel set and the new one after
the master is killed (docs/bus.md, "Redis failover")."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
import redis
from channels_redis.core import RedisChannelLayer
from kombu import Connection

from config.redis_settings import cache_settings, celery_broker, channel_host
from tests.edge.sentinel_set import SentinelSet, sentinel_set
from tests.support.slow import starts_processes
from webapp.core.cache import SentinelRedisCache
from webapp.core.outbound import _sentinels_expanded
from webapp.core.redis import client_for

URL = "redis+sentinel://app:m%3Apw@10.0.0.1:26379,[::1]:26380/tl/2?sentinel_password=s%26pw"
T = TypeVar("T")


def test_settings_derived_from_a_sentinel_url():
    """Byte for byte what Django, channels_redis and kombu are given."""
    assert cache_settings(URL, "tl:cache") == {
        "BACKEND": "webapp.core.cache.SentinelRedisCache",
        "LOCATION": [URL],
        "KEY_PREFIX": "tl:cache",
    }
    assert channel_host(URL, socket_timeout=15) == {
        "sentinels": [("10.0.0.1", 26379), ("::1", 26380)],
        "master_name": "tl",
        "sentinel_kwargs": {"password": "s&pw"},
        "db": 2,
        "socket_timeout": 15,
        "password": "m:pw",
        "username": "app",
    }
    assert celery_broker(URL) == (
        "sentinel://app:m%3Apw@10.0.0.1:26379/2;sentinel://app:m%3Apw@[::1]:26380/2",
        {"master_name": "tl", "sentinel_kwargs": {"password": "s&pw"}},
    )
    bare = "redis+sentinel://h1,h2:5000/m"
    assert channel_host(bare)["sentinel_kwargs"] is None
    assert celery_broker(bare) == (
        "sentinel://h1:26379/0;sentinel://h2:5000/0", {"master_name": "m"}
    )
    # One server: the URL each library reads, as before.
    assert cache_settings("redis://h:6379/1", "p")["LOCATION"] == "redis://h:6379/1"
    assert channel_host("redis://h/0", socket_timeout=15) == {
        "address": "redis://h/0", "socket_timeout": 15,
    }
    assert celery_broker("unix:///run/r.sock?db=3") == (
        "redis+socket:///run/r.sock?virtual_host=3", {}
    )


def test_a_bad_sentinel_url_stops_the_settings_with_a_clear_error():
    with pytest.raises(ValueError, match="needs the master name"):
        cache_settings("redis+sentinel://h:26379", "p")
    with pytest.raises(ValueError, match="unknown option"):
        celery_broker("redis+sentinel://h/m?sentinel_pasword=x")


def test_the_sentinels_count_as_the_platform_own_redis():
    """Outbound destinations (sinks, webhooks) may not reach the platform's sentinels."""
    assert _sentinels_expanded([URL, "redis://x:1/0"]) == [
        "redis://10.0.0.1:26379", "redis://[::1]:26380", "redis://x:1/0",
    ]


@pytest.fixture(scope="module")
@starts_processes
def sentinels() -> Iterator[SentinelSet]:
    with sentinel_set() as group:
        yield group


def eventually(action: Callable[[], T], timeout: float = 15.0) -> T:
    """``action()`` once it stops failing for want of a master (during the failover)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return action()
        except (redis.RedisError, OSError) as exc:
            if time.monotonic() > deadline:
                raise AssertionError(f"no master after {timeout} s: {exc}") from exc
            time.sleep(0.2)


def test_every_web_client_follows_the_master_across_a_failover(sentinels: SentinelSet):
    """redis-py (get_redis, ingest), the Django cache, Channels and Celery's broker reach
    the master through the sentinels, and the new master after a kill -9 of the old one."""
    prefix = f"snt{uuid.uuid4().hex[:6]}:"
    url = sentinels.url
    client = client_for(url, decode_responses=False, health_check_interval=30)
    cache = SentinelRedisCache(cache_settings(url, prefix + "cache")["LOCATION"],
                               {"KEY_PREFIX": prefix + "cache"})
    layer = RedisChannelLayer(hosts=[channel_host(url, socket_timeout=15)],
                              prefix=prefix + "asgi")
    broker_url, options = celery_broker(url)
    broker = Connection(broker_url, transport_options={"global_keyprefix": prefix, **options})

    async def round_trip(text: str) -> Any:
        channel = await layer.new_channel()
        await layer.send(channel, {"type": "t", "text": text})
        message = await asyncio.wait_for(layer.receive(channel), 10)
        await layer.flush()
        await layer.close_pools()
        return message["text"]

    def all_clients(tag: str) -> tuple[Any, ...]:
        client.set(prefix + "k", tag)
        cache.set("k", tag)
        queue = broker.SimpleQueue(prefix + "q")
        try:
            queue.put({"tag": tag})
            received = queue.get(timeout=5)
            received.ack()
            payload = received.payload
        finally:
            queue.close()
        return (
            client.get(prefix + "k"), cache.get("k"), asyncio.run(round_trip(tag)),
            payload["tag"], client.execute_command("ROLE")[0],
        )

    try:
        before = sentinels.master()
        assert all_clients("one") == (b"one", "one", "one", "one", b"master")
        client.wait(1, 2000)
        sentinels.kill(before[1])
        killed = time.monotonic()
        while sentinels.master() == before:
            assert time.monotonic() - killed < 20, "no failover"
            time.sleep(0.05)
        broker.release()
        broker = Connection(broker_url, transport_options={"global_keyprefix": prefix, **options})
        assert eventually(lambda: all_clients("two")) == (b"two", "two", "two", "two", b"master")
        assert eventually(lambda: client.connection_pool.get_master_address()) == (
            sentinels.master()
        )
        # What was written before the kill is on the new master (it was replicated).
        assert client.exists(prefix + "k")
    finally:
        broker.release()
        for key in eventually(lambda: list(client.scan_iter(f"{prefix}*"))):
            client.delete(key)
        client.close()
        cache.close()

