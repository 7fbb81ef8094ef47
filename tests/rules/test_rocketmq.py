"""The RocketMQ sink.

gRPC mode (Apache RocketMQ 5): the official client (`rocketmq-python-client`) runs for real,
up to and over a gRPC channel, against `Proxy` below: an in-process gRPC server implementing
the RocketMQ proxy's `apache.rocketmq.v2.MessagingService` (QueryRoute, SendMessage,
Heartbeat, Telemetry, NotifyClientTermination) with the protocol stubs the client ships. It
is not a RocketMQ server (no storage, no consumers): what it proves is what the client puts
on the wire (topic, body, tag, keys, properties, signature) and how the sink reports what a
proxy answers. A real server is used when ROCKETMQ_URL names one (its proxy, host:8081).

HTTP mode (Alibaba Cloud's HTTP access point): the signed request is checked byte for byte;
a real access point is used when ROCKETMQ_HTTP_URL names one."""

import base64
import hashlib
import hmac
import json
import os
import threading
import time
import uuid
from concurrent import futures

import pytest

from tests.edge.redis_server import free_port
from tests.rules.test_sinks import forward_rule
from tests.rules.test_sinks import sink as create_sink
from webapp.rules import sinks
from webapp.rules.models import Sink
from webapp.rules.sinks import rocketmq
from webapp.rules.sinks.base import Outgoing
from webapp.rules.sinks.rocketmq import RocketMessage, rocketmq_message, rocketmq_request

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("commit_hooks"),
              # the client logs with the deprecated Logger.warn
              pytest.mark.filterwarnings("ignore:The 'warn' method is deprecated")]

OUTGOING = Outgoing(b'{"t":35}', {"device": "dev-1", "value": 35, "product": "thermo",
                                  "service": "env"})


class Proxy:
    """A gRPC server speaking the RocketMQ proxy's MessagingService, on 127.0.0.1."""

    def __init__(self, tls=None, port=None) -> None:
        import grpc

        rocketmq.client()  # imported as the sink imports it (its logging set-up replaced)
        from rocketmq.grpc_protocol import service_pb2_grpc

        self.port = port or free_port()
        self.sent: list[tuple[object, dict[str, str]]] = []
        self.routes: list[dict[str, str]] = []
        self.terminated: list[str] = []
        self.topics = {"iot": "ok", "missing": "TOPIC_NOT_FOUND"}
        self.access = ("AK", "SK")
        # Where the route sends producers (default: this server).
        self.advertised = ("127.0.0.1", self.port)
        self.lock = threading.Lock()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        service_pb2_grpc.add_MessagingServiceServicer_to_server(self._servicer(),
                                                                self.server)
        if tls is None:
            self.server.add_insecure_port(f"127.0.0.1:{self.port}")
        else:
            self.server.add_secure_port(f"127.0.0.1:{self.port}", grpc.ssl_server_credentials(
                [(tls.key.read_bytes(), tls.cert.read_bytes())]))
        self.server.start()

    def stop(self) -> None:
        self.server.stop(grace=None)

    def authorized(self, metadata: dict[str, str]) -> bool:
        ak, sk = self.access
        signature = hmac.new(sk.encode(), metadata["x-mq-date-time"].encode(),
                             hashlib.sha1).hexdigest()
        return metadata.get("authorization") == (
            f"MQv2-HMAC-SHA1 Credential={ak}, SignedHeaders=x-mq-date-time, "
            f"Signature={signature}")

    def _servicer(self):
        from rocketmq.grpc_protocol import (
            Code,
            MessageType,
            Permission,
            definition_pb2,
            service_pb2,
            service_pb2_grpc,
        )

        proxy = self

        def status(code: str) -> definition_pb2.Status:
            return definition_pb2.Status(code=Code.Value(code), message=f"{code} (server text)")

        class Servicer(service_pb2_grpc.MessagingServiceServicer):
            def QueryRoute(self, request, context):
                metadata = dict(context.invocation_metadata())
                with proxy.lock:
                    proxy.routes.append(metadata)
                if not proxy.authorized(metadata):
                    return service_pb2.QueryRouteResponse(status=status("UNAUTHORIZED"))
                outcome = proxy.topics.get(request.topic.name, "TOPIC_NOT_FOUND")
                if outcome != "ok":
                    return service_pb2.QueryRouteResponse(status=status(outcome))
                host, port = proxy.advertised
                endpoints = definition_pb2.Endpoints(
                    scheme=definition_pb2.AddressScheme.IPv4,
                    addresses=[definition_pb2.Address(host=host, port=port)])
                queue = definition_pb2.MessageQueue(
                    topic=request.topic, id=0, permission=Permission.READ_WRITE,
                    broker=definition_pb2.Broker(name="broker-a", id=0, endpoints=endpoints),
                    accept_message_types=[MessageType.NORMAL, MessageType.FIFO])
                return service_pb2.QueryRouteResponse(status=status("OK"),
                                                      message_queues=[queue])

            def SendMessage(self, request, context):
                metadata = dict(context.invocation_metadata())
                with proxy.lock:
                    proxy.sent.append((request, metadata))
                if not proxy.authorized(metadata):
                    return service_pb2.SendMessageResponse(status=status("UNAUTHORIZED"))
                message = request.messages[0]
                entry = service_pb2.SendResultEntry(
                    status=status("OK"), message_id=message.system_properties.message_id,
                    offset=len(proxy.sent))
                return service_pb2.SendMessageResponse(status=status("OK"), entries=[entry])

            def Heartbeat(self, request, context):
                return service_pb2.HeartbeatResponse(status=status("OK"))

            def Telemetry(self, request_iterator, context):
                for command in request_iterator:  # the client's settings, accepted as sent
                    if command.HasField("settings"):
                        yield service_pb2.TelemetryCommand(status=status("OK"),
                                                           settings=command.settings)

            def NotifyClientTermination(self, request, context):
                with proxy.lock:
                    proxy.terminated.append(dict(context.invocation_metadata())[
                        "x-mq-client-id"])
                return service_pb2.NotifyClientTerminationResponse(status=status("OK"))

        return Servicer()


@pytest.fixture
def proxy():
    server = Proxy()
    yield server
    sinks.close_all()
    server.stop()


@pytest.fixture(scope="module")
def tls_proxy_certificate(tmp_path_factory):
    """A CA and a server certificate for localhost / 127.0.0.1. gRPC reads its trusted roots
    once per process, from GRPC_DEFAULT_SSL_ROOTS_FILE_PATH when set: every test here that
    opens a TLS channel takes this fixture, so the first one sets it."""
    from tests.edge.tls_material import Authority

    authority = Authority(tmp_path_factory.mktemp("rocketmq-tls"))
    os.environ["GRPC_DEFAULT_SSL_ROOTS_FILE_PATH"] = str(authority.path)
    return authority.issue("localhost", server=True)


def grpc_sink(api, proxy, name="rmq", **config):
    return create_sink(api, name=name, sink_type="rocketmq", max_retries=0, config={
        "mode": "grpc", "endpoint": f"127.0.0.1:{proxy.port}", "topic": "iot",
        "access_key": "AK", **config}, credentials={"secret_key": "SK"})


def test_grpc_message():
    """The gRPC message: rendered topic, tag, keys (the device id by default), properties
    and message group; the payload as the body, byte for byte."""
    config = {"topic": "iot-{{product}}", "tag": "{{service}}",
              "properties": {"source": "thinglinks", "dev": "{{device}}", "empty": "{{none}}"}}
    assert rocketmq_message(config, OUTGOING) == RocketMessage(
        topic="iot-thermo", body=b'{"t":35}', tag="env", keys=("dev-1",),
        properties={"source": "thinglinks", "dev": "dev-1"})
    assert rocketmq_message({"topic": "t", "keys": "{{device}} {{product}}",
                             "message_group": "{{device}}"}, OUTGOING) == RocketMessage(
        topic="t", body=b'{"t":35}', keys=("dev-1", "thermo"), message_group="dev-1")
    assert rocketmq_message({"topic": "t", "keys": ""}, OUTGOING).keys == ()


def test_grpc_sink_sends_through_the_official_client(thermo, feed, proxy):
    """Forwarded messages reach the proxy as the client's SendMessage: topic, body, tag,
    keys, user properties, a normal message, signed with the access key and the encrypted
    secret key; one producer serves both messages and tells the proxy when it ends."""
    created = grpc_sink(thermo, proxy, tag="{{product}}",
                        properties={"source": "thinglinks", "service": "{{service}}"})
    stored = Sink.objects.get(pk=created["id"])
    assert created["credential_keys"] == ["secret_key"]
    assert "SK" not in stored.credentials_encrypted
    forward_rule(thermo, "rmq")
    feed.data(temperature=35.5)
    feed.data(device="dev-2", temperature=36)

    assert len(proxy.sent) == 2
    from rocketmq.grpc_protocol import Encoding, MessageType

    bodies = []
    for (request, metadata), device in zip(proxy.sent, ("dev-1", "dev-2"), strict=True):
        (message,) = request.messages
        assert message.topic.name == "iot"
        assert message.system_properties.tag == "thermo"
        assert list(message.system_properties.keys) == [device]
        assert dict(message.user_properties) == {"source": "thinglinks", "service": "env"}
        assert message.system_properties.message_type == MessageType.NORMAL
        assert message.system_properties.body_encoding == Encoding.IDENTITY
        assert proxy.authorized(metadata)
        bodies.append(json.loads(message.body))
    assert [b["device"] for b in bodies] == ["dev-1", "dev-2"]
    assert bodies[0]["values"] == {"temperature": 35.5}
    clients = {metadata["x-mq-client-id"] for _request, metadata in proxy.sent}
    assert len(clients) == 1  # one producer, reused
    stored.refresh_from_db()
    assert (stored.health, stored.delivered, stored.last_error) == ("healthy", 2, "")

    sinks.drop_driver(stored.pk)  # as when the sink changes, or at exit (close_all)
    assert proxy.terminated == list(clients)


def test_a_proxy_that_goes_away_and_comes_back(thermo, feed, proxy):
    """A send to a proxy that went away fails with the reason and drops the producer; the
    next message, once the proxy is back, starts a new producer and is delivered."""
    created = grpc_sink(thermo, proxy, timeout=2)
    forward_rule(thermo, "rmq")
    feed.data(temperature=35.5)
    proxy.stop()
    feed.data(temperature=36)
    stored = Sink.objects.get(pk=created["id"])
    assert stored.health == "failing", stored.last_error
    assert "cannot connect to the RocketMQ proxy (unavailable)" in stored.last_error
    back = Proxy(port=proxy.port)
    try:
        feed.data(temperature=37)
        stored.refresh_from_db()
        assert (stored.health, stored.delivered) == ("healthy", 2), stored.last_error
        assert [json.loads(r.messages[0].body)["values"]["temperature"]
                for r, _m in back.sent] == [37]
        first, second = (m["x-mq-client-id"] for _r, m in (proxy.sent[0], back.sent[0]))
        assert first != second  # a new producer
    finally:
        sinks.close_all()
        back.stop()


EXITING_WORKER = """
import json, sys
import django
django.setup()
from edge.crypto import encrypt_secret
from webapp.rules import sinks
from webapp.rules.models import Sink

sink = Sink(pk=7, name="rmq", sink_type="rocketmq", config={
    "endpoint": sys.argv[1], "topic": "iot", "access_key": "AK"},
    credentials_encrypted=encrypt_secret(json.dumps({"secret_key": "SK"})))
sinks.deliver(sink, {"device": "dev-9"}, {"device": "dev-9"})
print("sent", flush=True)
"""


@pytest.mark.e2e
def test_a_process_that_exits_closes_its_producer(proxy):
    """A worker process that ends normally shuts its producers down (atexit): the proxy is
    told the client ends. (A Celery prefork child does it on worker_process_shutdown.)"""
    import subprocess
    import sys

    from tests.support.processes import stop_process

    env = {**os.environ, "OUTBOUND_ALLOWED_NETWORKS": "127.0.0.0/8",
           "DJANGO_SETTINGS_MODULE": "config.settings"}
    process = subprocess.Popen([sys.executable, "-c", EXITING_WORKER, f"127.0.0.1:{proxy.port}"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = process.communicate(timeout=60)
    finally:
        stop_process(process)
    assert process.returncode == 0 and out.strip() == b"sent", err.decode()[-2000:]
    assert [json.loads(r.messages[0].body) for r, _m in proxy.sent] == [{"device": "dev-9"}]
    assert proxy.terminated == [proxy.sent[0][1]["x-mq-client-id"]]


@pytest.mark.parametrize(("case", "reason"), [
    ("missing topic", "the topic does not exist on the RocketMQ cluster"),
    ("missing templated topic", "the topic does not exist on the RocketMQ cluster"),
    ("wrong secret", "the access key or secret key was refused"),
    ("no server", "cannot connect to the RocketMQ proxy (unavailable)"),
    ("internal route", "is refused: it is a private address"),
    ("tls to a plain server", "cannot connect to the RocketMQ proxy (unavailable)"),
])
def test_grpc_failures_are_recorded_with_their_reason(thermo, feed, proxy, case, reason,
                                                      tls_proxy_certificate):
    """What the proxy answers (or that nothing answers) is the sink's last error, in
    words, never the server's own text; a route to an internal address is refused."""
    config: dict = {"topic": "missing"} if case == "missing topic" else {}
    if case == "missing templated topic":
        config["topic"] = "iot-{{product}}"  # its route is asked for on the first message
    if case == "wrong secret":
        proxy.access = ("AK", "another")
    if case == "no server":
        config["endpoint"] = f"127.0.0.1:{free_port()}"
    if case == "internal route":
        proxy.advertised = ("10.20.30.40", 8081)
    if case == "tls to a plain server":
        config["tls"] = True
    created = grpc_sink(thermo, proxy, timeout=2, **config)
    forward_rule(thermo, "rmq")
    started = time.monotonic()
    feed.data(temperature=35.5)
    stored = Sink.objects.get(pk=created["id"])
    assert stored.health == "failing" and reason in stored.last_error, stored.last_error
    assert "server text" not in stored.last_error
    assert stored.dead_letters.count() == 1
    assert time.monotonic() - started < 20
    assert not any(b"35.5" in request.messages[0].body for request, _m in proxy.sent
                   if case == "internal route")


def test_grpc_over_tls(thermo, feed, settings, tls_proxy_certificate):
    """With `tls`, the producer connects by name and checks the proxy's certificate."""
    settings.OUTBOUND_ALLOWED_NETWORKS = ["127.0.0.0/8", "::1/128"]  # localhost: both
    server = Proxy(tls=tls_proxy_certificate)
    try:
        created = create_sink(thermo, name="rmq", sink_type="rocketmq", max_retries=0, config={
            "endpoint": f"localhost:{server.port}", "tls": True, "topic": "iot",
            "access_key": "AK"}, credentials={"secret_key": "SK"})
        forward_rule(thermo, "rmq")
        feed.data(temperature=35.5)
        stored = Sink.objects.get(pk=created["id"])
        assert stored.health == "healthy", stored.last_error
        assert [json.loads(r.messages[0].body)["device"] for r, _m in server.sent] == ["dev-1"]
    finally:
        sinks.close_all()
        server.stop()


@pytest.mark.parametrize(("config", "fragment"), [
    ({"mode": "kafka", "endpoint": "h:8081", "topic": "t"}, "'mode' is grpc"),
    ({"mode": "grpc", "endpoint": "h", "topic": "t"}, "one 'endpoint' host:port"),
    ({"mode": "grpc", "endpoint": "a:8081;b:8081", "topic": "t"}, "one 'endpoint'"),
    ({"mode": "grpc", "endpoint": "[::1]:8081", "topic": "t"}, "IPv6"),
    ({"mode": "grpc", "endpoint": "127.0.0.1:8081"}, "has a 'topic'"),
    ({"endpoint": "127.0.0.1:8081", "topic": "t", "timeout": 0}, "'timeout'"),
    ({"endpoint": "127.0.0.1:8081", "topic": "t", "tls": "yes"}, "'tls'"),
    ({"endpoint": "127.0.0.1:8081", "topic": "t", "properties": ["a"]}, "'properties'"),
    ({"endpoint": "127.0.0.1:8081", "topic": "t", "tag": "a|b"}, "'|'"),
    ({"mode": "http", "endpoint": "127.0.0.1:8081", "topic": "t"}, "http(s) 'endpoint'"),
    ({"endpoint": "172.16.0.1:8081", "topic": "t"}, "private address"),
])
def test_invalid_rocketmq_sinks_are_refused(thermo, config, fragment):
    response = thermo.post("/api/v1/sinks/", {"name": "bad", "sink_type": "rocketmq",
                                               "config": config}, format="json")
    assert response.status_code == 400 and fragment in str(response.json()["detail"])


def test_mode_defaults():
    """A sink saved before the gRPC mode (an http(s) endpoint, no mode) stays HTTP."""
    from webapp.rules.sinks.rocketmq import mode_of

    assert mode_of({"endpoint": "http://mq.example:8080"}) == "http"
    assert mode_of({"endpoint": "mq.example:8081"}) == "grpc"
    assert mode_of({"endpoint": "http://mq.example:8081", "mode": "grpc"}) == "grpc"


def test_rocketmq_http_request():
    """The HTTP mode's request: XML message, MQ signature over the documented string."""
    date = "Thu, 26 Nov 2026 10:00:00 GMT"
    request = rocketmq_request({"endpoint": "http://mq.example:8080", "topic": "iot",
                                "tag": "{{product}}", "keys": "{{device}}",
                                "instance_id": "inst", "access_key": "AK"},
                               {"secret_key": "SK"}, OUTGOING, date=date)
    assert request.url == "http://mq.example:8080/topics/iot/messages?ns=inst"
    assert request.body == (
        b'<?xml version="1.0" encoding="UTF-8"?><Message xmlns="http://mq.aliyuncs.com/doc/v1/">'
        b'<MessageBody>{"t":35}</MessageBody><MessageTag>thermo</MessageTag>'
        b"<Properties>KEYS:dev-1|</Properties></Message>")
    to_sign = (f"POST\n\ntext/xml;charset=UTF-8\n{date}\nx-mq-version:2015-06-06\n"
               "/topics/iot/messages?ns=inst")
    signature = base64.b64encode(hmac.new(b"SK", to_sign.encode(), hashlib.sha1).digest())
    assert request.headers["Authorization"] == f"MQ AK:{signature.decode()}"


@pytest.mark.skipif(not os.environ.get("ROCKETMQ_URL"), reason="ROCKETMQ_URL is not set")
def test_rocketmq_grpc_server(thermo, feed, settings):
    """With an Apache RocketMQ 5 proxy (ROCKETMQ_URL=host:8081; ROCKETMQ_TOPIC, a NORMAL
    topic that exists, default `thinglinks`; ROCKETMQ_ACCESS_KEY / ROCKETMQ_SECRET_KEY when
    ACL is on): the forwarded message is consumed back with its key and property."""
    mq = rocketmq.client()  # imported as the sink imports it
    settings.OUTBOUND_ALLOWED_NETWORKS = ["0.0.0.0/0", "::/0"]
    topic = os.environ.get("ROCKETMQ_TOPIC", "thinglinks")
    marker = uuid.uuid4().hex[:12]
    create_sink(thermo, name="rmq", sink_type="rocketmq", config={
        "mode": "grpc", "endpoint": os.environ["ROCKETMQ_URL"], "topic": topic,
        "tag": "thinglinks", "properties": {"marker": marker},
        "access_key": os.environ.get("ROCKETMQ_ACCESS_KEY", "")},
        credentials={"secret_key": os.environ.get("ROCKETMQ_SECRET_KEY", "")})
    forward_rule(thermo, "rmq")
    consumer = mq.SimpleConsumer(mq.ClientConfiguration(
        os.environ["ROCKETMQ_URL"], mq.Credentials(os.environ.get("ROCKETMQ_ACCESS_KEY", ""),
                                                   os.environ.get("ROCKETMQ_SECRET_KEY", ""))),
        f"thinglinks-test-{marker}", {topic: mq.FilterExpression("thinglinks")},
        await_duration=5)
    consumer.startup()
    try:
        consumer.receive(16, 15)  # the new group's first receive sets where it starts
        feed.data(temperature=38)
        assert Sink.objects.get(name="rmq").health == "healthy", \
            Sink.objects.get(name="rmq").last_error
        found = None
        deadline = time.monotonic() + 30
        while found is None and time.monotonic() < deadline:
            for message in consumer.receive(16, 15) or []:
                consumer.ack(message)
                if message.properties.get("marker") == marker:
                    found = message
        assert found is not None
        assert "dev-1" in found.keys and json.loads(found.body)["device"] == "dev-1"
    finally:
        consumer.shutdown()


@pytest.mark.skipif(not os.environ.get("ROCKETMQ_HTTP_URL"),
                    reason="ROCKETMQ_HTTP_URL is not set")
def test_rocketmq_http_server(thermo, feed, settings):
    """With an Alibaba Cloud HTTP access point (ROCKETMQ_HTTP_URL, ROCKETMQ_TOPIC,
    ROCKETMQ_ACCESS_KEY, ROCKETMQ_SECRET_KEY, ROCKETMQ_INSTANCE): the message is accepted."""
    settings.OUTBOUND_ALLOWED_NETWORKS = ["0.0.0.0/0", "::/0"]
    create_sink(thermo, name="rmq", sink_type="rocketmq",
                config={"mode": "http", "endpoint": os.environ["ROCKETMQ_HTTP_URL"],
                        "topic": os.environ.get("ROCKETMQ_TOPIC", "thinglinks"),
                        "instance_id": os.environ.get("ROCKETMQ_INSTANCE", ""),
                        "access_key": os.environ.get("ROCKETMQ_ACCESS_KEY", "")},
                credentials={"secret_key": os.environ.get("ROCKETMQ_SECRET_KEY", "")})
    forward_rule(thermo, "rmq")
    feed.data(temperature=38)
    assert Sink.objects.get(name="rmq").health == "healthy"
