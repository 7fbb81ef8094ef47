"""Suite-wide fixtures: Redis (the machine's in CI, an embedded one on a bare machine), API
clients and helpers that read like the API."""

from __future__ import annotations

import atexit
import os
import secrets
import socket
import uuid
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

from config.embedded_redis import EmbeddedRedis
from tests.support.slow import is_slow

ROOT = Path(__file__).resolve().parent.parent

# Fixtures every area uses: `commit_hooks` (on-commit callbacks without transaction=True).
pytest_plugins = ["tests.support.commits"]

# Property tests judge behaviour, not speed: Hypothesis's 200 ms deadline per example fails
# them at random on a loaded two-core machine (parallel workers, CI).
hypothesis_settings.register_profile("suite", deadline=None)
hypothesis_settings.load_profile("suite")

# There is no built-in secret key. The suite runs on a random one of its own, in os.environ so
# that every process a test starts (edge, ingest, Daphne) inherits it. pytest-django loads the
# settings before this file, and they do the same under pytest (config/settings.py); this
# line covers a run without pytest-django.
os.environ.setdefault("DJANGO_SECRET_KEY", secrets.token_urlsafe(50))


def _start_embedded_redis() -> str:
    server = EmbeddedRedis(ROOT / "var" / "test-redis", persistent=False)
    url = server.start()
    atexit.register(server.stop)
    return url


def missing(message: str) -> None:
    """Something a test needs is not on this machine: a skip for `make test` on a bare
    machine, a failure where CI_REQUIRE_SERVICES=1 (CI must not pass without it)."""
    if os.environ.get("CI_REQUIRE_SERVICES") == "1":
        pytest.fail(message)
    pytest.skip(message)


def require_service(name: str, host: str, port: int) -> None:
    """A machine service (RabbitMQ, Mosquitto, MariaDB, PostgreSQL) a test talks to."""
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError as exc:
        missing(f"{name} is not reachable at {host}:{port} ({exc})")


# REDIS_URL is read by config.settings and by every subprocess a test starts (edge, ingest).
if not os.environ.get("REDIS_URL"):
    os.environ["REDIS_URL"] = _start_embedded_redis()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark `slow` what starts processes or a browser (tests/support/slow.py says how it is
    told), so that `make test-fast` can leave it out."""
    for item in items:
        if is_slow(item):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _fast_hasher(request: pytest.FixtureRequest, settings) -> None:
    """Tests log in often and PBKDF2 takes about a second a password: a fast hasher keeps
    them quick (production keeps PBKDF2). Slow tests keep the platform's own hashers, as the
    processes they start check the passwords too."""
    if request.node.get_closest_marker("slow") is None:
        settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(scope="session")
def redis_url() -> str:
    return os.environ["REDIS_URL"]


@pytest.fixture
def redis_prefix(settings) -> str:
    """A key prefix of this test's own, so tests sharing one Redis never see each other."""
    prefix = f"t{uuid.uuid4().hex[:10]}:"
    settings.REDIS_PREFIX = prefix
    yield prefix
    delete_prefixed(os.environ["REDIS_URL"], prefix)


def delete_prefixed(url: str, prefix: str) -> None:
    """Remove every key under ``prefix`` (what a test's processes left in a shared Redis)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory):
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate, for
    TLS redis-servers (tests/edge/redis_server.py: private_redis_server(tls=...))."""
    from tests.edge.redis_server import RedisTlsFiles

    return RedisTlsFiles.make(tmp_path_factory.mktemp("tl-redis-tls-"))


@pytest.fixture
def redis_client(redis_prefix):
    import redis

    # Closed after the test: over a suite, unclosed clients left the test process with more
    # than 1024 sockets, past what paho's select() can watch.
    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    yield client
    client.close()


@pytest.fixture
def admin_user(db, django_user_model):
    return django_user_model.objects.create_superuser("root", "root@example.com", "pw-root-123")


@pytest.fixture
def api(admin_user):
    """An API client authenticated as a superuser with a JWT, as docs/api.md describes."""
    from rest_framework.test import APIClient

    client = APIClient()
    token = client.post("/api/v1/auth/token/", {"username": "root", "password": "pw-root-123"},
                        format="json").json()["access"]
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


THERMO = {
    "identifier": "thermo",
    "name": "Thermometer",
    "product_type": "common",
    "protocol": "mqtt",
    "services": [{
        "code": "env",
        "name": "Environment",
        "properties": [
            {"code": "temperature", "name": "Temperature", "datatype": "decimal", "unit": "C",
             "min": -40, "max": 125, "access": "RE"},
            {"code": "humidity", "datatype": "int", "min": 0, "max": 100},
        ],
        "commands": [{"code": "set_interval", "name": "Set interval",
                      "requests": [{"code": "seconds", "datatype": "int", "min": 1,
                                    "max": 3600}],
                      "responses": [{"code": "result", "datatype": "string"}]}],
        "events": [{"code": "overheat", "name": "Overheat",
                    "params": [{"code": "level", "datatype": "int"}]}],
    }],
}


@pytest.fixture
def thermo_payload():
    import copy

    return copy.deepcopy(THERMO)


@pytest.fixture(autouse=True)
def _drop_time_series_tables(request):
    """Time-series tables are created outside Django's models; drop them after each test."""
    marker = request.node.get_closest_marker("django_db")
    if "transactional_db" not in request.fixturenames and "live_server" not in \
            request.fixturenames and not (marker and marker.kwargs.get("transaction")):
        yield
        if marker is not None:
            # The test's transaction rolled back the tables it created: forget their schema.
            from webapp.telemetry.backends import get_backend

            get_backend().forget_all()
        return
    # Requested here so that the database is still open when this teardown runs.
    request.getfixturevalue("transactional_db")
    yield
    from django.db import connection

    from webapp.telemetry.backends import get_backend

    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            if table.startswith("tl_ts_"):
                cursor.execute(f"DROP TABLE IF EXISTS {connection.ops.quote_name(table)}")
    get_backend().forget_all()


@pytest.fixture(autouse=True)
def _close_channel_layer_connections(settings):
    """Close the Channels layer connections of the test's finished event loops and the
    Redis cache's connections (tests/support/channel_layers.py). It takes `settings` so that
    it runs before a test's own CHANNEL_LAYERS and CACHES are restored, while theirs are still
    the ones in use."""
    yield
    from tests.support.channel_layers import close_cache_connections, close_dead_loop_connections

    close_dead_loop_connections()
    close_cache_connections()
