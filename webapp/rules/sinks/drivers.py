"""Sink drivers: HTTP(S), MQTT (an external broker), RabbitMQ, Redis, internal topic, log."""

from __future__ import annotations

import logging
import threading
import urllib.parse
from collections.abc import Mapping
from typing import Any

from webapp.core import outbound
from webapp.rules.notify import DeliveryError, HttpRequest, send_http, webhook_request
from webapp.rules.sinks.base import Driver, Outgoing, SinkError, render

log = logging.getLogger("thinglinks.forward")
TIMEOUT_S = 10
AMQP_SCHEMES = ("amqp", "amqps", "pyamqp")
REDIS_SCHEMES = ("redis", "rediss")


def with_password(url: str, password: str) -> str:
    """Put a password (kept encrypted apart from the URL) into a connection URL."""
    if not password:
        return url
    parts = urllib.parse.urlsplit(url)
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{urllib.parse.quote(user, safe='')}:{urllib.parse.quote(password, safe='')}@{host}"
    if parts.port:
        netloc += f":{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query,
                                    parts.fragment))


def refuse_password_in_url(url: Any) -> None:
    if not isinstance(url, str) or "://" not in url:
        raise ValueError("a connection 'url' is required")
    if urllib.parse.urlsplit(url).password:
        raise ValueError("keep the password out of the URL: give it in the credentials")


def check_static_url(url: Any, schemes: tuple[str, ...]) -> None:
    """Check a destination URL when it is saved (one whose host is a template is checked
    when it is rendered, before each connection)."""
    if not outbound.templated_host(str(url)):
        outbound.check_url(str(url), schemes=schemes)


class HttpDriver(Driver):
    def send(self, outgoing: Outgoing) -> None:
        url = render(self.config, "url", outgoing.env)
        headers = {**dict(self.config.get("headers") or {}),
                   **dict(self.credentials.get("headers") or {})}
        request = webhook_request(url, str(self.credentials.get("secret") or ""), outgoing.body,
                                  headers=headers)
        method = str(self.config.get("method") or "POST").upper()
        try:
            send_http(HttpRequest(request.url, request.headers, request.body, method))
        except DeliveryError as exc:
            raise SinkError(str(exc)) from exc

    @classmethod
    def check(cls, config: Mapping[str, Any]) -> None:
        url = str(config.get("url") or "")
        if not url.startswith(("http://", "https://")):
            raise ValueError("an HTTP sink has an http(s) 'url'")
        if str(config.get("method") or "POST").upper() not in ("POST", "PUT", "PATCH"):
            raise ValueError("'method' is POST, PUT or PATCH")

    @classmethod
    def check_destination(cls, config: Mapping[str, Any]) -> None:
        check_static_url(config.get("url"), ("http", "https"))


class MqttDriver(Driver):
    """Publishes to an external MQTT broker with paho (one connection per worker)."""

    def __init__(self, config: Mapping[str, Any], credentials: Mapping[str, Any]) -> None:
        super().__init__(config, credentials)
        self.client: Any = None
        self.connected = threading.Event()

    def _connect(self) -> Any:
        import paho.mqtt.client as mqtt

        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                             client_id=str(self.config.get("client_id") or ""),
                             protocol=mqtt.MQTTv5 if self.config.get("version") == 5
                             else mqtt.MQTTv311)
        if self.config.get("username"):
            client.username_pw_set(str(self.config["username"]),
                                   str(self.credentials.get("password") or "") or None)
        if self.config.get("tls"):
            client.tls_set()

        def on_connect(client: Any, userdata: Any, flags: Any, reason: Any,
                       properties: Any = None) -> None:
            if not reason.is_failure:
                self.connected.set()

        def on_disconnect(*args: Any) -> None:
            self.connected.clear()

        client.on_connect = on_connect
        client.on_disconnect = on_disconnect
        try:
            destination = outbound.check_host(*self.address(self.config))
            client.connect(destination.connect_host(tls=bool(self.config.get("tls"))),
                           destination.port, keepalive=60)
        except (OSError, ValueError) as exc:
            raise SinkError(f"cannot connect to the MQTT broker: {outbound.failure(exc)}"
                            ) from exc
        client.loop_start()
        if not self.connected.wait(TIMEOUT_S):
            client.loop_stop()
            raise SinkError("the MQTT broker did not accept the connection")
        return client

    def send(self, outgoing: Outgoing) -> None:
        if self.client is None or not self.connected.is_set():
            self.close()
            self.client = self._connect()
        topic = render(self.config, "topic", outgoing.env)
        info = self.client.publish(topic, outgoing.body, qos=int(self.config.get("qos", 1)),
                                   retain=bool(self.config.get("retain", False)))
        info.wait_for_publish(TIMEOUT_S)
        if info.rc != 0 or not info.is_published():
            raise SinkError(f"MQTT publish failed (rc={info.rc})")

    def close(self) -> None:
        if self.client is not None:
            self.client.disconnect()
            self.client.loop_stop()
            self.client = None

    @staticmethod
    def address(config: Mapping[str, Any]) -> tuple[str, int]:
        return str(config.get("host") or ""), int(config.get("port") or 1883)

    @classmethod
    def check(cls, config: Mapping[str, Any]) -> None:
        topic = str(config.get("topic") or "")
        if not topic or "#" in topic or "+" in topic:
            raise ValueError("an MQTT sink has a 'topic' without wildcards")
        if config.get("qos", 1) not in (0, 1, 2):
            raise ValueError("'qos' is 0, 1 or 2")
        if not config.get("host"):
            raise ValueError("an MQTT sink has the 'host' of its broker")

    @classmethod
    def check_destination(cls, config: Mapping[str, Any]) -> None:
        outbound.check_host(*cls.address(config))


class RabbitMqDriver(Driver):
    """Publishes persistent messages over AMQP 0-9-1 with kombu (Celery's own client)."""

    def __init__(self, config: Mapping[str, Any], credentials: Mapping[str, Any]) -> None:
        super().__init__(config, credentials)
        self.connection: Any = None
        self.producer: Any = None

    def _open(self) -> None:
        from kombu import Connection, Producer

        url = str(self.config["url"])
        try:
            destination = outbound.check_url(url, schemes=AMQP_SCHEMES)
        except ValueError as exc:
            raise SinkError(f"cannot connect to RabbitMQ: {outbound.failure(exc)}") from exc
        tls = url.lower().startswith("amqps:")
        url = outbound.with_host(url, destination.connect_host(tls=tls))
        url = with_password(url, str(self.credentials.get("password") or ""))
        self.connection = Connection(url, connect_timeout=TIMEOUT_S)
        try:
            self.connection.ensure_connection(max_retries=1)
        except Exception as exc:
            self.connection = None
            raise SinkError(f"cannot connect to RabbitMQ: {outbound.failure(exc)}") from exc
        self.producer = Producer(self.connection.channel())

    def send(self, outgoing: Outgoing) -> None:
        from kombu import Exchange, Queue

        if self.producer is None:
            self._open()
        exchange = Exchange(str(self.config.get("exchange") or ""),
                            type=str(self.config.get("exchange_type") or "direct"), durable=True)
        queue_name = str(self.config.get("queue") or "")
        routing_key = render(self.config, "routing_key", outgoing.env, default=queue_name)
        declare: list[Any] = []
        if queue_name:
            declare.append(Queue(queue_name, exchange=exchange,
                                 routing_key=routing_key or queue_name, durable=True))
        elif exchange.name:
            declare.append(exchange)
        try:
            self.producer.publish(outgoing.body, exchange=exchange, routing_key=routing_key,
                                  declare=declare, content_type="application/json",
                                  content_encoding="utf-8", delivery_mode=2, retry=False)
        except Exception as exc:
            raise SinkError(f"RabbitMQ publish failed: {outbound.failure(exc)}") from exc

    def close(self) -> None:
        if self.connection is not None:
            try:
                self.connection.release()
            except Exception:
                log.debug("closing a broken AMQP connection failed", exc_info=True)
        self.connection = None
        self.producer = None

    @classmethod
    def check(cls, config: Mapping[str, Any]) -> None:
        refuse_password_in_url(config.get("url"))
        # kombu picks its transport by the scheme (redis://, memory://, sqla+…): only AMQP,
        # and one broker (no ';'-separated fail-over list).
        url = str(config.get("url"))
        if urllib.parse.urlsplit(url).scheme.lower() not in AMQP_SCHEMES or ";" in url:
            raise ValueError("the 'url' is one amqp:// or amqps:// URL")
        if not config.get("queue") and not config.get("exchange"):
            raise ValueError("a RabbitMQ sink names a 'queue' or an 'exchange'")

    @classmethod
    def check_destination(cls, config: Mapping[str, Any]) -> None:
        outbound.check_url(str(config.get("url")), schemes=AMQP_SCHEMES)


class RedisDriver(Driver):
    """Appends to a Redis stream (XADD, trimmed) or a list (RPUSH)."""

    def __init__(self, config: Mapping[str, Any], credentials: Mapping[str, Any]) -> None:
        super().__init__(config, credentials)
        self.client: Any = None

    def _client(self) -> Any:
        """A client of the checked address, with only what the URL may say: user, database
        number, TLS (no query options, no Unix socket)."""
        import redis

        url = str(self.config["url"])
        try:
            destination = outbound.check_url(url, schemes=REDIS_SCHEMES)
        except ValueError as exc:
            raise SinkError(f"cannot connect to Redis: {outbound.failure(exc)}") from exc
        parts = urllib.parse.urlsplit(url)
        tls = parts.scheme.lower() == "rediss"
        database = parts.path.strip("/") or "0"
        return redis.Redis(host=destination.connect_host(tls=tls), port=destination.port,
                           db=int(database) if database.isdigit() else 0,
                           username=urllib.parse.unquote(parts.username) if parts.username
                           else None,
                           password=self.credentials.get("password") or None, ssl=tls,
                           socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S)

    def send(self, outgoing: Outgoing) -> None:
        import redis

        if self.client is None:
            self.client = self._client()
        key = render(self.config, "key", outgoing.env)
        try:
            if self.config.get("mode", "stream") == "list":
                self.client.rpush(key, outgoing.body)
            else:
                self.client.xadd(key, {"payload": outgoing.body},
                                 maxlen=int(self.config.get("maxlen") or 100_000),
                                 approximate=True)
        except redis.RedisError as exc:
            raise SinkError(f"Redis write failed: {outbound.failure(exc)}") from exc

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        self.client = None

    @classmethod
    def check(cls, config: Mapping[str, Any]) -> None:
        refuse_password_in_url(config.get("url"))
        if urllib.parse.urlsplit(str(config.get("url"))).scheme.lower() not in REDIS_SCHEMES:
            raise ValueError("the 'url' is redis://host:port/db or rediss://…")
        if not config.get("key"):
            raise ValueError("a Redis sink has a 'key'")
        if config.get("mode", "stream") not in ("stream", "list"):
            raise ValueError("'mode' is stream or list")

    @classmethod
    def check_destination(cls, config: Mapping[str, Any]) -> None:
        outbound.check_url(str(config.get("url")), schemes=REDIS_SCHEMES)


class TopicDriver(Driver):
    """Republishes on the platform's own MQTT broker (through the edge, docs/rules.md)."""

    def send(self, outgoing: Outgoing) -> None:
        from webapp.rules.downlink import publish_topic

        topic = render(self.config, "topic", outgoing.env)
        publish_topic(topic, outgoing.body, qos=int(self.config.get("qos", 0)))

    @classmethod
    def check(cls, config: Mapping[str, Any]) -> None:
        topic = str(config.get("topic") or "")
        if not topic or "#" in topic or "+" in topic:
            raise ValueError("a topic sink has a 'topic' without wildcards")


class LogDriver(Driver):
    def send(self, outgoing: Outgoing) -> None:
        level = logging.getLevelName(str(self.config.get("level") or "INFO").upper())
        log.log(level if isinstance(level, int) else logging.INFO, "%s %s",
                self.config.get("prefix") or "forward", outgoing.text)
