"""RocketMQ sink, in one of two protocols (`config["mode"]`):

- `grpc` (Apache RocketMQ 5, self-hosted): the official Python client
  (`rocketmq-python-client`) talking to a RocketMQ proxy's gRPC endpoint (`host:8081`). One
  producer per sink per worker process, started on the first message and reused, shut down
  when the sink changes, after a failure, or when the process exits.
- `http` (Alibaba Cloud's commercial RocketMQ/MQ "HTTP access point", the `mq-http-sdk`
  protocol): `POST {endpoint}/topics/{topic}/messages[?ns={instance}]` with an XML
  `<Message>` body, signed `Authorization: MQ {access_key}:{base64 HMAC-SHA1}` over
  `POST\\n{md5}\\n{content-type}\\n{date}\\nx-mq-version:2015-06-06\\n{resource}`. Self-hosted
  Apache RocketMQ does not serve it.

A sink saved without `mode` is `http` when its `endpoint` is an http(s) URL (the sinks saved
before the gRPC mode existed), `grpc` otherwise.

No RocketMQ server runs on the development machine: tests/rules/test_rocketmq.py runs the
real client against an in-process gRPC server implementing the proxy's MessagingService
(from the protocol stubs the client ships), and against a real server when ROCKETMQ_URL
(gRPC) or ROCKETMQ_HTTP_URL (HTTP access point) is set."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import ipaddress
import logging
import sys
import threading
import types
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any
from xml.sax.saxutils import escape

from webapp.core import outbound
from webapp.rules.notify import DeliveryError, HttpRequest, send_http
from webapp.rules.sinks.base import Driver, Outgoing, SinkError, render

log = logging.getLogger("thinglinks.forward")

MQ_VERSION = "2015-06-06"
CONTENT_TYPE = "text/xml;charset=UTF-8"
MODES = ("grpc", "http")
ROUTE_FAILED = "the topic's route could not be fetched"
DEFAULT_TIMEOUT_S = 5
MAX_TIMEOUT_S = 60
# What a RocketMQ status code means, in the words a sink's `last_error` shows (the server's
# own message is never shown: webapp/core/outbound.py).
CODE_REASONS = {
    "TOPIC_NOT_FOUND": "the topic does not exist on the RocketMQ cluster",
    "NOT_FOUND": "not found on the RocketMQ cluster",
    "UNAUTHORIZED": "the access key or secret key was refused",
    "FORBIDDEN": "the access key may not publish to this topic",
    "ILLEGAL_TOPIC": "the topic name is not valid",
    "ILLEGAL_MESSAGE_TAG": "the tag is not valid",
    "ILLEGAL_MESSAGE_KEY": "a key is not valid",
    "ILLEGAL_MESSAGE_PROPERTY_KEY": "a property name is reserved or not valid",
    "MESSAGE_PROPERTY_CONFLICT_WITH_TYPE": "the topic does not accept this message type",
    "MESSAGE_BODY_TOO_LARGE": "the message is too large",
    "PAYLOAD_TOO_LARGE": "the message is too large",
    "MESSAGE_PROPERTIES_TOO_LARGE": "the properties are too large",
    "TOO_MANY_REQUESTS": "the RocketMQ cluster is throttling (too many requests)",
    "PROXY_TIMEOUT": "timeout (RocketMQ proxy)",
    "MASTER_PERSISTENCE_TIMEOUT": "timeout (storing the message)",
    "SLAVE_PERSISTENCE_TIMEOUT": "timeout (replicating the message)",
}
GRPC_REASONS = {
    "UNAVAILABLE": "cannot connect to the RocketMQ proxy (unavailable)",
    "DEADLINE_EXCEEDED": "timeout",
    "UNAUTHENTICATED": "the access key or secret key was refused",
    "PERMISSION_DENIED": "the access key may not publish to this topic",
    "UNIMPLEMENTED": "the endpoint is not a RocketMQ 5 gRPC proxy",
}


def mode_of(config: Mapping[str, Any]) -> str:
    mode = config.get("mode")
    if mode:
        return str(mode)
    endpoint = str(config.get("endpoint") or "")
    return "http" if endpoint.startswith(("http://", "https://")) else "grpc"


# --- HTTP (Alibaba Cloud) ----------------------------------------------------------------


def rocketmq_request(config: Mapping[str, Any], credentials: Mapping[str, Any],
                     outgoing: Outgoing, *, date: str | None = None) -> HttpRequest:
    topic = render(config, "topic", outgoing.env)
    tag = render(config, "tag", outgoing.env)
    keys = render(config, "keys", outgoing.env)
    resource = f"/topics/{urllib.parse.quote(topic, safe='')}/messages"
    if config.get("instance_id"):
        resource += f"?ns={urllib.parse.quote(str(config['instance_id']), safe='')}"
    properties = f"KEYS:{keys}|" if keys else ""
    body = ('<?xml version="1.0" encoding="UTF-8"?>'
            '<Message xmlns="http://mq.aliyuncs.com/doc/v1/">'
            f"<MessageBody>{escape(outgoing.text)}</MessageBody>"
            f"<MessageTag>{escape(tag)}</MessageTag>"
            f"<Properties>{escape(properties)}</Properties></Message>").encode()
    date = date or formatdate(usegmt=True)
    to_sign = f"POST\n\n{CONTENT_TYPE}\n{date}\nx-mq-version:{MQ_VERSION}\n{resource}"
    secret = str(credentials.get("secret_key") or "")
    signature = base64.b64encode(hmac.new(secret.encode(), to_sign.encode(),
                                          hashlib.sha1).digest()).decode()
    headers = {"Content-Type": CONTENT_TYPE, "Date": date, "x-mq-version": MQ_VERSION,
               "Host": urllib.parse.urlsplit(str(config["endpoint"])).netloc,
               "Authorization": f"MQ {config.get('access_key', '')}:{signature}"}
    return HttpRequest(str(config["endpoint"]).rstrip("/") + resource, headers, body)


# --- gRPC (Apache RocketMQ 5) ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RocketMessage:
    """What the producer sends for one message (built apart from the client, so that its
    shape is tested without it)."""

    topic: str
    body: bytes
    tag: str = ""
    keys: tuple[str, ...] = ()
    properties: dict[str, str] = field(default_factory=dict)
    message_group: str = ""


def rocketmq_message(config: Mapping[str, Any], outgoing: Outgoing) -> RocketMessage:
    """The message of the gRPC mode: rendered topic, tag, keys (default: the device id;
    several separated by spaces), user properties and FIFO message group; the payload as
    body. Empty rendered keys, properties and tag are left out (the client refuses blanks)."""
    keys = render(config, "keys", outgoing.env, default="{{device}}") \
        if "keys" not in config or config.get("keys") else ""
    properties = {}
    for name, value in dict(config.get("properties") or {}).items():
        text = render({"v": value}, "v", outgoing.env)
        if text.strip():
            properties[str(name)] = text
    return RocketMessage(topic=render(config, "topic", outgoing.env), body=outgoing.body,
                         tag=render(config, "tag", outgoing.env).strip(),
                         keys=tuple(keys.split()), properties=properties,
                         message_group=render(config, "message_group", outgoing.env).strip())


def grpc_endpoint(config: Mapping[str, Any]) -> tuple[str, int]:
    """(host, port) of the proxy's `endpoint` (`host:port`, an http(s):// prefix allowed)."""
    endpoint = str(config.get("endpoint") or "").strip()
    for prefix in ("http://", "https://"):
        if endpoint.startswith(prefix):
            endpoint = endpoint[len(prefix):].rstrip("/")
    host, _colon, port = endpoint.rpartition(":")
    if not host or not port.isdigit() or ";" in endpoint or "/" in endpoint:
        raise ValueError("a RocketMQ gRPC sink has one 'endpoint' host:port (its proxy, "
                         "e.g. 127.0.0.1:8081)")
    if host.startswith("[") or ":" in host:
        raise ValueError("the RocketMQ Python client does not connect to IPv6 addresses: "
                         "give an IPv4 address or a host name")
    return host, int(port)


def timeout_of(config: Mapping[str, Any]) -> int:
    value = config.get("timeout", DEFAULT_TIMEOUT_S)
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not 1 <= value <= MAX_TIMEOUT_S:
        raise ValueError(f"'timeout' is a number of seconds from 1 to {MAX_TIMEOUT_S}")
    return int(value)


def client() -> types.ModuleType:
    """The client package, imported on first use (grpcio, protobuf and OpenTelemetry: only
    the processes that forward to RocketMQ load them). Its `log_config` module is replaced
    before the import: the client's own calls `logging.config.dictConfig` when imported,
    which closes every logging handler the process has, and logs to a rotating file under
    ~/logs; instead its logger propagates to ours, warnings and above."""
    name = "rocketmq.v5.log.log_config"
    if name not in sys.modules:
        shim = types.ModuleType(name)
        client_log = logging.getLogger("rocketmq-python-client")
        client_log.setLevel(logging.WARNING)
        shim.logger = client_log  # type: ignore[attr-defined]
        sys.modules[name] = shim
    import rocketmq

    guard_channels()
    return rocketmq


@functools.cache
def guard_channels() -> None:
    """Every gRPC channel the client opens in this process (to the proxy named, and to the
    endpoints its routes advertise) passes the outbound check first, as Kafka's brokers do
    (webapp/rules/sinks/kafka.py): a proxy cannot send the producer to an internal address."""
    from rocketmq.v5.client.connection.rpc_channel import RpcChannel

    create = RpcChannel.create_channel

    def checked(self: Any, loop: Any) -> Any:
        endpoints = self._RpcChannel__endpoints
        if endpoints is not None:
            for address in endpoints.endpoints.addresses:
                outbound.check_host(address.host, address.port)
        return create(self, loop)

    RpcChannel.create_channel = checked  # type: ignore[method-assign]


def failure(exc: BaseException) -> str:
    """Why a gRPC send failed, in generic words: the RocketMQ status or gRPC code by its
    meaning, our own refusals by their reason, never the server's message."""
    rocketmq = sys.modules.get("rocketmq")
    chain: list[BaseException] = []
    item: BaseException | None = exc
    while item is not None and item not in chain:
        chain.append(item)
        item = item.__cause__ or item.__context__
    for item in chain:
        if isinstance(item, outbound.OutboundRefused):
            return str(item.reason)
        code = getattr(item, "code", None)
        if rocketmq is not None and isinstance(code, int) and not callable(code):
            from rocketmq.grpc_protocol import Code

            try:
                label = Code.Name(code)
            except ValueError:
                label = str(code)
            return CODE_REASONS.get(label, f"RocketMQ error {label}")
        if callable(code) and type(item).__name__ == "AioRpcError":
            label = item.code().name  # type: ignore[attr-defined]
            return GRPC_REASONS.get(label, f"gRPC error {label}")
        if type(item).__name__ == "IllegalArgumentException":
            return f"the message was refused by the client: {item}"
        if "route" in str(item) and type(item) is Exception:
            return ROUTE_FAILED
    return outbound.failure(exc)


class GrpcProducer:
    """One started producer of the official client, for one sink in one process."""

    def __init__(self, config: Mapping[str, Any], credentials: Mapping[str, Any]) -> None:
        mq = client()
        host, port = grpc_endpoint(config)
        self.tls = bool(config.get("tls"))
        self.timeout = timeout_of(config)
        try:
            destination = outbound.check_host(host, port)
        except ValueError as exc:
            raise SinkError(f"cannot connect to RocketMQ: {outbound.failure(exc)}") from exc
        connect = destination.connect_host(tls=self.tls)
        if not self.tls:  # the client takes IPv4 addresses and names only
            v4 = [a for a in destination.addresses if ipaddress.ip_address(a).version == 4]
            if not v4:
                raise SinkError("cannot connect to RocketMQ: the host has no IPv4 address")
            connect = v4[0]
        self.endpoint = f"{connect}:{port}"
        configuration = mq.ClientConfiguration(
            self.endpoint,
            mq.Credentials(str(config.get("access_key") or ""),
                           str(credentials.get("secret_key") or "")),
            namespace=str(config.get("namespace") or ""), request_timeout=self.timeout)
        if configuration.rpc_endpoints is None:
            raise SinkError("cannot connect to RocketMQ: the endpoint is not host:port")
        self.configuration = configuration
        topic = str(config.get("topic") or "")
        self.producer = mq.Producer(configuration, topics=None if "{{" in topic else [topic],
                                    tls_enable=self.tls)
        try:
            self.producer.startup()
            if "{{" not in topic:
                self.check_route(topic, configuration)
        except SinkError:
            self.close()
            raise
        except Exception as exc:
            self.close()
            raise SinkError(f"cannot start the RocketMQ producer: {failure(exc)}") from exc

    def check_route(self, topic: str, configuration: Any) -> None:
        """Ask the proxy for the topic's route once, so that a topic that does not exist, a
        refused key or an unreachable proxy is reported as such (the client only logs why
        its own route query failed)."""
        from rocketmq.grpc_protocol import QueryRouteRequest
        from rocketmq.v5.util import MessagingResultChecker

        request = QueryRouteRequest()
        request.topic.name = topic
        request.topic.resource_namespace = configuration.namespace
        request.endpoints.CopyFrom(configuration.rpc_endpoints.endpoints)
        try:
            reply = self.producer.rpc_client.query_topic_route_async(
                configuration.rpc_endpoints, request, metadata=self.producer.sign(),
                timeout=self.timeout).result(timeout=self.timeout + 1)
            MessagingResultChecker.check(reply.status)
            for queue in reply.message_queues:  # where the route sends the producer
                for address in queue.broker.endpoints.addresses:
                    outbound.check_host(address.host, address.port)
        except Exception as exc:
            raise SinkError(f"cannot publish to RocketMQ: {failure(exc)}") from exc

    def send(self, message: RocketMessage) -> str:
        mq = client()
        try:
            sent = mq.Message()
            sent.topic = message.topic
            sent.body = message.body
            if message.tag:
                sent.tag = message.tag
            for key in message.keys:
                sent.keys = key
            for name, value in message.properties.items():
                sent.add_property(name, value)
            if message.message_group:
                sent.message_group = message.message_group
        except Exception as exc:
            raise SinkError(f"RocketMQ message refused: {failure(exc)}") from exc
        try:
            return str(self.producer.send(sent).message_id)
        except Exception as exc:
            reason = failure(exc)
            if reason == ROUTE_FAILED:  # a topic first seen now (a template): ask why
                self.check_route(message.topic, self.configuration)
            raise SinkError(f"RocketMQ send failed: {reason}") from exc

    def close(self) -> None:
        """Shut the producer down: the proxy is told the client ends, the channels close."""
        try:
            self.producer.shutdown()
        except Exception:
            log.debug("shutting a RocketMQ producer down failed", exc_info=True)


# --- the driver ----------------------------------------------------------------------------


class RocketMqDriver(Driver):
    def __init__(self, config: Mapping[str, Any], credentials: Mapping[str, Any]) -> None:
        super().__init__(config, credentials)
        self.producer: GrpcProducer | None = None
        self.starting = threading.Lock()  # one producer even if two threads send at once

    def send(self, outgoing: Outgoing) -> None:
        if mode_of(self.config) == "http":
            try:
                send_http(rocketmq_request(self.config, self.credentials, outgoing))
            except DeliveryError as exc:
                raise SinkError(str(exc)) from exc
            return
        message = rocketmq_message(self.config, outgoing)
        with self.starting:
            if self.producer is None:
                self.producer = GrpcProducer(self.config, self.credentials)
            producer = self.producer
        producer.send(message)

    def close(self) -> None:
        if self.producer is not None:
            self.producer.close()
        self.producer = None

    @classmethod
    def check(cls, config: Mapping[str, Any]) -> None:
        mode = mode_of(config)
        if mode not in MODES:
            raise ValueError("a RocketMQ sink's 'mode' is grpc (Apache RocketMQ 5, its "
                             "proxy) or http (Alibaba Cloud's HTTP access point)")
        if not config.get("topic"):
            raise ValueError("a RocketMQ sink has a 'topic'")
        if mode == "http":
            if not str(config.get("endpoint") or "").startswith(("http://", "https://")):
                raise ValueError("a RocketMQ sink in http mode has an http(s) 'endpoint' "
                                 "(its HTTP access point)")
            return
        grpc_endpoint(config)
        timeout_of(config)
        if not isinstance(config.get("tls", False), bool):
            raise ValueError("'tls' is true or false")
        properties = config.get("properties") or {}
        if not isinstance(properties, dict) or not all(
                isinstance(k, str) and k.strip() and isinstance(v, str | int | float)
                for k, v in properties.items()):
            raise ValueError("'properties' is an object of names and (template) values")
        if "|" in str(config.get("tag") or ""):
            raise ValueError("a RocketMQ 'tag' has no '|'")

    @classmethod
    def check_destination(cls, config: Mapping[str, Any]) -> None:
        if mode_of(config) == "http":
            outbound.check_url(str(config.get("endpoint")), schemes=("http", "https"))
        else:
            outbound.check_host(*grpc_endpoint(config))
