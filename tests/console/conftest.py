"""Fixtures for the console: two departments with a product and a device each, users with
roles, logged-in clients, the real ingest worker and a Channels layer of the test's own."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from edge.bus.keys import Keys
from tests.conftest import THERMO
from tests.system.conftest import PASSWORD, Org

# What a console operator holds (the built-in operator role grants these and more).
OPERATOR_PERMISSIONS = (
    "products.view_product", "devices.view_device", "devices.change_device",
    "devices.view_devicecommand", "devices.add_devicecommand", "rules.view_alarm",
    "rules.change_alarm",
)


@pytest.fixture(autouse=True)
def _own_redis_names(settings, redis_prefix):
    """This test's own cache and Channels layer (prefixes as a process started with
    REDIS_PREFIX=redis_prefix computes them), so that concurrent tests never meet."""
    caches = {**settings.CACHES}
    caches["default"] = {**caches["default"], "KEY_PREFIX": redis_prefix + "cache"}
    settings.CACHES = caches
    settings.CHANNEL_LAYERS = {"default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [{"address": settings.REDIS_URL, "socket_timeout": 15}],
                   "prefix": redis_prefix + "asgi"}}}


@pytest.fixture(autouse=True)
def _no_persistent_connections(monkeypatch):
    """Requests of the live server and the WebSocket consumer's database calls run in other
    threads: their connections close after each use, so that none outlives the test (and
    keeps PostgreSQL's test database busy when the suite drops it)."""
    from django.db import connection

    monkeypatch.setitem(connection.settings_dict, "CONN_MAX_AGE", 0)


def create_product(identifier: str, department: Any) -> Any:
    from webapp.products import actions

    payload = json.loads(json.dumps(THERMO))
    payload["identifier"] = identifier
    payload["name"] = f"Thermometer {identifier}"
    payload["services"][0]["properties"].append(
        {"code": "mode", "name": "Mode", "datatype": "enum", "enum_values": ["eco", "boost"],
         "access": "RW"})
    payload["services"][0]["properties"].append(
        {"code": "target", "name": "Target", "datatype": "decimal", "unit": "C", "min": 5,
         "max": 30, "access": "RW"})
    product = actions.create_product(acting_user=None, data=payload)
    product.department = department
    product.save(update_fields=["department"])
    return product


def create_device(identifier: str, product: Any, department: Any, **extra: Any) -> Any:
    from webapp.devices import actions

    device, _secret = actions.create_device(acting_user=None, product=product,
                                            identifier=identifier, department=department,
                                            **extra)
    return device


class World:
    """Department A with product `thermo-a` and device `dev-a1`; department B with
    `thermo-b` and `dev-b1`; users of each department, one without permissions, a superuser."""

    def __init__(self) -> None:
        from webapp.system.models import User

        self.org = Org()
        self.product_a = create_product("thermo-a", self.org.a)
        self.product_b = create_product("thermo-b", self.org.b)
        self.device_a = create_device("dev-a1", self.product_a, self.org.a, name="Boiler A",
                                      latitude="31.2304", longitude="121.4737")
        self.device_b = create_device("dev-b1", self.product_b, self.org.b, name="Boiler B",
                                      latitude="39.9042", longitude="116.4074")
        self.alice = self.org.user("alice", self.org.a, OPERATOR_PERMISSIONS,
                                   scope="department")
        self.bob = self.org.user("bob", self.org.b, OPERATOR_PERMISSIONS, scope="department")
        self.nobody = self.org.user("nobody", self.org.a, scope="department")
        self.root = User.objects.create_superuser("root", "root@example.com", PASSWORD)


@pytest.fixture
def world(db, redis_prefix):
    return World()


@pytest.fixture
def client_of(client):
    """`client_of(user)`: Django's test client with `user` signed in (a fresh client each)."""
    from django.test import Client

    def make(user: Any) -> Client:
        c = Client()
        c.force_login(user)
        return c

    return make


def now_ms() -> int:
    return int(time.time() * 1000)


class Ingest:
    """The real ingest worker on this test's uplink stream: `send(*events)` stores a batch."""

    def __init__(self, redis_client: Any, prefix: str) -> None:
        from webapp.telemetry.backends import get_backend
        from webapp.telemetry.ingest import IngestWorker

        self.redis = redis_client
        self.prefix = prefix
        self.worker = IngestWorker(redis_client, Keys(prefix), get_backend(), "console-test",
                                   block_ms=100)
        self.worker.ensure_group()

    def add(self, *events: dict[str, Any]) -> None:
        self.redis.xadd(f"{self.prefix}uplink", {"b": json.dumps(list(events))})

    def run(self) -> int:
        return self.worker.process(self.worker.read())

    def send(self, *events: dict[str, Any]) -> int:
        self.add(*events)
        return self.run()


@pytest.fixture
def ingest(redis_client, redis_prefix):
    return Ingest(redis_client, redis_prefix)


def data_event(device: str, product: str, values: dict[str, Any], ts: int | None = None
               ) -> dict[str, Any]:
    ts = ts or now_ms()
    return {"t": "data", "dev": device, "prod": product, "svc": "env", "ts": ts, "et": None,
            "v": values, "mid": 1}


def log_event(device: str, ok: bool, reason: str = "", ts: int | None = None
              ) -> dict[str, Any]:
    return {"t": "log", "dev": device, "dir": "up", "topic": f"/v1/devices/{device}/datas",
            "payload": '{"temperature": 500}' if not ok else '{"temperature": 21}', "ok": ok,
            "reason": reason or None, "ts": ts or now_ms()}


def status_event(device: str, status: str, ts: int | None = None) -> dict[str, Any]:
    return {"t": "status", "dev": device, "s": status, "ts": ts or now_ms(), "node": "n1",
            "addr": ""}


# The browser tests' fixtures (tests/console/browsing.py), for every module here.
from tests.console.browsing import browser, web_process  # noqa: E402, F401
