"""H8: sinks, notification channels and webhook actions reach no internal address. A scoped
operator (who makes sinks and channels by default) is refused, when saving and again when a
message is delivered, a destination that is loopback, private, link-local… (after resolving
the name), and the platform's own Redis and database even when an administrator allowed
127.0.0.0/8; a redirect to an internal address is not followed."""

from __future__ import annotations

import json
import socket
import urllib.parse

import pytest
from django.db import connection

from tests.conftest import require_service
from tests.rules.conftest import Receiver
from tests.security.scoped_operator import jwt_client
from tests.system.conftest import Org, make_device, make_product
from webapp.rules.models import Notification, Rule, Sink

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("commit_hooks")]

OPERATOR = ("rules.view_sink", "rules.add_sink", "rules.change_sink",
            "rules.view_notificationchannel", "rules.add_notificationchannel",
            "rules.change_notificationchannel", "rules.view_notification",
            "rules.view_rule", "rules.add_rule", "rules.change_rule",
            "products.view_product", "devices.view_device")


@pytest.fixture
def org(redis_prefix, settings):
    """Departments A and B; product `thermo` of A with `dev-1`; nothing allowed."""
    settings.OUTBOUND_ALLOWED_NETWORKS = []
    org = Org()
    make_device("dev-1", make_product("thermo", org.a), org.a)
    return org


@pytest.fixture
def world(org):
    """A JWT client of department A's operator (data scope: A and below); the test
    endpoints' Celery task runs inline."""
    from config.celery import app

    operator = org.user("olga", org.a, OPERATOR, scope="department_and_below")
    eager = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield jwt_client(operator)
    app.conf.task_always_eager = eager


def refused(response, *words):
    body = json.dumps(response.json())
    assert response.status_code == 400, body
    assert all(word in body for word in words), body


def test_http_sink_to_loopback_is_refused_when_saved_and_when_delivered(org, world,
                                                                        receiver):
    """The review's exploit: an HTTP sink at 127.0.0.1 — refused with the reason; one saved
    before the fix (straight in the database) is refused at delivery: nothing is sent."""
    response = world.post("/api/v1/sinks/", {
        "name": "internal", "sink_type": "http", "config": {"url": receiver.url + "/in"}},
        format="json")
    refused(response, "127.0.0.1", "loopback", "OUTBOUND_ALLOWED_NETWORKS")
    assert not Sink.objects.filter(name="internal").exists()

    old = Sink.objects.create(name="old", sink_type="http", department=org.a,
                              config={"url": receiver.url + "/in"})
    tested = world.post(f"/api/v1/sinks/{old.pk}/test/", {}, format="json")
    assert tested.status_code == 202
    assert tested.json()["ok"] is False and "loopback" in tested.json()["error"]
    assert receiver.requests == []


def test_name_resolving_to_loopback_is_refused(world, receiver):
    """'localhost' (and the other spellings of 127.0.0.1) are refused after resolving."""
    port = receiver.server.server_address[1]
    for host in ("localhost", "127.1", "2130706433", "[::ffff:127.0.0.1]", "0.0.0.0"):
        response = world.post("/api/v1/sinks/", {
            "name": "by-name", "sink_type": "http",
            "config": {"url": f"http://{host}:{port}/"}}, format="json")
        refused(response)
    assert receiver.requests == []


@pytest.mark.parametrize(("url", "kind"), [
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://10.0.0.1/", "private"),
    ("http://192.168.1.1/", "private"),
    ("http://100.64.0.1/", "shared (CGNAT)"),
    ("http://[fd00::1]/", "unique-local"),
    ("http://[::1]/", "loopback"),
    ("http://224.0.0.1/", "multicast"),
    ("http://[2002:7f00:1::]/", "loopback"),  # 6to4 of 127.0.0.1
])
def test_internal_addresses_are_refused(world, url, kind):
    """Every kind of non-public address, with the kind named in the reason."""
    refused(world.post("/api/v1/sinks/", {"name": "x", "sink_type": "http",
                                          "config": {"url": url}}, format="json"), kind)


def test_other_sink_types_and_unix_sockets_are_refused(world):
    """MQTT, RabbitMQ, Redis, SQL, Kafka and RocketMQ sinks: the same check; Unix sockets
    never; a RabbitMQ URL cannot switch kombu to another transport (redis://)."""
    bodies = [
        {"sink_type": "mqtt", "config": {"host": "127.0.0.1", "topic": "t"}},
        {"sink_type": "rabbitmq", "config": {"url": "amqp://guest@127.0.0.1//", "queue": "q"}},
        {"sink_type": "rabbitmq", "config": {"url": "redis://10.1.1.1:6379//", "queue": "q"}},
        {"sink_type": "redis", "config": {"url": "redis://10.0.0.7:6379/0", "key": "k"}},
        {"sink_type": "redis", "config": {"url": "unix:///var/run/redis.sock", "key": "k"}},
        {"sink_type": "postgresql", "config": {
            "url": "postgres://postgres@192.168.0.9/db",
            "statement": "INSERT INTO t (a) VALUES ({{device}})"}},
        {"sink_type": "kafka", "config": {"bootstrap_servers": "8.8.8.8:9092,127.0.0.1:9092",
                                          "topic": "t"}},
        {"sink_type": "rocketmq", "config": {"endpoint": "http://172.16.0.1:8080",
                                             "topic": "t"}},
        {"sink_type": "rocketmq", "config": {"mode": "grpc", "endpoint": "127.0.0.1:8081",
                                             "topic": "t"}},
    ]
    for body in bodies:
        refused(world.post("/api/v1/sinks/", {"name": "x", **body}, format="json"))


def test_channels_and_webhook_actions_are_refused(world, receiver):
    """A webhook or robot channel, and a rule's webhook action, at an internal address."""
    for kind in ("webhook", "dingtalk", "wecom", "feishu"):
        refused(world.post("/api/v1/notification-channels/", {
            "name": kind, "channel_type": kind, "config": {"url": receiver.url + "/x"}},
            format="json"), "loopback")
    rule = {"name": "hook", "trigger": {"type": "property", "product": "thermo",
                                        "service": "env", "property": "temperature"},
            "condition": {"op": ">", "value": 30},
            "actions": [{"type": "webhook", "url": receiver.url + "/hook"}]}
    refused(world.post("/api/v1/rules/", rule, format="json"), "webhook", "loopback")
    assert not Rule.objects.exists()


def test_webhook_action_rendered_to_an_internal_address_is_not_sent(world, receiver):
    """A URL whose host is a template is checked when it is rendered, before sending."""
    from webapp.rules.tasks import deliver_notification

    notification = Notification.objects.create(
        channel_type="webhook", recipients=["x"], target={
            "url": receiver.url + "/hook", "action": -1, "payload": {}})
    deliver_notification(notification.pk)
    notification.refresh_from_db()
    assert "loopback" in notification.last_error and receiver.requests == []


def test_redirect_to_an_internal_address_is_not_followed(world, settings):
    """Even with the receiver's address allowed, its 302 to another internal address is the
    answer (a failure), not a second request."""
    inside = Receiver(host="127.0.0.2")
    outside = Receiver()
    try:
        settings.OUTBOUND_ALLOWED_NETWORKS = ["127.0.0.1/32"]
        outside.status = 302
        outside.headers = {"Location": inside.url + "/secret"}
        created = world.post("/api/v1/sinks/", {
            "name": "redirects", "sink_type": "http", "config": {"url": outside.url + "/in"}},
            format="json")
        assert created.status_code == 201, created.json()
        tested = world.post(f"/api/v1/sinks/{created.json()['id']}/test/", {}, format="json")
        assert tested.status_code == 202
        assert (tested.json()["ok"], tested.json()["error"]) == (False, "HTTP 302")
        assert len(outside.requests) == 1 and inside.requests == []
    finally:
        inside.close()
        outside.close()


def test_platform_redis_is_refused_even_when_allowed(world, settings):
    """The review's chain 1: a Redis sink at the platform's own REDIS_URL (here with
    127.0.0.0/8 allowed), spelled any way, is refused; one saved before the fix writes
    nothing to the firings list at delivery."""
    from webapp.rules import sinks
    from webapp.rules.keys import rule_keys

    settings.OUTBOUND_ALLOWED_NETWORKS = ["127.0.0.0/8", "::1/128"]
    platform = settings.REDIS_URL
    spellings = [platform]
    parts = urllib.parse.urlsplit(platform)
    if parts.hostname:  # a TCP Redis: the same server by another name or address
        port = parts.port or 6379
        spellings += [f"redis://localhost:{port}/0", f"redis://127.0.0.1:{port}/5",
                      f"redis://{socket.gethostname()}:{port}/0"]
    for url in spellings:
        refused(world.post("/api/v1/sinks/", {
            "name": "bus", "sink_type": "redis",
            "config": {"url": url, "key": "tl:rules:firings", "mode": "list"}},
            format="json"))
    old = Sink.objects.create(name="bus", sink_type="redis", config={
        "url": platform, "key": rule_keys().firings, "mode": "list"},
        payload_template={"rule": 1, "kind": "fired", "message": {"device": "dev-1"}})
    with pytest.raises(sinks.SinkError):
        sinks.deliver(old, {"device": "dev-1"}, {"device": "dev-1"})
    from webapp.core.redis import get_redis

    assert get_redis().llen(rule_keys().firings) == 0


@pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")
def test_platform_database_is_refused_even_when_allowed(world, settings):
    """The review's chain 2: a PostgreSQL sink at the platform's own database (as in the
    README's production example), by any name of its host, is refused with 127.0.0.0/8
    allowed; another database on that server is a destination like any other (a sink
    writes rows of its own tables, never system tables); the exploit's INSERT … SELECT is
    refused wherever it points."""
    settings.OUTBOUND_ALLOWED_NETWORKS = ["127.0.0.0/8", "::1/128"]
    settings.DATABASES = {**settings.DATABASES, "platform": {
        "ENGINE": "django.db.backends.postgresql", "HOST": "127.0.0.1", "PORT": "5432",
        "NAME": "thinglinks", "USER": "postgres"}}
    insert = "INSERT INTO readings (device) VALUES ({{device}})"
    urls = ["postgres://postgres@127.0.0.1:5432/thinglinks",
            "postgres://postgres@localhost/thinglinks",
            "postgres://postgres@localhost/THINGLINKS",
            "postgres://postgres@localhost/"]
    if connection.vendor == "postgresql":  # the test database itself (CI)
        urls.append(f"postgres://postgres@localhost/{connection.settings_dict['NAME']}")
    for url in urls:
        refused(world.post("/api/v1/sinks/", {
            "name": "db", "sink_type": "postgresql",
            "config": {"url": url, "statement": insert}}, format="json"), "own database")
    other = world.post("/api/v1/sinks/", {
        "name": "other-db", "sink_type": "postgresql",
        "config": {"url": "postgres://postgres@127.0.0.1:5432/sinks", "statement": insert}},
        format="json")
    assert other.status_code == 201, other.json()
    exploit = ("INSERT INTO system_user_roles (user_id, role_id) SELECT u.id, r.id FROM "
               "system_user u, system_role r WHERE u.username={{device}} AND "
               "r.code='administrator'")
    refused(world.post("/api/v1/sinks/", {
        "name": "db", "sink_type": "postgresql",
        "config": {"url": "postgres://postgres@8.8.8.8/x", "statement": exploit}},
        format="json"), "no sub-query")


def test_kafka_brokers_advertised_at_internal_addresses_are_not_reached(settings):
    """kafka-python follows the brokers a bootstrap server advertises: each address it
    would connect to passes the check (one at 127.0.0.1 is dropped)."""
    pytest.importorskip("kafka")
    from kafka.net.inet import KafkaNetSocket

    from webapp.rules.sinks.kafka import guard_broker_connections

    settings.OUTBOUND_ALLOWED_NETWORKS = []
    guard_broker_connections()
    assert KafkaNetSocket().dns_lookup("127.0.0.1", 9092) == []
    assert KafkaNetSocket().dns_lookup("localhost", 9092) == []
    assert [info[4][0] for info in KafkaNetSocket().dns_lookup("8.8.8.8", 9092)] == \
        ["8.8.8.8"]


def test_allowed_networks_reach_local_services(world, settings):
    """What an administrator allows is reached (a machine's PostgreSQL on 127.0.0.1 that is
    not the platform's database)."""
    require_service("PostgreSQL", "127.0.0.1", 5432)
    settings.OUTBOUND_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    created = world.post("/api/v1/sinks/", {
        "name": "pg", "sink_type": "postgresql",
        "config": {"url": "postgres://postgres@127.0.0.1:5432/test",
                   "statement": "INSERT INTO t (a) VALUES ({{device}})"}}, format="json")
    assert created.status_code == 201, created.json()
