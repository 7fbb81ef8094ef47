"""Notification channels: vendor bodies and signatures, real HTTP delivery, retries, email,
in-site messages and recipients by user, role and department."""

import base64
import hashlib
import hmac
import json
import urllib.parse

import pytest
from django.contrib.auth.models import Group
from django.core import mail

from webapp.rules import notify
from webapp.rules.models import Notification, NotificationChannel
from webapp.system.models import Department

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("commit_hooks")]


def test_webhook_signature():
    """The webhook signature is HMAC-SHA256 over "<timestamp>.<body>", hex, with a prefix."""
    request = notify.webhook_request("http://x/h", "k3y", {"a": 1}, now_ms=1700000000000)
    expected = hmac.new(b"k3y", b'1700000000000.{"a":1}', hashlib.sha256).hexdigest()
    assert request.headers["X-ThingLinks-Signature"] == f"sha256={expected}"
    assert request.headers["X-ThingLinks-Timestamp"] == "1700000000000"
    assert "X-ThingLinks-Signature" not in notify.webhook_request("http://x", "", {}).headers


def test_dingtalk_wecom_feishu_bodies_and_signatures():
    """Each robot gets its documented JSON body and signature."""
    ding = notify.dingtalk_request("https://oapi.dingtalk.com/robot/send?access_token=T",
                                   "SECxyz", "Hot", "dev-1 is 35", now_ms=1700000000000)
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(ding.url).query)
    digest = hmac.new(b"SECxyz", b"1700000000000\nSECxyz", hashlib.sha256).digest()
    assert query["timestamp"] == ["1700000000000"] and query["access_token"] == ["T"]
    assert query["sign"] == [base64.b64encode(digest).decode()]
    assert json.loads(ding.body)["msgtype"] == "markdown"
    assert json.loads(ding.body)["markdown"]["title"] == "Hot"

    wecom = json.loads(notify.wecom_request("https://qyapi/x?key=K", "Hot", "body").body)
    assert wecom == {"msgtype": "markdown", "markdown": {"content": "**Hot**\nbody"}}

    feishu = json.loads(notify.feishu_request("https://open.feishu.cn/h", "fs", "Hot", "b",
                                              now_s=1700000000).body)
    key = b"1700000000\nfs"
    assert feishu["sign"] == base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()
                                              ).decode()
    assert feishu["timestamp"] == "1700000000" and feishu["msg_type"] == "text"
    assert feishu["content"]["text"] == "Hot\nb"


def channel(api, **body):
    response = api.post("/api/v1/notification-channels/", body, format="json")
    assert response.status_code == 201, response.json()
    return response.json()


RULE = {"name": "hot", "trigger": {"type": "property", "product": "thermo", "service": "env",
                                   "property": "temperature"},
        "condition": {"op": ">", "value": 30}}


def test_alarm_notification_through_signed_webhook_and_robots(thermo, feed, receiver):
    """A rule's notify actions reach a signed webhook and the three robots over real HTTP."""
    receiver.reply = {"errcode": 0, "code": 0}
    hook = channel(thermo, name="hook", channel_type="webhook", secret="whsec",
                   config={"url": receiver.url + "/hook"})
    assert hook["has_secret"] is True and "secret" not in hook
    assert "whsec" not in NotificationChannel.objects.get(pk=hook["id"]).secret_encrypted
    for kind in ("dingtalk", "wecom", "feishu"):
        channel(thermo, name=kind, channel_type=kind, secret="robot-secret",
                config={"url": f"{receiver.url}/{kind}?access_token=t"},
                title_template="[{{severity}}] {{alarm.name}}",
                body_template="{{device}}: {{message}}")
    thermo.post("/api/v1/rules/", {**RULE, "actions": [
        {"type": "alarm", "severity": "critical", "message": "{{value}} C"},
        *[{"type": "notify", "channel": name} for name in ("hook", "dingtalk", "wecom",
                                                             "feishu")]]}, format="json")
    feed.data(temperature=50)
    by_path = {r["path"].split("?")[0]: r for r in receiver.requests}
    assert set(by_path) == {"/hook", "/dingtalk", "/wecom", "/feishu"}
    sent = by_path["/hook"]
    ts = sent["headers"]["X-ThingLinks-Timestamp"]
    expected = hmac.new(b"whsec", ts.encode() + b"." + sent["body"], hashlib.sha256).hexdigest()
    assert sent["headers"]["X-ThingLinks-Signature"] == f"sha256={expected}"
    assert json.loads(sent["body"])["data"]["alarm"]["severity"] == "critical"
    assert "sign=" in by_path["/dingtalk"]["path"]
    ding = json.loads(by_path["/dingtalk"]["body"])
    assert ding["markdown"]["title"] == "[critical] hot"
    assert "dev-1: 50 C" in ding["markdown"]["text"]
    assert json.loads(by_path["/wecom"]["body"])["markdown"]["content"].startswith(
        "**[critical] hot**")
    assert json.loads(by_path["/feishu"]["body"])["sign"]
    assert set(Notification.objects.values_list("status", flat=True)) == {"sent"}


def test_refusals_are_retried_then_marked_failed(thermo, receiver):
    """A robot's error code is a failure: retried max_retries times, then failed."""
    receiver.reply = {"errcode": 310000, "errmsg": "sign not match"}
    ding = channel(thermo, name="ding", channel_type="dingtalk", max_retries=2,
                   config={"url": receiver.url + "/robot"})
    notifications = thermo.post(f"/api/v1/notification-channels/{ding['id']}/test/").json()
    assert len(receiver.requests) == 3
    assert notifications[0]["status"] == "failed"
    stored = Notification.objects.get()
    assert stored.attempts == 3 and stored.last_error == "DeliveryError: errcode=310000"
    receiver.status = 500
    hook = channel(thermo, name="hook", channel_type="webhook", max_retries=0,
                   config={"url": receiver.url + "/down"})
    result = thermo.post(f"/api/v1/notification-channels/{hook['id']}/test/").json()
    assert result[0]["status"] == "failed" and "HTTP 500" in result[0]["last_error"]


def test_email_and_in_site_recipients_by_user_role_and_department(thermo, feed, settings,
                                                                  django_user_model):
    """Email goes to the channel's users, role members and department members."""
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    ops = Group.objects.create(name="ops")
    site = Department.objects.create(name="Site A")
    alice = django_user_model.objects.create_user("alice", "alice@example.com", "Pw-12345-ab!")
    bob = django_user_model.objects.create_user("bob", "bob@example.com", "Pw-12345-ab!")
    carol = django_user_model.objects.create_user("carol", "carol@example.com", "Pw-12345-ab!")
    django_user_model.objects.create_user("dave", "dave@example.com", "Pw-12345-ab!")
    bob.groups.add(ops)
    carol.department = site
    carol.save()
    channel(thermo, name="mail", channel_type="email", users=[alice.pk], roles=["ops"],
            departments=[site.pk], emails=["noc@example.com"],
            title_template="Alarm {{alarm.name}} on {{device}}")
    channel(thermo, name="inbox", channel_type="insite", users=[alice.pk, bob.pk])
    thermo.post("/api/v1/rules/", {**RULE, "actions": [
        {"type": "alarm", "severity": "minor"}, {"type": "notify", "channel": "mail"},
        {"type": "notify", "channel": "inbox"}]}, format="json")
    feed.data(temperature=31)
    assert len(mail.outbox) == 1
    assert mail.outbox[0].subject == "Alarm hot on dev-1"
    assert sorted(mail.outbox[0].to) == ["alice@example.com", "bob@example.com",
                                         "carol@example.com", "noc@example.com"]
    inbox = Notification.objects.filter(channel_type="insite")
    assert sorted(inbox.values_list("user__username", flat=True)) == ["alice", "bob"]
    thermo.force_authenticate(alice)
    mine = thermo.get("/api/v1/notifications/", {"mine": "true"}).json()
    assert mine["count"] == 1 and mine["results"][0]["title"] == "[minor] hot"
    marked = thermo.post("/api/v1/notifications/mark-read/",
                         {"ids": [mine["results"][0]["id"]]}, format="json").json()
    assert marked == {"updated": 1}
    assert thermo.get("/api/v1/notifications/").status_code == 403  # not everyone's
