"""Third review: redelivering a dead letter delivered in the web process, holding a request
thread and a database connection up to a sink's timeout (~30 s): a few requests tied up
the web workers. It is now queued for a Celery worker like a sink test: 202 with a task,
its outcome read with GET; a second POST while one is pending does not send twice."""

from __future__ import annotations

import pytest

from tests.rules.conftest import Receiver
from tests.security.scoped_operator import jwt_client
from tests.system.conftest import Org
from webapp.rules.models import DeadLetter, Sink

pytestmark = pytest.mark.django_db

OPERATOR = ("rules.view_deadletter", "rules.change_deadletter", "rules.view_sink")


@pytest.fixture
def letter(redis_prefix, settings):
    settings.OUTBOUND_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    receiver = Receiver()
    org = Org()
    sink = Sink.objects.create(name="hook", sink_type="http", department=org.a,
                               config={"url": receiver.url + "/in"})
    letter = DeadLetter.objects.create(sink=sink, message={"device": "dev-1", "values": {}},
                                       payload="{}", error="HTTP 503", attempts=3)
    client = jwt_client(org.user("olga", org.a, OPERATOR, scope="department"))
    yield client, letter, receiver
    receiver.close()


def test_redelivery_is_queued_not_delivered_in_the_web_process(letter, monkeypatch):
    from config.celery import app

    client, letter, receiver = letter
    eager = app.conf.task_always_eager
    app.conf.task_always_eager = False
    try:
        _queued_then_worked(client, letter, receiver, monkeypatch)
    finally:
        app.conf.task_always_eager = eager


def _queued_then_worked(client, letter, receiver, monkeypatch):
    queued = []
    monkeypatch.setattr("webapp.rules.tasks.redeliver_dead_letter.delay",
                        lambda *args: queued.append(args))
    response = client.post(f"/api/v1/dead-letters/{letter.pk}/redeliver/", {}, format="json")
    assert response.status_code == 202, response.content
    token = response.json()["task"]
    assert response.json() == {"task": token, "status": "pending"}
    assert receiver.requests == [] and len(queued) == 1
    again = client.post(f"/api/v1/dead-letters/{letter.pk}/redeliver/", {}, format="json")
    assert again.json()["task"] == token and len(queued) == 1  # not sent twice
    assert client.get(f"/api/v1/dead-letters/{letter.pk}/redeliver/?task={token}").json() \
        == {"task": token, "status": "pending"}

    from webapp.rules.tasks import redeliver_dead_letter

    assert redeliver_dead_letter(*queued[0]) == {"ok": True}  # what the worker does
    assert len(receiver.requests) == 1
    done = client.get(f"/api/v1/dead-letters/{letter.pk}/redeliver/?task={token}").json()
    assert done == {"task": token, "status": "done", "ok": True}
    letter.refresh_from_db()
    assert letter.redelivered
