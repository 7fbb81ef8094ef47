"""H8 and L10: what a delivery tells the user. The sink and channel test endpoints run the
delivery in a Celery worker (the request returns 202 before anything is sent) and report what
failed in generic words, never the receiver's body or a database's message (which gave
error-based reads); DingTalk/WeCom/Feishu robot URL tokens are stored encrypted and masked in
the API, the deliveries and the operation log."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.conftest import require_service
from tests.security.scoped_operator import jwt_client
from tests.system.conftest import Org
from webapp.rules.models import Notification, NotificationChannel, Sink

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("commit_hooks")]

OPERATOR = ("rules.view_sink", "rules.add_sink", "rules.change_sink",
            "rules.view_notificationchannel", "rules.add_notificationchannel",
            "rules.change_notificationchannel", "rules.view_notification")
LEAK = "SECRET-FROM-THE-RECEIVER"


@pytest.fixture
def operator(redis_prefix, settings):
    """Department A's operator; the local receiver's network allowed by the administrator."""
    settings.OUTBOUND_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    org = Org()
    return jwt_client(org.user("olga", org.a, OPERATOR, scope="department_and_below"))


@pytest.fixture
def queued(monkeypatch):
    """The Celery tasks the request sent, run afterwards as a worker would."""
    from webapp.rules import tasks

    sent: list[tuple] = []
    monkeypatch.setattr(tasks.try_sink, "delay", lambda *args: sent.append(
        (tasks.try_sink, args)))
    monkeypatch.setattr(tasks.deliver_notification, "delay", lambda *args: sent.append(
        (tasks.deliver_notification, args)))

    def run() -> None:
        while sent:
            task, args = sent.pop(0)
            task(*args)

    return run


def test_sink_test_runs_in_a_worker_and_does_not_echo_the_body(operator, receiver, queued):
    """POST test/ answers 202 at once; the worker's outcome (GET ?task=) says "HTTP 500",
    not what the receiver answered, and so do the sink's health and the dead letters."""
    receiver.status = 500
    receiver.reply = {"detail": LEAK}
    created = operator.post("/api/v1/sinks/", {
        "name": "http", "sink_type": "http", "config": {"url": receiver.url + "/in"}},
        format="json").json()
    started = operator.post(f"/api/v1/sinks/{created['id']}/test/", {}, format="json")
    assert started.status_code == 202
    assert started.json()["status"] == "pending" and receiver.requests == []
    task = started.json()["task"]
    queued()
    assert len(receiver.requests) == 1
    outcome = operator.get(f"/api/v1/sinks/{created['id']}/test/?task={task}")
    assert outcome.json() == {"task": task, "status": "done", "ok": False,
                              "error": "HTTP 500"}
    shown = operator.get(f"/api/v1/sinks/{created['id']}/").json()
    assert shown["last_error"] == "HTTP 500" and LEAK not in json.dumps(shown)
    assert operator.get(f"/api/v1/sinks/{created['id']}/test/?task={uuid.uuid4().hex}"
                        ).json()["status"] == "unknown"


def test_channel_test_runs_in_a_worker_and_does_not_echo_the_body(operator, receiver, queued):
    """The channel test: 202 with the pending delivery; its last error is generic."""
    receiver.status = 502
    receiver.reply = {"errmsg": LEAK}
    channel = operator.post("/api/v1/notification-channels/", {
        "name": "hook", "channel_type": "webhook", "max_retries": 0,
        "config": {"url": receiver.url + "/hook"}}, format="json").json()
    started = operator.post(f"/api/v1/notification-channels/{channel['id']}/test/")
    assert started.status_code == 202
    assert [n["status"] for n in started.json()] == ["pending"] and receiver.requests == []
    queued()
    delivery = operator.get(f"/api/v1/notifications/{started.json()[0]['id']}/").json()
    assert delivery["status"] == "failed" and "HTTP 502" in delivery["last_error"]
    assert LEAK not in json.dumps(delivery)

    receiver.status = 200  # a robot's own error: its code, not its message
    ding = operator.post("/api/v1/notification-channels/", {
        "name": "ding", "channel_type": "dingtalk", "max_retries": 0,
        "config": {"url": receiver.url + "/robot/send?access_token=abc"}}, format="json").json()
    receiver.reply = {"errcode": 310000, "errmsg": LEAK}
    started = operator.post(f"/api/v1/notification-channels/{ding['id']}/test/")
    queued()
    delivery = operator.get(f"/api/v1/notifications/{started.json()[0]['id']}/").json()
    assert delivery["last_error"].endswith("errcode=310000") and LEAK not in json.dumps(delivery)


def test_database_errors_are_not_echoed(operator, queued):
    """A PostgreSQL error quoting the value it refused (the review's error-based read) is
    reported by its SQLSTATE only."""
    require_service("PostgreSQL", "127.0.0.1", 5432)
    import psycopg

    table = f"sink_{uuid.uuid4().hex[:8]}"
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", autocommit=True) as db:
        db.execute(f"CREATE TABLE {table} (n INTEGER)")
        try:
            created = operator.post("/api/v1/sinks/", {
                "name": "pg", "sink_type": "postgresql",
                "config": {"url": "postgres://postgres@127.0.0.1:5432/test",
                           "statement": f"INSERT INTO {table} (n) VALUES ({{{{device}}}})"}},  # noqa: S608
                format="json")
            assert created.status_code == 201, created.json()
            started = operator.post(f"/api/v1/sinks/{created.json()['id']}/test/",
                                    {"message": {"device": LEAK}}, format="json")
            queued()
            outcome = operator.get(f"/api/v1/sinks/{created.json()['id']}/test/"
                                   f"?task={started.json()['task']}").json()
        finally:
            db.execute(f"DROP TABLE IF EXISTS {table}")
    assert outcome["error"] == "INSERT failed: database error (SQLSTATE 22P02)", outcome
    assert LEAK not in Sink.objects.get(name="pg").last_error


def test_robot_url_token_is_encrypted_and_masked(operator, receiver, queued):
    """L10: the DingTalk access_token is neither stored in the URL nor shown (API, deliveries,
    operation log); the robot still gets it; a masked URL keeps it only for the same URL."""
    from webapp.system.models import OperationLog

    token = "tok" + uuid.uuid4().hex
    receiver.reply = {"errcode": 0}
    created = operator.post("/api/v1/notification-channels/", {
        "name": "ding", "channel_type": "dingtalk",
        "config": {"url": f"{receiver.url}/robot/send?access_token={token}"}}, format="json")
    assert created.status_code == 201, created.json()
    shown = created.json()
    assert shown["config"] == {"url": f"{receiver.url}/robot/send?access_token=********"}
    stored = NotificationChannel.objects.get(pk=shown["id"])
    assert token not in json.dumps(stored.config)

    url = f"/api/v1/notification-channels/{shown['id']}/"
    kept = operator.patch(url, {"config": shown["config"], "enabled": True}, format="json")
    assert kept.status_code == 200 and token not in json.dumps(kept.json())
    operator.post(url + "test/")
    queued()
    assert receiver.requests[-1]["path"] == f"/robot/send?access_token={token}"
    delivery = Notification.objects.get()
    assert delivery.status == "sent" and token not in json.dumps(delivery.recipients)
    assert token not in json.dumps(operator.get("/api/v1/notifications/").json())

    moved = operator.patch(url, {"config": {
        "url": "https://8.8.8.8/robot/send?access_token=********"}}, format="json")
    assert moved.status_code == 400  # elsewhere, the stored token is not sent along
    logged = json.dumps(list(OperationLog.objects.values("before", "after")))
    assert "ding" in logged and token not in logged


def test_token_saved_before_the_fix_is_masked_and_sealed(operator, receiver):
    """A channel saved with the token in its URL: masked in the API at once, moved into the
    encrypted field by the next save."""
    token = "old" + uuid.uuid4().hex
    channel = NotificationChannel.objects.create(
        name="wecom", channel_type="wecom", department=None,
        config={"url": f"{receiver.url}/cgi-bin/webhook/send?key={token}"})
    from webapp.rules import actions, secrets

    assert token not in json.dumps(secrets.shown_channel_config(channel))
    actions.save_channel(acting_user=None, channel=channel,
                         data={"config": secrets.shown_channel_config(channel)})
    channel.refresh_from_db()
    assert token not in json.dumps(channel.config)
    assert secrets.channel_url(channel).endswith(f"key={token}")


def test_robot_url_token_follows_a_key_rotation(redis_prefix, settings, monkeypatch):
    """`manage.py rotate_secrets` re-encrypts the stored URL token with the new key."""
    from django.core.management import call_command

    from edge.crypto import new_secret_key
    from webapp.rules import actions, secrets

    key_a = settings.SECRET_KEY
    channel = actions.save_channel(acting_user=None, channel=None, data={
        "name": "ding", "channel_type": "dingtalk",
        "config": {"url": "https://8.8.8.8/robot/send?access_token=rotate-me"}})
    key_b = new_secret_key()
    monkeypatch.setenv("DJANGO_SECRET_KEY", key_b)
    settings.SECRET_KEY = key_b
    call_command("rotate_secrets", f"--old-key={key_a}", "--no-republish")
    channel.refresh_from_db()
    assert secrets.channel_url(channel).endswith("access_token=rotate-me")
