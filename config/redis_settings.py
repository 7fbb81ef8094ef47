"""Django's cache, the Channels layer and Celery's broker, derived from ``REDIS_URL``.

One server (``redis://``, ``unix://``) keeps the settings each library reads from a URL; a
Sentinel set (``redis+sentinel://…``, grammar in :mod:`edge.bus.redis_url`) becomes what each
library takes to follow the master: a cache backend with a Sentinel pool
(:mod:`webapp.core.cache`), channels_redis' ``sentinels``/``master_name`` host, and kombu's
``sentinel://`` broker URLs with the ``master_name`` transport option.

Over TLS (``rediss://``, ``rediss+sentinel://``) redis-py reads the ``ssl_*`` options of a
one-server URL itself (the cache, Channels); behind Sentinel they become keyword arguments for
the sentinels and the master. kombu reads them differently (and, without them, does not
verify the server at all): Celery is given its broker URL without them and
``broker_use_ssl`` (:func:`celery_ssl`) with the same settings.
"""

from __future__ import annotations

import ssl
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from config.env import redis_url_for_celery
from edge.bus.redis_url import RedisAddress, is_sentinel_url


def _sentinel(url: str) -> RedisAddress | None:
    if not is_sentinel_url(url):
        return None
    return RedisAddress.parse(url)


def _tls(address: RedisAddress) -> dict[str, Any]:
    return address.tls.redis_py_options() if address.tls is not None else {}


def _sentinel_kwargs(address: RedisAddress) -> dict[str, Any]:
    options: dict[str, Any] = _tls(address)
    if address.sentinel_password is not None:
        options["password"] = address.sentinel_password
    if address.sentinel_username:
        options["username"] = address.sentinel_username
    return options


def cache_settings(url: str, key_prefix: str) -> dict[str, Any]:
    """The ``default`` entry of ``CACHES``."""
    RedisAddress.parse(url)  # a malformed URL stops the settings with a clear error
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
        **_tls(address),
        **options,
    }
    if address.password is not None:
        host["password"] = address.password
    if address.username:
        host["username"] = address.username
    return host


def celery_broker(url: str) -> tuple[str, dict[str, Any]]:
    """Celery's broker URL and the transport options it needs besides the key prefix (over
    TLS, :func:`celery_ssl` too)."""
    address = _sentinel(url)
    if address is None:
        plain = RedisAddress.parse(url)
        if plain.tls is not None:
            return _without_tls_options(url), {}
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


def _without_tls_options(url: str) -> str:
    """A ``rediss://`` URL without its ``ssl_*`` options (kombu would read them its own way,
    over ``broker_use_ssl``)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
             if not k.lower().startswith("ssl_")]
    return urlunsplit(parts._replace(query=urlencode(query)))


def celery_ssl(url: str) -> dict[str, Any] | None:
    """Celery's ``broker_use_ssl`` (kombu's ``Connection(ssl=...)``) for a ``rediss`` URL, else
    None: the URL's TLS settings, with ``ssl.CERT_*`` values as kombu takes them."""
    tls = RedisAddress.parse(url).tls
    if tls is None:
        return None
    options = tls.redis_py_options()
    del options["ssl"]
    options["ssl_cert_reqs"] = ssl.CERT_REQUIRED if tls.verify else ssl.CERT_NONE
    return options
