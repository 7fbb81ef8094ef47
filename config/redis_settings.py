"""Django's cache, the Channels layer and Celery's broker, derived from ``REDIS_URL``.

One server (``redis://``, ``unix://``) keeps the settings each library reads from a URL; a
Sentinel set (``redis+sentinel://…``, grammar in :mod:`edge.bus.redis_url`) becomes what each
library takes to follow the master: a cache backend with a Sentinel pool
(:mod:`webapp.core.cache`), channels_redis' ``sentinels``/``master_name`` host, and kombu's
``sentinel://`` broker URLs with the ``master_name`` transport option.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from config.env import redis_url_for_celery
from edge.bus.redis_url import SENTINEL_SCHEME, RedisAddress


def _sentinel(url: str) -> RedisAddress | None:
    if not url.lower().startswith(SENTINEL_SCHEME + "://"):
        return None
    return RedisAddress.parse(url)


def _sentinel_kwargs(address: RedisAddress) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if address.sentinel_password is not None:
        options["password"] = address.sentinel_password
    if address.sentinel_username:
        options["username"] = address.sentinel_username
    return options


def cache_settings(url: str, key_prefix: str) -> dict[str, Any]:
    """The ``default`` entry of ``CACHES``."""
    if _sentinel(url) is not None:
        return {
            "BACKEND": "webapp.core.cache.SentinelRedisCache",
            "LOCATION": [url],  # a list: Django splits a string at its commas
            "KEY_PREFIX": key_prefix,
        }
    return {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": url,
        "KEY_PREFIX": key_prefix,
    }


def channel_host(url: str, **options: Any) -> dict[str, Any]:
    """One entry of channels_redis' ``hosts``; ``options`` go to its connections."""
    address = _sentinel(url)
    if address is None:
        return {"address": url, **options}
    host: dict[str, Any] = {
        "sentinels": list(address.sentinels),
        "master_name": address.master_name,
        "sentinel_kwargs": _sentinel_kwargs(address) or None,
        "db": address.db,
        **options,
    }
    if address.password is not None:
        host["password"] = address.password
    if address.username:
        host["username"] = address.username
    return host


def celery_broker(url: str) -> tuple[str, dict[str, Any]]:
    """Celery's broker URL and the transport options it needs besides the key prefix."""
    address = _sentinel(url)
    if address is None:
        return redis_url_for_celery(url), {}
    userinfo = ""
    if address.password is not None or address.username:
        user = quote(address.username or "", safe="")
        secret = quote(address.password or "", safe="")
        userinfo = f"{user}:{secret}@"
    urls = ";".join(
        f"sentinel://{userinfo}{f'[{h}]' if ':' in h else h}:{p}/{address.db}"
        for h, p in address.sentinels
    )
    options: dict[str, Any] = {"master_name": address.master_name}
    kwargs = _sentinel_kwargs(address)
    if kwargs:
        options["sentinel_kwargs"] = kwargs
    return urls, options
