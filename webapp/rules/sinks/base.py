"""What every sink driver implements, and the payload a sink sends."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from webapp.rules.expressions import Template, render_structure


class SinkError(Exception):
    """Delivery failed; the message is retried with backoff, then dead-lettered."""


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message on its way to a sink: the rendered payload and the names it was made of."""

    body: bytes
    env: Mapping[str, Any]

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


def encode(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def build_payload(template: Any, message: Mapping[str, Any], env: Mapping[str, Any]) -> bytes:
    """The sink's payload: the message itself, a text template, or a JSON template."""
    if template in (None, "", {}):
        return encode(message)
    if isinstance(template, str):
        return Template(template).render(env).encode()
    return encode(render_structure(template, env))


class Driver:
    """A connection to one sink, reused across messages by the worker that opened it."""

    def __init__(self, config: Mapping[str, Any], credentials: Mapping[str, Any]) -> None:
        self.config = config
        self.credentials = credentials

    def send(self, outgoing: Outgoing) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Drop the connection (after an error, or when the sink changed)."""

    @classmethod
    def check(cls, config: Mapping[str, Any]) -> None:
        """Refuse a configuration that can never work (raises ExpressionError/ValueError)."""

    @classmethod
    def check_destination(cls, config: Mapping[str, Any]) -> None:
        """Refuse a destination the platform may not connect to (raises OutboundRefused,
        webapp/core/outbound.py); checked again when the connection is made."""


def render(config: Mapping[str, Any], key: str, env: Mapping[str, Any], default: str = ""
           ) -> str:
    value = config.get(key) or default
    return Template(str(value)).render(env) if "{{" in str(value) else str(value)
