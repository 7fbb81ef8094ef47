"""The webapp's Redis connection (one pool per process) and the shared key names."""

from __future__ import annotations

from functools import lru_cache

import redis
from django.conf import settings

from edge.bus.keys import Keys


@lru_cache(maxsize=1)
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, decode_responses=False, health_check_interval=30)


def get_redis() -> redis.Redis:
    return _client(settings.REDIS_URL)


def keys() -> Keys:
    return Keys(settings.REDIS_PREFIX)
