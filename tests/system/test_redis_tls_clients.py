"""The web processes on Redis over TLS (``rediss://``, ``rediss+sentinel://``; docs/bus.md,
"Redis over TLS"): the settings derived from REDIS_URL (config.redis_settings) byte for byte,
and each client — redis-py's get_redis() (the web, ingest), the edge's snapshot writer,
Django's cache, channels_redis and kombu (Celery's broker, with ``broker_use_ssl``) — working
against a real TLS-only redis-server that asks for a client certificate, and through TLS
sentinels; a wrong CA or a plain URL against the TLS port fail at once, clearly."""

from __future__ import annotations

import asyncio
import ssl
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from channels_redis.core import RedisChannelLayer
from django.core.cache.backends.redis import RedisCache
from kombu import Connection

from config.redis_settings import cache_settings, celery_broker, celery_ssl, channel_host
from edge.snapshot import sync_client
from tests.edge.redis_server import RedisTlsFiles, private_redis_server
from tests.edge.sentinel_set import SentinelSet, sentinel_set
from tests.edge.tls_material import Authority
from tests.support.slow import starts_processes
from webapp.core.cache import SentinelRedisCache
from webapp.core.outbound import _sentinels_expanded
from webapp.core.redis import client_for, get_redis

URL = "rediss://app:p%40ss@r.example:6380/2?ssl_ca_certs=/ca.pem&ssl_certfile=/c.pem&ssl_keyfile=/k.pem"
SENTINEL_URL = (
    "rediss+sentinel://:mpw@10.0.0.1:26379,[::1]:26380/tl/1?sentinel_password=spw"
    "&ssl_ca_certs=/ca.pem&ssl_check_hostname=false"
)
TLS = {"ssl": True, "ssl_cert_reqs": "required", "ssl_check_hostname": True,
       "ssl_ca_certs": "/ca.pem", "ssl_certfile": "/c.pem", "ssl_keyfile": "/k.pem"}


def test_settings_derived_from_a_tls_url():
    # One server: redis-py (the cache, Channels) reads the URL's ssl_* options itself.
    assert cache_settings(URL, "p")["LOCATION"] == URL
    assert channel_host(URL, socket_timeout=15) == {"address": URL, "socket_timeout": 15}
    # kombu reads them its own way (ssl_check_hostname=no would be True): they go to
    # broker_use_ssl, with ssl.CERT_* values, and the broker URL is without them.
    assert celery_broker(URL) == ("rediss://app:p%40ss@r.example:6380/2", {})
    assert celery_broker(URL + "&socket_timeout=3")[0] == (
        "rediss://app:p%40ss@r.example:6380/2?socket_timeout=3"
    )
    assert celery_ssl(URL) == {
        "ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_check_hostname": True,
        "ssl_ca_certs": "/ca.pem", "ssl_certfile": "/c.pem", "ssl_keyfile": "/k.pem",
    }
    assert celery_ssl("rediss://h/0?ssl_cert_reqs=none") == {
        "ssl_cert_reqs": ssl.CERT_NONE, "ssl_check_hostname": False,
    }
    assert celery_ssl("redis://h/0") is None and celery_ssl("redis+sentinel://h/m") is None


def test_settings_derived_from_a_tls_sentinel_url():
    tls = {"ssl": True, "ssl_cert_reqs": "required", "ssl_check_hostname": False,
           "ssl_ca_certs": "/ca.pem"}
    assert cache_settings(SENTINEL_URL, "p")["BACKEND"] == "webapp.core.cache.SentinelRedisCache"
    assert channel_host(SENTINEL_URL, socket_timeout=15) == {
        "sentinels": [("10.0.0.1", 26379), ("::1", 26380)],
        "master_name": "tl",
        "sentinel_kwargs": {**tls, "password": "spw"},
        "db": 1,
        **tls,
        "socket_timeout": 15,
        "password": "mpw",
    }
    assert celery_broker(SENTINEL_URL) == (
        "sentinel://:mpw@10.0.0.1:26379/1;sentinel://:mpw@[::1]:26380/1",
        {"master_name": "tl", "sentinel_kwargs": {**tls, "password": "spw"}},
    )
    assert celery_ssl(SENTINEL_URL) == {
        "ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_check_hostname": False,
        "ssl_ca_certs": "/ca.pem",
    }
    # Outbound destinations may not reach the platform's sentinels, over TLS or not.
    assert _sentinels_expanded([SENTINEL_URL]) == ["redis://10.0.0.1:26379", "redis://[::1]:26380"]


def test_a_bad_tls_url_stops_the_settings_with_a_clear_error():
    with pytest.raises(ValueError, match="ssl_cert_reqs is 'required' or 'none'"):
        cache_settings("rediss://:hunter2@h/0?ssl_cert_reqs=CERT_NONE", "p")
    with pytest.raises(ValueError, match=r"TLS options \(ssl_ca_certs\) need the rediss://"):
        celery_broker("redis://h/0?ssl_ca_certs=/ca.pem")
    with pytest.raises(ValueError, match="unsupported TLS option"):
        client_for("rediss://h/0?ssl_ca_path=/etc/ssl")


@pytest.fixture(scope="module")
@starts_processes
def tls_url(tls_files: RedisTlsFiles) -> Iterator[str]:
    """A TLS-only redis-server asking for a client certificate, and its full URL."""
    with private_redis_server(tls=tls_files, auth_clients=True) as url:
        yield f"{url}&ssl_certfile={tls_files.client_cert}&ssl_keyfile={tls_files.client_key}"


def round_trip(layer: RedisChannelLayer, text: str) -> Any:
    async def run() -> Any:
        channel = await layer.new_channel()
        await layer.send(channel, {"type": "t", "text": text})
        message = await asyncio.wait_for(layer.receive(channel), 10)
        await layer.flush()
        await layer.close_pools()
        return message["text"]

    return asyncio.run(run())


def through_kombu(url: str, prefix: str, tag: str) -> Any:
    """What Celery does with the settings: the broker URL, its transport options and
    broker_use_ssl, one message through a queue."""
    broker_url, options = celery_broker(url)
    broker = Connection(broker_url, transport_options={"global_keyprefix": prefix, **options},
                        ssl=celery_ssl(url))
    try:
        queue = broker.SimpleQueue(prefix + "q")
        try:
            queue.put({"tag": tag})
            received = queue.get(timeout=5)
            received.ack()
            return received.payload["tag"]
        finally:
            queue.close()
    finally:
        broker.release()


def the_other_clients_work(url: str, client: Any, prefix: str, cache_class: Any) -> None:
    """After ``client`` stored ``prefix + "k"``: the snapshot writer reads it, and Django's
    cache, a Channels layer and kombu, configured from ``url`` by config.redis_settings, each
    make a round trip; then the test's keys are removed."""
    snapshot = sync_client(url)
    assert snapshot.get(prefix + "k") == b"one"
    snapshot.close()
    entry = cache_settings(url, prefix + "cache")
    cache = cache_class(entry["LOCATION"], {"KEY_PREFIX": prefix + "cache"})
    cache.set("k", "two")
    assert cache.get("k") == "two"
    layer = RedisChannelLayer(hosts=[channel_host(url, socket_timeout=15)],
                              prefix=prefix + "asgi")
    assert round_trip(layer, "three") == "three"
    assert through_kombu(url, prefix, "four") == "four"
    for key in client.scan_iter(prefix + "*"):
        client.delete(key)


def test_every_web_client_works_over_tls(tls_url: str, settings: Any):
    prefix = f"tlsw{uuid.uuid4().hex[:6]}:"
    settings.REDIS_URL = tls_url
    client = get_redis()
    client.set(prefix + "k", "one")
    assert client.get(prefix + "k") == b"one"
    assert client.connection_pool.connection_class.__name__ == "SSLConnection"
    # Django's cache as config.redis_settings configures it, Channels, kombu.
    the_other_clients_work(tls_url, client, prefix, RedisCache)


def test_a_wrong_ca_or_a_plain_url_fails_at_once(tls_url: str, tls_files: RedisTlsFiles,
                                                 tmp_path: Path):
    other = Authority(tmp_path, "Another CA")
    wrong = tls_url.replace(str(tls_files.ca), str(other.path))
    started = time.monotonic()
    with pytest.raises(redis.ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
        client_for(wrong, socket_connect_timeout=5, socket_timeout=5).ping()
    port = tls_url.split(":")[2].split("/")[0]
    with pytest.raises(redis.ConnectionError):
        client_for(f"redis://127.0.0.1:{port}/0", socket_connect_timeout=5,
                   socket_timeout=5).ping()
    assert time.monotonic() - started < 5
    # kombu (Celery) too, with the settings derived from the URL.
    broker_url, options = celery_broker(wrong)
    broker = Connection(broker_url, transport_options=options, ssl=celery_ssl(wrong))
    with pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED"):
        broker.ensure_connection(max_retries=1, interval_start=0)
    broker.release()


@pytest.fixture(scope="module")
@starts_processes
def tls_sentinels(tls_files: RedisTlsFiles) -> Iterator[SentinelSet]:
    with sentinel_set(tls=tls_files) as group:
        yield group


def test_every_web_client_finds_the_master_through_tls_sentinels(tls_sentinels: SentinelSet):
    url = tls_sentinels.url
    prefix = f"tlss{uuid.uuid4().hex[:6]}:"
    client = client_for(url)
    client.set(prefix + "k", "one")
    assert client.get(prefix + "k") == b"one"
    assert client.execute_command("ROLE")[0] == b"master"
    assert client.connection_pool.get_master_address() == tls_sentinels.master()
    the_other_clients_work(url, client, prefix, SentinelRedisCache)
    client.close()
