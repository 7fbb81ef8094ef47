"""Second review: the rule test endpoints (`POST /rules/test/` for a draft, `POST
/rules/{id}/test/`) read the latest values of the `device` the caller names, whichever
department it belongs to, and answered them: an operator of A read the telemetry of B's
devices. The latest values are read only for a device of the caller's scope (another is
answered as a device without data)."""

from __future__ import annotations

import json

import pytest

from tests.rules.test_scope import World, _rule
from tests.security.rbac import own_cache_prefix  # noqa: F401  (fixtures)
from tests.security.scoped_operator import jwt_client
from tests.system.conftest import Org, make_device
from webapp.core.redis import get_redis, keys

pytestmark = pytest.mark.django_db

SECRET_READING = 41.25


@pytest.fixture
def world(db, redis_prefix):
    world = World(Org())
    world.device_a = make_device("dev-a", world.product["a"], world.org.a)
    world.device_b = make_device("dev-b", world.product["b"], world.org.b)
    for device, value in (("dev-a", 21.5), ("dev-b", SECRET_READING)):
        get_redis().hset(keys().latest(device), "env", json.dumps(
            {"temperature": {"value": value, "ts": 1}}))
    return world


def test_draft_rule_test_does_not_read_another_departments_device(world):
    client = jwt_client(world.alice)
    answer = client.post("/api/v1/rules/test/", {"rule": _rule("p-a"), "device": "dev-b",
                                                 "values": {"temperature": 35}},
                         format="json")
    assert answer.status_code == 200, answer.content
    assert str(SECRET_READING) not in answer.content.decode()
    assert answer.json()["latest"] == {}


def test_saved_rule_test_does_not_read_another_departments_device(world):
    client = jwt_client(world.alice)
    created = client.post("/api/v1/rules/", _rule("p-a"), format="json")
    assert created.status_code == 201, created.content
    answer = client.post(f"/api/v1/rules/{created.json()['id']}/test/",
                         {"device": "dev-b", "values": {"temperature": 35}}, format="json")
    assert answer.status_code == 200, answer.content
    assert str(SECRET_READING) not in answer.content.decode()
    assert answer.json()["latest"] == {}


def test_own_device_latest_values_are_still_read(world):
    client = jwt_client(world.alice)
    answer = client.post("/api/v1/rules/test/", {"rule": _rule("p-a"), "device": "dev-a",
                                                 "values": {"temperature": 35}},
                         format="json")
    assert answer.status_code == 200, answer.content
    assert answer.json()["latest"] == {"env": {"temperature": 21.5}}
