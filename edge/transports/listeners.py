"""The MQTT listeners of one edge process (TCP, TLS, WebSocket) from configuration."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edge.mqtt.broker import Broker

from .lean import listen_lean
from .tcp import MqttTransportFactory, TransportCounter, listen
from .tls import CertificateLookup, QuietTLSFactory, ServerTLS, tls_factory
from .websocket import WebSocketMqttFactory

TRANSPORTS = ("tcp", "tls", "ws", "wss")


@dataclass(frozen=True, slots=True)
class TransportConfig:
    """``EDGE_TLS_PORT`` (18443), ``EDGE_TLS_CERT``, ``EDGE_TLS_KEY`` (defaults to the
    certificate file), ``EDGE_TLS_CA`` (asks clients for certificates), ``EDGE_TLS_CRL``
    (revocation lists checked with the CA, PEM or DER), ``EDGE_WS_PORT`` (18999; 0 turns
    WebSocket off), ``EDGE_WS_PATH`` (``/mqtt``), ``EDGE_WSS_PORT`` (18998: WebSocket over TLS
    with the same certificate, when there is one; 0 turns it off)."""

    tls_port: int = 18443
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None
    tls_crl: str | None = None
    ws_port: int = 18999
    ws_path: str = "/mqtt"
    wss_port: int = 18998

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> TransportConfig:
        """Raises ValueError for an unusable setting."""
        cert = env.get("EDGE_TLS_CERT") or None
        key = env.get("EDGE_TLS_KEY") or cert
        ca = env.get("EDGE_TLS_CA") or None
        crl = env.get("EDGE_TLS_CRL") or None
        if (key or ca) and not cert:
            raise ValueError("EDGE_TLS_KEY and EDGE_TLS_CA need EDGE_TLS_CERT")
        if crl and not ca:
            raise ValueError("EDGE_TLS_CRL needs EDGE_TLS_CA")
        path = env.get("EDGE_WS_PATH") or "/mqtt"
        if not path.startswith("/"):
            raise ValueError("EDGE_WS_PATH must start with /")
        return cls(
            tls_port=int(env.get("EDGE_TLS_PORT") or 18443),
            tls_cert=cert,
            tls_key=key,
            tls_ca=ca,
            tls_crl=crl,
            ws_port=int(env.get("EDGE_WS_PORT") or 18999),
            ws_path=path,
            wss_port=int(env.get("EDGE_WSS_PORT") or 18998),
        )

    @property
    def tls_enabled(self) -> bool:
        return self.tls_cert is not None


class Transports:
    """Creates and starts the listeners; keeps per-transport connection counters."""

    def __init__(
        self,
        reactor: Any,
        broker: Broker,
        config: TransportConfig,
        certificates: CertificateLookup | None = None,
    ) -> None:
        self.reactor = reactor
        self.broker = broker
        self.config = config
        self.certificates = certificates or CertificateLookup()
        self.counters = {name: TransportCounter(name) for name in TRANSPORTS}
        # Built here so that a bad certificate fails at start, before anything listens.
        self.tls = (
            ServerTLS(
                config.tls_cert, config.tls_key or config.tls_cert, config.tls_ca, config.tls_crl
            )
            if config.tls_cert is not None
            else None
        )

    def listen(
        self,
        host: str,
        mqtt_port: int,
        backlog: int = 4096,
        reuse_port: bool = False,
        accept_batch: int = 256,
    ) -> dict[str, Any]:
        """Start every configured listener; returns
        ``{"mqtt"|"tls"|"ws"|"wss": IListeningPort}``. ``backlog`` (capped by the kernel's
        ``net.core.somaxconn``) is the accept queue of each; plain MQTT accepts up to
        ``accept_batch`` connections per reactor turn."""
        config = self.config
        listeners: dict[str, Any] = {}

        def start(name: str, port: int, factory: Any) -> None:
            # Plain MQTT, where the connections are counted in tens of thousands, gets the
            # lean transport; TLS and WebSocket keep Twisted's.
            try:
                if name == "mqtt":
                    listeners[name] = listen_lean(
                        self.reactor, port, factory, host, backlog, reuse_port, accept_batch
                    )
                else:
                    listeners[name] = listen(
                        self.reactor, port, factory, host, backlog=backlog, reuse_port=reuse_port
                    )
            except Exception:
                for started in listeners.values():
                    started.stopListening()
                raise

        start("mqtt", mqtt_port, MqttTransportFactory(self.broker, self.counters["tcp"]))
        if self.tls is not None:
            factory = tls_factory(self.broker, self.counters["tls"], self.tls, self.certificates)
            start("tls", config.tls_port, factory)
        if config.ws_port:
            ws = WebSocketMqttFactory(
                self.broker, self.counters["ws"], self.reactor, path=config.ws_path
            )
            start("ws", config.ws_port, ws)
        if self.tls is not None and config.wss_port:
            wss = WebSocketMqttFactory(
                self.broker,
                self.counters["wss"],
                self.reactor,
                path=config.ws_path,
                certificates=self.certificates,
            )
            start("wss", config.wss_port, QuietTLSFactory(self.tls, False, wss))  # type: ignore[arg-type]
        return listeners

    def samples(self) -> list[tuple[str, str, str, float, dict[str, str]]]:
        """``edge_transport_connections{transport=…}`` and accepted totals."""
        out: list[tuple[str, str, str, float, dict[str, str]]] = []
        for counter in self.counters.values():
            labels = {"transport": counter.name}
            out.append(
                (
                    "edge_transport_connections",
                    "gauge",
                    "Open network connections per transport",
                    counter.open,
                    labels,
                )
            )
            out.append(
                (
                    "edge_transport_accepted_total",
                    "counter",
                    "Accepted network connections per transport",
                    counter.accepted,
                    labels,
                )
            )
        return out
