"""Django's Redis cache behind Sentinel: ``CACHES`` names :class:`SentinelRedisCache` with
``LOCATION`` a one-item list holding the ``redis+sentinel://`` (or ``rediss+sentinel://``) URL
(config.redis_settings).

Django's own backend reads plain Redis URLs only (and splits a string ``LOCATION`` at commas,
which the sentinel list contains); this one gives it a pool that asks the sentinels for the
master and follows it across a failover.
"""

from __future__ import annotations

from typing import Any

from django.core.cache.backends.redis import RedisCache, RedisCacheClient

from .redis import sentinel_pool


class SentinelRedisCacheClient(RedisCacheClient):
    def _get_connection_pool(self, write: bool) -> Any:
        # Replicas are not read from: one pool, to the master, for reads and writes.
        # (Django's private attributes, which its type stubs do not declare.)
        state: dict[str, Any] = vars(self)
        pools = state["_pools"]
        if 0 not in pools:
            pools[0] = sentinel_pool(state["_servers"][0], **state["_pool_options"])
        return pools[0]


class SentinelRedisCache(RedisCache):
    def __init__(self, server: Any, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        if len(vars(self)["_servers"]) != 1:
            raise ValueError(
                "SentinelRedisCache: LOCATION is a list with one redis+sentinel:// "
                "(or rediss+sentinel://) URL"
            )
        self._class = SentinelRedisCacheClient
