"""L1: a synchronous command call (`"sync": true`) cannot pin the web process: it waits at
most `COMMAND_SYNC_MAX_WAIT` seconds, gives its database connection back while it waits,
and at most `COMMAND_SYNC_MAX_CONCURRENT` calls wait at once (more get 429 with the reason,
and no command is created for them)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from django.db import connection

from tests.security.devices_support import bus_edge
from tests.system.conftest import make_device, make_product
from webapp.devices import actions
from webapp.devices.actions import commands
from webapp.devices.models import DeviceCommand

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("commit_hooks")]

SET_INTERVAL = {"service": "env", "command": "set_interval", "params": {"seconds": 5}}
URL = "/api/v1/devices/dev-1/commands/"


@pytest.fixture
def edge(redis_client, redis_prefix):
    make_device("dev-1", make_product("thermo"))
    edge = bus_edge(redis_client, redis_prefix)
    edge.connect("dev-1")  # online, and never answers
    return edge


def superuser_client(user: Any) -> Any:
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_authenticate(user)
    return client


def test_a_synchronous_call_waits_at_most_the_cap(api, edge, settings):
    """`timeout: 300` no longer holds the call 300 s: it answers after the cap with the
    command still open (its own deadline applies); a timeout within the cap times out as
    before."""
    settings.COMMAND_SYNC_MAX_WAIT = 1
    started = time.monotonic()
    body = api.post(URL, {**SET_INTERVAL, "timeout": 300, "sync": True}, format="json").json()
    assert time.monotonic() - started < 4
    assert body["status"] == "sent"
    assert DeviceCommand.objects.get(pk=body["id"]).is_open

    settings.COMMAND_SYNC_MAX_WAIT = 30
    body = api.post(URL, {**SET_INTERVAL, "timeout": 1, "sync": True}, format="json").json()
    assert body["status"] == "timeout"


def test_a_wait_longer_than_the_redis_socket_timeout_answers(api, edge):
    """Each blocking read stays under redis-py's 5 s socket timeout: a 6 s wait answers with
    the timeout (a 5 s read of the reply failed with 500)."""
    started = time.monotonic()
    response = api.post(URL, {**SET_INTERVAL, "timeout": 6, "sync": True}, format="json")
    assert response.status_code == 201, response.content[:500]
    assert response.json()["status"] == "timeout"
    assert 5.9 <= time.monotonic() - started < 10


# The first call waits in another thread, with its own database connection.
@pytest.mark.django_db(transaction=True)
def test_concurrent_synchronous_calls_are_limited(api, admin_user, edge, settings):
    """With one slot taken, the next synchronous call is refused at once with 429 and
    creates no command; asynchronous calls go on, and the slot is free again afterwards."""
    settings.COMMAND_SYNC_MAX_CONCURRENT = 1
    first: dict[str, Any] = {}

    def waiting_call() -> None:
        first["response"] = superuser_client(admin_user).post(
            URL, {**SET_INTERVAL, "timeout": 3, "sync": True}, format="json")

    waiting = threading.Thread(target=waiting_call)
    waiting.start()
    deadline = time.monotonic() + 5
    while not DeviceCommand.objects.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert DeviceCommand.objects.count() == 1

    refused = api.post(URL, {**SET_INTERVAL, "sync": True}, format="json")
    assert refused.status_code == 429, refused.json()
    assert refused.json()["code"] == "too_many_waits"
    assert "COMMAND_SYNC_MAX_CONCURRENT" in refused.json()["detail"]
    assert DeviceCommand.objects.count() == 1
    assert api.post(URL, SET_INTERVAL, format="json").status_code == 201

    waiting.join()
    assert first["response"].status_code == 201
    assert first["response"].json()["status"] == "timeout"
    again = api.post(URL, {**SET_INTERVAL, "timeout": 1, "sync": True}, format="json")
    assert again.status_code == 201, again.json()


# The wait runs in another thread, whose connection must see the command.
@pytest.mark.django_db(transaction=True)
def test_the_wait_holds_no_database_connection(edge, monkeypatch, settings):
    """While it blocks on Redis, the waiting thread has closed its database connection."""
    settings.COMMAND_SYNC_MAX_WAIT = 2
    record = actions.send_command(acting_user=None, device="dev-1", **SET_INTERVAL, timeout=2)
    redis = commands.get_redis()
    connected_while_waiting: list[bool] = []

    class Watching:
        def blpop(self, *args: Any, **kwargs: Any) -> Any:
            connected_while_waiting.append(connection.connection is not None)
            return redis.blpop(*args, **kwargs)

        def __getattr__(self, name: str) -> Any:
            return getattr(redis, name)

    monkeypatch.setattr(commands, "get_redis", lambda: Watching())
    record = actions.wait_for_command(record, record.timeout)
    assert record.status == "timeout"
    assert connected_while_waiting and not any(connected_while_waiting)
