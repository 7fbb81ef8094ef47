"""Kafka sink (kafka-python). The record is built apart from the producer so that its shape is
tested without a broker; the integration test runs when KAFKA_URL is set."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from webapp.rules.sinks.base import Driver, Outgoing, SinkError, render
from webapp.rules.sinks.drivers import TIMEOUT_S


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


class KafkaDriver(Driver):
    def __init__(self, config: Mapping[str, Any], credentials: Mapping[str, Any]) -> None:
        super().__init__(config, credentials)
        self.producer: Any = None

    def _producer(self) -> Any:
        from kafka import KafkaProducer

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
            raise SinkError(f"cannot connect to Kafka: {type(exc).__name__}: {exc}") from exc

    def send(self, outgoing: Outgoing) -> None:
        if self.producer is None:
            self.producer = self._producer()
        record = kafka_record(self.config, outgoing)
        try:
            self.producer.send(record.topic, value=record.value, key=record.key,
                               headers=record.headers).get(timeout=TIMEOUT_S)
        except Exception as exc:
            raise SinkError(f"Kafka send failed: {type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        if self.producer is not None:
            self.producer.close(timeout=1)
        self.producer = None

    @classmethod
    def check(cls, config: Mapping[str, Any]) -> None:
        if not config.get("bootstrap_servers") or not config.get("topic"):
            raise ValueError("a Kafka sink has 'bootstrap_servers' and a 'topic'")
