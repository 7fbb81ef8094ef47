"""Forwarding sinks against the machine's real RabbitMQ, Mosquitto, MariaDB, PostgreSQL and
Redis, a local HTTP server, the internal topic and the log; retries, dead letters, health.
Kafka: its record is checked here, its server when KAFKA_URL is set. RocketMQ (both modes):
tests/rules/test_rocketmq.py."""

import hashlib
import hmac
import json
import logging
import os
import threading
import time
import uuid

import pytest

from tests.conftest import require_service
from webapp.rules import secrets
from webapp.rules.models import DeadLetter, Sink
from webapp.rules.sinks.base import Outgoing
from webapp.rules.sinks.kafka import kafka_record
from webapp.rules.sinks.sql import compile_insert

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("commit_hooks")]

RULE = {"trigger": {"type": "property", "product": "thermo", "service": "env",
                    "property": "temperature"}, "condition": {"op": ">", "value": 30}}


def sink(api, **body):
    response = api.post("/api/v1/sinks/", body, format="json")
    assert response.status_code == 201, response.json()
    return response.json()


def forward_rule(api, sink_name, name="fwd"):
    response = api.post("/api/v1/rules/", {**RULE, "name": name, "actions": [
        {"type": "forward", "sink": sink_name}]}, format="json")
    assert response.status_code == 201, response.json()
    return response.json()["id"]


def test_rabbitmq(thermo, feed):
    """Messages reach a durable RabbitMQ queue; the password is stored encrypted."""
    require_service("RabbitMQ", "127.0.0.1", 5672)
    from kombu import Connection

    queue = f"tl_rules_{uuid.uuid4().hex[:8]}"
    created = sink(thermo, name="amqp", sink_type="rabbitmq",
                   config={"url": "amqp://guest@127.0.0.1:5672//", "queue": queue},
                   credentials={"password": "guest"},
                   payload_template={"device": "{{device}}", "t": "{{value}}"})
    assert created["credential_keys"] == ["password"] and "credentials" not in created
    stored = Sink.objects.get(pk=created["id"])
    assert stored.credentials_encrypted and "guest" not in stored.credentials_encrypted
    assert secrets.sink_credentials(stored) == {"password": "guest"}
    forward_rule(thermo, "amqp")
    feed.data(temperature=35.5)
    with Connection("amqp://guest:guest@127.0.0.1:5672//") as conn:
        channel = conn.channel()
        try:
            message = None
            for _ in range(100):
                message = channel.basic_get(queue, no_ack=True)
                if message is not None:
                    break
                time.sleep(0.1)
            assert message is not None
            assert json.loads(message.body) == {"device": "dev-1", "t": 35.5}
            assert message.properties.get("delivery_mode") == 2
        finally:
            channel.queue_delete(queue)
    assert Sink.objects.get(pk=created["id"]).health == "healthy"


def test_mqtt_external_broker(thermo, feed):
    """Messages are published to Mosquitto on a topic rendered per device."""
    require_service("Mosquitto", "127.0.0.1", 1883)
    import paho.mqtt.client as mqtt

    base = f"tl-rules/{uuid.uuid4().hex[:8]}"
    got: list = []
    subscribed = threading.Event()
    arrived = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.on_subscribe = lambda *a: subscribed.set()
    client.on_message = lambda c, u, m: (got.append((m.topic, m.payload)), arrived.set())
    client.connect("127.0.0.1", 1883)
    client.loop_start()
    try:
        client.subscribe(f"{base}/#", qos=1)
        assert subscribed.wait(5)
        sink(thermo, name="mosq", sink_type="mqtt",
             config={"host": "127.0.0.1", "port": 1883, "topic": base + "/{{device}}",
                     "qos": 1})
        forward_rule(thermo, "mosq")
        feed.data(temperature=40)
        assert arrived.wait(10)
    finally:
        client.loop_stop()
        client.disconnect()
    topic, payload = got[0]
    assert topic == f"{base}/dev-1"
    assert json.loads(payload)["values"] == {"temperature": 40}


def test_mariadb_insert_with_bound_parameters(thermo, feed):
    """An INSERT template writes rows to MariaDB with every value bound."""
    require_service("MariaDB", "127.0.0.1", 3306)
    import pymysql

    table = f"rules_sink_{uuid.uuid4().hex[:8]}"
    db = pymysql.connect(host="127.0.0.1", user="root", password="", database="test",
                         autocommit=True)
    with db.cursor() as cursor:
        cursor.execute(f"CREATE TABLE {table} (device VARCHAR(64), temperature DOUBLE, "
                       "ts BIGINT, note TEXT, raw TEXT)")
    try:
        sink(thermo, name="maria", sink_type="mysql",
             config={"url": "mysql://root@127.0.0.1:3306/test",
                     "statement": f"INSERT INTO {table} (device, temperature, ts, note, raw) "  # noqa: S608
                                  "VALUES ({{device}}, {{value}}, {{ts}}, "
                                  "{{ \"x'); DROP TABLE \" + device }}, {{values}})"})
        forward_rule(thermo, "maria")
        ts = feed.data(temperature=33.25)
        with db.cursor() as cursor:
            cursor.execute(f"SELECT device, temperature, ts, note, raw FROM {table}")  # noqa: S608
            rows = cursor.fetchall()
        assert rows == (("dev-1", 33.25, ts, "x'); DROP TABLE dev-1",
                         '{"temperature":33.25}'),)
    finally:
        with db.cursor() as cursor:
            cursor.execute(f"DROP TABLE IF EXISTS {table}")
        db.close()


def test_postgresql_insert(thermo, feed):
    """The same sink type writes to PostgreSQL."""
    require_service("PostgreSQL", "127.0.0.1", 5432)
    import psycopg

    table = f"rules_sink_{uuid.uuid4().hex[:8]}"
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", autocommit=True) as db:
        db.execute(f"CREATE TABLE {table} (device TEXT, temperature DOUBLE PRECISION, ts BIGINT)")
        try:
            sink(thermo, name="pg", sink_type="postgresql",
                 config={"url": "postgres://postgres@127.0.0.1:5432/test",
                         "statement": f"INSERT INTO {table} (device, temperature, ts) "  # noqa: S608
                                      "VALUES ({{device}}, {{value}}, {{ts}})"})
            forward_rule(thermo, "pg")
            ts = feed.data(temperature=31.0)
            rows = db.execute(f"SELECT device, temperature, ts FROM {table}").fetchall()  # noqa: S608
            assert rows == [("dev-1", 31.0, ts)]
        finally:
            db.execute(f"DROP TABLE IF EXISTS {table}")


@pytest.mark.parametrize("statement", [
    "DELETE FROM t WHERE x = {{device}}",
    "INSERT INTO t (a) VALUES ({{device}}); DROP TABLE t",
    "INSERT INTO t (a) VALUES ('{{device}}')",
    "INSERT INTO t (a) VALUES (1) -- {{device}}",
    "INSERT INTO t (a) VALUES (1)",
])
def test_unsafe_sql_templates_are_refused(statement):
    """Only one INSERT, with placeholders as bound values, is accepted."""
    with pytest.raises(ValueError):
        compile_insert(statement)


def test_redis_stream_and_list(thermo, feed, other_redis):
    """A Redis sink appends to a stream (XADD) or a list (RPUSH). (A Redis server of the
    test's own: the platform's is refused.)"""
    import redis

    stream, queue = "fwd:stream", "fwd:list"
    sink(thermo, name="stream", sink_type="redis", config={"url": other_redis, "key": stream})
    sink(thermo, name="list", sink_type="redis",
         config={"url": other_redis, "key": queue, "mode": "list"},
         payload_template="{{device}}={{value}}")
    thermo.post("/api/v1/rules/", {**RULE, "name": "both", "actions": [
        {"type": "forward", "sink": "stream"}, {"type": "forward", "sink": "list"}]},
        format="json")
    feed.data(temperature=32)
    client = redis.Redis.from_url(other_redis)
    entries = client.xrange(stream)
    assert json.loads(entries[0][1][b"payload"])["device"] == "dev-1"
    assert client.lrange(queue, 0, -1) == [b"dev-1=32"]


def test_http_filter_template_retries_dead_letter_and_redelivery(thermo, feed, receiver):
    """Filtered messages are dropped; failures are retried, dead-lettered, then redelivered."""
    receiver.status = 503
    created = sink(thermo, name="http", sink_type="http", max_retries=2, backoff=0,
                   config={"url": receiver.url + "/in"}, credentials={"secret": "hs"},
                   filter="value >= 40", payload_template={"id": "{{device}}", "v": "{{value}}"})
    rule = forward_rule(thermo, "http")
    feed.data(temperature=35)  # held, but the sink's filter drops it
    assert receiver.requests == []
    feed.data(temperature=45)
    assert len(receiver.requests) == 3  # one try and two retries
    letter = DeadLetter.objects.get()
    assert letter.rule_id == rule and letter.attempts == 3 and "HTTP 503" in letter.error
    assert json.loads(letter.payload) == {"id": "dev-1", "v": 45}
    health = thermo.get(f"/api/v1/sinks/{created['id']}/").json()
    assert health["health"] == "failing" and health["failures"] == 3
    receiver.status = 200
    redelivered = thermo.post(f"/api/v1/dead-letters/{letter.pk}/redeliver/")
    assert redelivered.status_code == 202  # a Celery worker delivers (inline here)
    assert redelivered.json() == {"task": redelivered.json()["task"], "status": "done",
                                  "ok": True}
    outcome = thermo.get(f"/api/v1/dead-letters/{letter.pk}/redeliver/"
                         f"?task={redelivered.json()['task']}")
    assert outcome.json() == redelivered.json()
    letter.refresh_from_db()
    assert letter.redelivered
    last = receiver.requests[-1]
    signature = hmac.new(b"hs", last["headers"]["X-ThingLinks-Timestamp"].encode() + b"." +
                         last["body"], hashlib.sha256).hexdigest()
    assert last["headers"]["X-ThingLinks-Signature"] == f"sha256={signature}"
    healthy = thermo.get(f"/api/v1/sinks/{created['id']}/").json()
    assert healthy["health"] == "healthy" and healthy["failures"] == 0
    tested = thermo.post(f"/api/v1/sinks/{created['id']}/test/", {}, format="json")
    assert tested.status_code == 202 and tested.json()["filtered"] is True
    again = thermo.get(f"/api/v1/sinks/{created['id']}/test/?task={tested.json()['task']}")
    assert again.json() == tested.json()


def test_topic_republish_and_log(thermo, feed, redis_client, redis_prefix, caplog):
    """The topic sink hands the message to one live edge node, which routes it to the other
    nodes' subscribers as any publish (so nobody gets it twice); the log sink logs it."""
    for node in ("n1", "n2"):
        redis_client.hset(f"{redis_prefix}nodes", node,
                          json.dumps({"ts": int(time.time() * 1000)}))
    redis_client.hset(f"{redis_prefix}nodes", "dead", json.dumps({"ts": 1}))
    sink(thermo, name="topic", sink_type="topic", config={"topic": "alerts/{{device}}"})
    sink(thermo, name="log", sink_type="log", config={"level": "warning"})
    thermo.post("/api/v1/rules/", {**RULE, "name": "t", "actions": [
        {"type": "forward", "sink": "topic"}, {"type": "forward", "sink": "log"},
        {"type": "publish", "topic": "hot/{{device}}", "payload": {"t": "{{value}}"}}]},
        format="json")
    with caplog.at_level(logging.WARNING, logger="thinglinks.forward"):
        feed.data(temperature=39)
    entries = [entry for node in ("n1", "n2")
               for entry in redis_client.xrange(f"{redis_prefix}down:{node}")]
    topics = {e[1][b"topic"]: e[1] for e in entries}
    assert len(entries) == 2 and set(topics) == {b"alerts/dev-1", b"hot/dev-1"}
    assert b"dev" not in topics[b"hot/dev-1"]
    assert json.loads(topics[b"hot/dev-1"][b"payload"]) == {"t": 39}
    assert not redis_client.exists(f"{redis_prefix}down:dead")
    assert any("dev-1" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(("body", "fragment"), [
    ({"sink_type": "rabbitmq", "config": {"url": "amqp://guest:guest@h//", "queue": "q"}},
     "password"),
    ({"sink_type": "mqtt", "config": {"topic": "a/#"}}, "wildcard"),
    ({"sink_type": "mysql", "config": {"url": "mysql://root@h/db", "statement": "SELECT 1"}},
     "INSERT"),
    ({"sink_type": "http", "config": {"url": "http://x"}, "filter": "value >"}, "Unexpected"),
])
def test_invalid_sinks_are_refused(thermo, body, fragment):
    """Bad settings, filters and templates are refused when the sink is saved."""
    response = thermo.post("/api/v1/sinks/", {"name": "bad", **body}, format="json")
    assert response.status_code == 400 and fragment in str(response.json()["detail"])


OUTGOING = Outgoing(b'{"t":35}', {"device": "dev-1", "value": 35, "product": "thermo"})


def test_kafka_record():
    """The Kafka record: rendered topic and key, the payload as value, rendered headers."""
    record = kafka_record({"topic": "iot.{{product}}", "key": "{{device}}",
                           "headers": {"source": "thinglinks", "dev": "{{device}}"}}, OUTGOING)
    assert (record.topic, record.key, record.value) == ("iot.thermo", b"dev-1", b'{"t":35}')
    assert record.headers == [("source", b"thinglinks"), ("dev", b"dev-1")]


@pytest.mark.skipif(not os.environ.get("KAFKA_URL"), reason="KAFKA_URL is not set")
def test_kafka_server(thermo, feed):
    """With a Kafka server: the forwarded message can be consumed back."""
    from kafka import KafkaConsumer

    topic = f"tl-rules-{uuid.uuid4().hex[:8]}"
    servers = os.environ["KAFKA_URL"]
    sink(thermo, name="kafka", sink_type="kafka",
         config={"bootstrap_servers": servers, "topic": topic, "key": "{{device}}"})
    forward_rule(thermo, "kafka")
    feed.data(temperature=38)
    consumer = KafkaConsumer(topic, bootstrap_servers=servers.split(","),
                             auto_offset_reset="earliest", consumer_timeout_ms=10_000)
    records = list(consumer)
    consumer.close()
    assert records and records[0].key == b"dev-1"
