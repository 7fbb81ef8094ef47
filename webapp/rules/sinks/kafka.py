"""Kafka sink (kafka-python). The record is built apart from the producer so that its shape is
tested without a broker; the integration test runs when KAFKA_URL is set."""

from __future__ import annotations

import functools
import ipaddress
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from webapp.core import outbound
from webapp.rules.sinks.base import Driver, Outgoing, SinkError, render
from webapp.rules.sinks.drivers import TIMEOUT_S

log = logging.getLogger("thinglinks.forward")


@dataclass(frozen=True, slots=True)
class KafkaRecord:
    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]


def kafka_record(config: Mapping[str, Any], outgoing: Outgoing) -> KafkaRecord:
    key = render(config, "key", outgoing.env)
    headers = [(str(name), render({"v": value}, "v", outgoing.env).encode())
               for name, value in dict(config.get("headers") or {}).items()]
    return KafkaRecord(topic=render(config, "topic", outgoing.env),
                       key=key.encode() if key else None, value=outgoing.body, headers=headers)


def bootstrap_servers(config: Mapping[str, Any]) -> list[tuple[str, int]]:
    """(host, port) of each `host:port` (or `[v6]:port`) in `bootstrap_servers`."""
    servers = []
    for entry in str(config.get("bootstrap_servers") or "").split(","):
        host, _colon, port = entry.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ValueError("'bootstrap_servers' is host:port[,host:port…]")
        servers.append((host.strip("[]"), int(port)))
    return servers


@functools.cache
def guard_broker_connections() -> None:
    """Every address kafka-python connects to in this process (the bootstrap servers and the
    brokers their metadata advertises) passes the outbound check first: a broker cannot
    send the producer to an internal address. Addresses refused are dropped, as if the
    name had not resolved to them; the producer connects to the checked addrinfo itself."""
    from kafka.net.inet import KafkaNetSocket

    resolve = KafkaNetSocket.dns_lookup

    def checked(self: Any, host: str, port: int, raise_error: bool = False) -> Any:
        kept = []
        for info in resolve(self, host, port, raise_error):
            try:
                outbound.check_address(host, ipaddress.ip_address(
                    str(info[4][0]).split("%")[0]), int(port))
            except outbound.OutboundRefused as exc:
                log.warning("Kafka: not connecting to %s:%s: %s", host, port, exc.reason)
                continue
            kept.append(info)
        return kept

    KafkaNetSocket.dns_lookup = checked  # type: ignore[method-assign]


class KafkaDriver(Driver):
    def __init__(self, config: Mapping[str, Any], credentials: Mapping[str, Any]) -> None:
        super().__init__(config, credentials)
        self.producer: Any = None

    def _producer(self) -> Any:
        from kafka import KafkaProducer

        guard_broker_connections()
        try:
            for host, port in bootstrap_servers(self.config):
                outbound.check_host(host, port)
        except ValueError as exc:
            raise SinkError(f"cannot connect to Kafka: {outbound.failure(exc)}") from exc
        options: dict[str, Any] = {
            "bootstrap_servers": str(self.config["bootstrap_servers"]).split(","),
            "client_id": str(self.config.get("client_id") or "thinglinks"),
            "acks": self.config.get("acks", "all"),
            "request_timeout_ms": TIMEOUT_S * 1000,
        }
        if self.config.get("security_protocol"):
            options["security_protocol"] = self.config["security_protocol"]
        if self.config.get("sasl_mechanism"):
            options.update(sasl_mechanism=self.config["sasl_mechanism"],
                           sasl_plain_username=self.config.get("username"),
                           sasl_plain_password=self.credentials.get("password"))
        try:
            return KafkaProducer(**options)
        except Exception as exc:
            raise SinkError(f"cannot connect to Kafka: {outbound.failure(exc)}") from exc

    def send(self, outgoing: Outgoing) -> None:
        if self.producer is None:
            self.producer = self._producer()
        record = kafka_record(self.config, outgoing)
        try:
            self.producer.send(record.topic, value=record.value, key=record.key,
                               headers=record.headers).get(timeout=TIMEOUT_S)
        except Exception as exc:
            raise SinkError(f"Kafka send failed: {outbound.failure(exc)}") from exc

    def close(self) -> None:
        if self.producer is not None:
            self.producer.close(timeout=1)
        self.producer = None

    @classmethod
    def check(cls, config: Mapping[str, Any]) -> None:
        if not config.get("bootstrap_servers") or not config.get("topic"):
            raise ValueError("a Kafka sink has 'bootstrap_servers' and a 'topic'")
        bootstrap_servers(config)

    @classmethod
    def check_destination(cls, config: Mapping[str, Any]) -> None:
        for host, port in bootstrap_servers(config):
            outbound.check_host(host, port)
