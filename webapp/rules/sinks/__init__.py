"""Forwarding sinks: the drivers by type, a per-process connection cache, and `deliver`."""

from __future__ import annotations

import atexit
import logging
import threading
from collections.abc import Mapping
from typing import Any

from django.utils.translation import gettext_lazy as _

from webapp.core import outbound
from webapp.core.errors import DomainError
from webapp.rules import expressions
from webapp.rules.choices import SinkType
from webapp.rules.expressions import ExpressionError
from webapp.rules.secrets import sink_credentials
from webapp.rules.sinks.base import Driver, Outgoing, SinkError, build_payload
from webapp.rules.sinks.drivers import (
    HttpDriver,
    LogDriver,
    MqttDriver,
    RabbitMqDriver,
    RedisDriver,
    TopicDriver,
)
from webapp.rules.sinks.kafka import KafkaDriver
from webapp.rules.sinks.rocketmq import RocketMqDriver
from webapp.rules.sinks.sql import SqlDriver

__all__ = ["DRIVERS", "Outgoing", "SinkError", "check_sink", "close_all", "deliver",
           "drop_driver"]

DRIVERS: dict[str, type[Driver]] = {
    SinkType.HTTP: HttpDriver,
    SinkType.MQTT: MqttDriver,
    SinkType.KAFKA: KafkaDriver,
    SinkType.RABBITMQ: RabbitMqDriver,
    SinkType.ROCKETMQ: RocketMqDriver,
    SinkType.MYSQL: SqlDriver,
    SinkType.POSTGRESQL: SqlDriver,
    SinkType.REDIS: RedisDriver,
    SinkType.TOPIC: TopicDriver,
    SinkType.LOG: LogDriver,
}


class SinkInvalid(DomainError):
    code = "invalid_sink"
    default_detail = _("The sink is invalid.")


def check_sink(sink: Any, *, destination: bool = True) -> None:
    """Refuse a sink whose settings, filter or payload template cannot work, or (with
    `destination`) whose destination the platform may not connect to."""
    driver = DRIVERS.get(sink.sink_type)
    if driver is None:
        raise SinkInvalid(_("Unknown sink type {type!r}.").format(type=sink.sink_type))
    try:
        if not isinstance(sink.config, dict):
            raise ValueError("the settings are an object")
        driver.check(sink.config)
        expressions.check_structure(sink.config)
        if sink.filter:
            expressions.parse(sink.filter)
        if isinstance(sink.payload_template, str):
            expressions.Template(sink.payload_template)
        else:
            expressions.check_structure(sink.payload_template)
        if destination:
            driver.check_destination(sink.config)
    except (ValueError, KeyError, ExpressionError) as exc:
        detail = exc.detail if isinstance(exc, ExpressionError) else str(exc)
        raise SinkInvalid(detail) from exc


log = logging.getLogger("thinglinks.forward")
_drivers: dict[int, tuple[Any, Driver]] = {}
_lock = threading.Lock()
_exit_hook: list[bool] = []


def _driver(sink: Any, credentials: Mapping[str, Any]) -> Driver:
    with _lock:
        cached = _drivers.get(sink.pk)
        if cached is not None and cached[0] == sink.updated:
            return cached[1]
        if cached is not None:
            cached[1].close()
        driver = DRIVERS[sink.sink_type](sink.config, credentials)
        _drivers[sink.pk] = (sink.updated, driver)
        if not _exit_hook:  # connections and producers end with the process
            atexit.register(close_all)
            _exit_hook.append(True)
        return driver


def drop_driver(sink_id: int) -> None:
    with _lock:
        cached = _drivers.pop(sink_id, None)
    if cached is not None:
        cached[1].close()


def close_all() -> None:
    """Close every sink connection of this process (at exit, and when a Celery worker
    process shuts down: webapp/rules/tasks.py): a RocketMQ producer tells its proxy it ends,
    a Kafka producer flushes."""
    with _lock:
        cached = list(_drivers.values())
        _drivers.clear()
    for _updated, driver in cached:
        try:
            driver.close()
        except Exception:
            log.debug("closing a sink connection failed", exc_info=True)


def passes(sink: Any, env: Mapping[str, Any]) -> bool:
    return not sink.filter or bool(expressions.parse(sink.filter).eval(env))


def deliver(sink: Any, message: Mapping[str, Any], env: Mapping[str, Any]) -> bytes | None:
    """Send one message; returns the payload sent, or None when the filter dropped it.
    Raises SinkError (after dropping the connection) when delivery failed."""
    if not passes(sink, env):
        return None
    body = build_payload(sink.payload_template, message, env)
    driver = _driver(sink, sink_credentials(sink))
    try:
        driver.send(Outgoing(body, env))
    except SinkError:
        drop_driver(sink.pk)
        raise
    except Exception as exc:
        drop_driver(sink.pk)
        log.warning("sink %s: %s", sink.pk, type(exc).__name__)
        raise SinkError(outbound.failure(exc)) from exc
    return body
