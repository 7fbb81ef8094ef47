"""Second review: a `topic` sink republishes on the platform's own broker, as a client would;
the rule `publish` action may only name topics of devices in the user's scope, but a topic
sink named any topic. An operator of A made a sink on `/v1/devices/<B's device>/command`
(or `…/topo/otaCommand` with a download link of their own) and B's device got it from the
platform. A topic sink now follows the `publish` action's rule: a device topic must be one of
a device in scope (or `{{device}}`, the device that fired), and only users who see all data
may write a template that could render into a device topic."""

from __future__ import annotations

import json
import time

import pytest

from tests.rules.test_scope import World
from tests.security.rbac import own_cache_prefix  # noqa: F401  (fixtures)
from tests.security.scoped_operator import jwt_client
from tests.system.conftest import Org, make_device
from webapp.core.redis import get_redis, keys

pytestmark = pytest.mark.django_db

FORGED = {"msgType": "command", "service": "env", "cmd": "reboot", "paras": {}}


@pytest.fixture
def world(db, redis_prefix, settings):
    settings.CELERY_TASK_ALWAYS_EAGER = True
    world = World(Org())
    make_device("dev-a", world.product["a"], world.org.a)
    make_device("dev-b", world.product["b"], world.org.b)
    get_redis().hset(keys().nodes, "n1", json.dumps({"ts": int(time.time() * 1000)}))
    return world


def _sink(client, topic: str):
    return client.post("/api/v1/sinks/", {
        "name": f"to {topic}", "sink_type": "topic", "config": {"topic": topic},
        "payload_template": FORGED}, format="json")


@pytest.mark.parametrize("topic", ["/v1/devices/dev-b/command",
                                   "/v1/devices/dev-b/topo/otaCommand",
                                   "/v1/devices/{{values.target}}/command",
                                   "{{values.topic}}"])
def test_a_topic_sink_cannot_reach_another_departments_device(world, topic):
    client = jwt_client(world.alice)
    refused = _sink(client, topic)
    assert refused.status_code == 400, refused.content
    from webapp.rules.models import Sink

    assert not Sink.objects.filter(name=f"to {topic}").exists()


def test_an_existing_topic_sink_cannot_be_pointed_at_another_device(world):
    client = jwt_client(world.alice)
    created = _sink(client, "alerts/{{device}}")
    assert created.status_code == 201, created.content
    moved = client.patch(f"/api/v1/sinks/{created.json()['id']}/", {
        "config": {"topic": "/v1/devices/dev-b/command"}}, format="json")
    assert moved.status_code == 400, moved.content
    tested = client.post(f"/api/v1/sinks/{created.json()['id']}/test/", {}, format="json")
    assert tested.status_code == 202, tested.content
    sent = [entry[1][b"topic"] for entry in get_redis().xrange(keys().downlink("n1"))]
    assert b"/v1/devices/dev-b/command" not in sent


def test_topic_sinks_within_the_scope_still_work(world):
    client = jwt_client(world.alice)
    for topic in ("alerts/{{device}}", "/v1/devices/dev-a/command",
                  "/v1/devices/{{device}}/shadow/desired"):
        assert _sink(client, topic).status_code == 201, topic


def test_the_admin_sink_form_refuses_another_departments_device_topic(world, client):
    from tests.rules.test_scope import PERMS
    from tests.system.conftest import PASSWORD
    from webapp.rules.models import Sink

    world.org.user("sinker", world.org.a, PERMS, scope="department", staff=True)
    assert client.login(username="sinker", password=PASSWORD)
    page = client.post("/admin/rules/sink/add/", {
        "name": "forged", "sink_type": "topic", "enabled": "on",
        "department": world.org.a.pk, "config": json.dumps(
            {"topic": "/v1/devices/dev-b/command"}),
        "payload_template": json.dumps(FORGED), "max_retries": 0, "backoff": 5})
    assert page.status_code == 200
    assert "there is no device &#x27;dev-b&#x27; within your data scope" in \
        page.content.decode()
    assert not Sink.objects.filter(name="forged").exists()
