"""Wiring of one edge node: Redis clients, registry, uplink/downlink, the broker, listeners.

``python -m edge`` runs it from the environment; tests build :class:`EdgeService` inside their
own reactor and use the ports it reports.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from .bus.cluster import Cluster
from .bus.downlink import Downlink
from .bus.keys import Keys
from .bus.redis import RedisAddress, RedisConnector
from .bus.registry import Registry
from .bus.sessions import SessionStore
from .bus.uplink import Uplink
from .crypto import MissingSecretKey, load_secret_key
from .gctune import MemoryTrimmer
from .http.api import DeviceApi
from .http.config import HttpConfig
from .metrics import MetricsResource, QuietSite, listen_overflows
from .mqtt.broker import Broker, BrokerConfig
from .mqtt.errors import Reason
from .snapshot import certificate_samples
from .thinglinks.mqtt import EdgeHooks
from .transports.coap import CoapConfig, CoapServer
from .transports.http_device import HttpDeviceFactory
from .transports.listeners import TransportConfig, Transports
from .transports.rawcommon import CodecCatalog, RawConfig
from .transports.rawtcp import RawTcpFactory
from .transports.rawudp import RawUdpProtocol
from .transports.tcp import listen, listen_datagram
from .transports.tls import CertificateLookup

log = Logger(namespace="edge")

HEARTBEAT_SECONDS = 5.0
TRIM_CHECK_SECONDS = 2.0
# How often the binary codecs of raw TCP and UDP products are read again whole.
CODEC_REFRESH_SECONDS = 60.0


class ConfigError(ValueError):
    pass


def default_node_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True, slots=True)
class EdgeConfig:
    redis_url: str
    prefix: str = "tl:"
    mqtt_port: int = 11883
    host: str = "0.0.0.0"
    node_id: str = field(default_factory=default_node_id)
    metrics_port: int = 19100
    # /metrics has no authentication: loopback unless EDGE_METRICS_HOST says otherwise.
    metrics_host: str = "127.0.0.1"
    allow_anonymous: bool = False
    acl_deny: tuple[str, ...] = ()
    secret_key: str | None = None
    transports: TransportConfig = field(default_factory=TransportConfig)
    # Limits and budgets (EDGE_MAX_*, EDGE_IDENTITY_*, EDGE_PUBLISH_*: BrokerConfig.from_env).
    broker: BrokerConfig = field(default_factory=BrokerConfig)
    # Raw TCP and UDP devices (EDGE_TCP_PORT, EDGE_UDP_PORT, 0 = off) and their budgets.
    raw: RawConfig = field(default_factory=RawConfig)
    # The HTTP device API (EDGE_HTTP_PORT, 0 = off) and its budgets (EDGE_HTTP_*).
    http: HttpConfig = field(default_factory=HttpConfig)
    # CoAP devices on UDP (EDGE_COAP_PORT, 0 = off) and their budgets (EDGE_COAP_MAX_*).
    coap: CoapConfig = field(default_factory=CoapConfig)
    # A device without a connection (HTTP, CoAP, UDP) stays online this many seconds after it
    # was last heard from (EDGE_DEVICE_LEASE); at most EDGE_MAILBOX_MAX downlink messages wait
    # for it, none longer than the lease (edge.thinglinks.endpoints).
    device_lease: float = 300.0
    mailbox_max: int = 16
    # Set by the worker launcher (edge.workers) when several processes share the ports.
    reuse_port: bool = False
    # The accept queue of each listening port (EDGE_LISTEN_BACKLOG; the kernel caps it at
    # net.core.somaxconn, and tcp_max_syn_backlog bounds half-open connections), and how
    # many MQTT connections one reactor turn accepts at most (EDGE_ACCEPT_BATCH).
    listen_backlog: int = 4096
    accept_batch: int = 256
    # Behind Redis Sentinel a QoS 1/2 message (an HTTP or CoAP report too) is acknowledged
    # only once this many replicas have its stream entry (EDGE_REDIS_WAIT_REPLICAS: 1 with a
    # redis+sentinel:// URL, else 0 = the master's reply is enough), waiting at most
    # EDGE_REDIS_WAIT_TIMEOUT_MS (docs/bus.md, "Redis failover").
    redis_wait_replicas: int = 0
    redis_wait_timeout_ms: int = 1000
    # EDGE_REDIS_WAIT_STRICT=1: never acknowledge with fewer replicas than that, even when the
    # master has none left (after a failover of a one-replica set: QoS 1 is then refused).
    redis_wait_strict: bool = False
    # Bytes forwarded to one other node (worker) and not yet taken by it before QoS 0 messages
    # for it are dropped and QoS 1/2 publishers held (EDGE_CLUSTER_FORWARD_LIMIT; edge.bus.cluster).
    cluster_forward_limit: int = 8 * 1024 * 1024

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> EdgeConfig:
        redis_url = env.get("REDIS_URL", "").strip()
        if not redis_url:
            raise ConfigError(
                "REDIS_URL is required (redis://host:port/db, rediss://host:port/db for TLS, "
                "unix:///path.sock?db=N or "
                "redis+sentinel://host:26379,host2:26379/mymaster/db)"
            )
        try:
            address = RedisAddress.parse(redis_url)
            wait_replicas = int(
                env.get("EDGE_REDIS_WAIT_REPLICAS") or (1 if address.is_sentinel else 0)
            )
            wait_timeout_ms = int(env.get("EDGE_REDIS_WAIT_TIMEOUT_MS") or 1000)
            if not (0 <= wait_replicas <= 16) or not (1 <= wait_timeout_ms <= 60_000):
                raise ValueError(
                    "EDGE_REDIS_WAIT_REPLICAS must be 0..16 and EDGE_REDIS_WAIT_TIMEOUT_MS "
                    "1..60000"
                )
            mqtt_port = int(env.get("EDGE_MQTT_PORT") or 11883)
            metrics_port = int(env.get("EDGE_METRICS_PORT") or 19100)
            transports = TransportConfig.from_env(env)
            broker = BrokerConfig.from_env(env)
            raw = RawConfig.from_env(env)
            http = HttpConfig.from_env(env)
            coap = CoapConfig.from_env(env)
            device_lease = float(env.get("EDGE_DEVICE_LEASE") or 300)
            mailbox_max = int(env.get("EDGE_MAILBOX_MAX") or 16)
            listen_backlog = int(env.get("EDGE_LISTEN_BACKLOG") or 4096)
            accept_batch = int(env.get("EDGE_ACCEPT_BATCH") or 256)
            forward_limit = int(env.get("EDGE_CLUSTER_FORWARD_LIMIT") or 8 * 1024 * 1024)
            if not (64 * 1024 <= forward_limit <= 1 << 30):
                raise ValueError("EDGE_CLUSTER_FORWARD_LIMIT must be 65536..1073741824 bytes")
            if not (1 <= listen_backlog <= 1 << 20) or not (1 <= accept_batch <= 100_000):
                raise ValueError(
                    "EDGE_LISTEN_BACKLOG must be 1..1048576 and EDGE_ACCEPT_BATCH 1..100000"
                )
            if not (1 <= device_lease <= 86_400) or not (1 <= mailbox_max <= 10_000):
                raise ValueError(
                    "EDGE_DEVICE_LEASE must be 1..86400 seconds and EDGE_MAILBOX_MAX 1..10000"
                )
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        deny = tuple(f.strip() for f in (env.get("EDGE_ACL_DENY") or "").split(",") if f.strip())
        try:
            secret_key = load_secret_key(env)
        except MissingSecretKey as exc:
            raise ConfigError(str(exc)) from None
        return cls(
            redis_url=redis_url,
            prefix=env.get("REDIS_PREFIX") or "tl:",
            mqtt_port=mqtt_port,
            host=env.get("EDGE_HOST") or "0.0.0.0",
            node_id=env.get("EDGE_NODE_ID") or default_node_id(),
            metrics_port=metrics_port,
            metrics_host=env.get("EDGE_METRICS_HOST") or "127.0.0.1",
            allow_anonymous=_flag(env.get("EDGE_ALLOW_ANONYMOUS")),
            acl_deny=deny,
            secret_key=secret_key,
            transports=transports,
            broker=broker,
            raw=raw,
            http=http,
            coap=coap,
            device_lease=device_lease,
            mailbox_max=mailbox_max,
            reuse_port=_flag(env.get("EDGE_REUSE_PORT")),
            listen_backlog=listen_backlog,
            accept_batch=accept_batch,
            redis_wait_replicas=wait_replicas,
            redis_wait_timeout_ms=wait_timeout_ms,
            redis_wait_strict=_flag(env.get("EDGE_REDIS_WAIT_STRICT")),
            cluster_forward_limit=forward_limit,
        )


class EdgeService:
    """One edge node. ``start()`` and ``stop()`` return Deferreds."""

    def __init__(
        self, config: EdgeConfig, reactor: Any, broker_config: BrokerConfig | None = None
    ) -> None:
        self.config = config
        self.reactor = reactor
        self.keys = Keys(config.prefix)
        connector = RedisConnector(reactor, RedisAddress.parse(config.redis_url))
        self.redis = connector.client("redis")
        self.registry = Registry(self.redis, self.keys, config.secret_key)
        # Waiting for replicas (WAIT) holds its connection: the uplink gets its own then.
        self.uplink_redis = (
            connector.client("uplink") if config.redis_wait_replicas else self.redis
        )
        self.uplink = Uplink(
            self.uplink_redis,
            self.keys,
            reactor,
            wait_replicas=config.redis_wait_replicas,
            wait_timeout_ms=config.redis_wait_timeout_ms,
            wait_strict=config.redis_wait_strict,
        )
        self.certificates = CertificateLookup()
        self.hooks = EdgeHooks(
            clock=reactor,
            redis=self.redis,
            keys=self.keys,
            registry=self.registry,
            uplink=self.uplink,
            node=config.node_id,
            allow_anonymous=config.allow_anonymous,
            acl_deny=config.acl_deny,
            certificates=self.certificates,
            device_lease=config.device_lease,
            mailbox_limit=config.mailbox_max,
        )
        self.broker = Broker(reactor, self.hooks, broker_config or config.broker)
        self.transports = Transports(reactor, self.broker, config.transports, self.certificates)
        self.hooks.broker = self.broker
        self.registry.on_change = self._registry_changed
        self.codecs = CodecCatalog(self.redis, self.keys)
        self._codec_refresh = LoopingCall(self.codecs.refresh)
        self._codec_refresh.clock = reactor
        self.rawtcp = RawTcpFactory(reactor, self.hooks, self.codecs, config.raw)
        self.rawudp = RawUdpProtocol(reactor, self.hooks, self.codecs, config.raw)
        self.cluster = Cluster(
            reactor,
            connector,
            self.redis,
            self.keys,
            config.node_id,
            self.broker,
            forward_limit=config.cluster_forward_limit,
        )
        self.cluster.attach()
        self.sessions = SessionStore(self.redis, self.keys, config.node_id, self.broker)
        self.sessions.attach()
        self.subscriber = connector.subscriber(
            [self.keys.registry_channel, self.keys.auth_blocked_channel],
            on_message=self._bus_message,
            on_subscribed=self.registry.clear,
        )
        self.downlink = Downlink(
            reactor,
            connector,
            self.keys.downlink(config.node_id),
            self.hooks.deliver_downlink,
            on_batch_done=self._downlink_done,
        )
        self.coap = CoapServer(
            reactor, self.hooks.auth, self.hooks.pipeline, self.hooks.endpoints, config.coap
        )
        self.http = HttpDeviceFactory(
            DeviceApi(self.hooks, config.http, reactor), self.broker, config.http, reactor
        )
        self.listeners: dict[str, Any] = {}
        self.started_at = 0.0
        self._heartbeat = LoopingCall(self._beat)
        self._heartbeat.clock = reactor
        # After a connect burst (or a mass disconnect), free C heap pages go back to the
        # system once the count settles (edge.gctune; docs/performance.md).
        self.trimmer = MemoryTrimmer(lambda: len(self.broker.connections))
        self._trim = LoopingCall(self.trimmer.check)
        self._trim.clock = reactor

    @property
    def mqtt_port(self) -> int:
        return int(self.listeners["mqtt"].getHost().port)

    @property
    def tls_port(self) -> int:
        return int(self.listeners["tls"].getHost().port)

    @property
    def ws_port(self) -> int:
        return int(self.listeners["ws"].getHost().port)

    @property
    def http_port(self) -> int:
        return int(self.listeners["http"].getHost().port)

    @property
    def metrics_port(self) -> int:
        return int(self.listeners["metrics"].getHost().port)

    def start(self) -> Deferred[EdgeService]:
        return Deferred.fromCoroutine(self._start())

    async def _start(self) -> EdgeService:
        config = self.config
        log.info(
            "edge node {node} starting; Redis {redis}",
            node=config.node_id,
            redis=str(self.redis.address),
        )
        await self.redis.start()
        if self.uplink_redis is not self.redis:
            await self.uplink_redis.start()
        # The heartbeat first: a node taking over thousands of sessions and filters at start
        # (a restart after SIGKILL with many persistent sessions) takes a while, and without
        # it the other nodes would take it for silent and drop its filters meanwhile.
        self.started_at = self.reactor.seconds()
        self._heartbeat.start(HEARTBEAT_SECONDS, now=True)
        self._trim.start(TRIM_CHECK_SECONDS, now=False)
        await self.subscriber.start()
        await self.downlink.start()
        self.cluster.hold_queue()
        await self.cluster.start()
        await self.sessions.start()
        # Then what was forwarded to a previous process of this node reaches those sessions
        # (before listening: no new connection gets what was published before it came).
        await self.cluster.open_queue()
        # Devices a killed previous process of this node held are offline (before listening:
        # no connection of ours is among them).
        await self.hooks.presence.forget_previous_process()
        self.broker.start()
        self.listeners.update(
            self.transports.listen(
                config.host,
                config.mqtt_port,
                backlog=config.listen_backlog,
                reuse_port=config.reuse_port,
                accept_batch=config.accept_batch,
            )
        )
        if config.coap.port:
            self.listeners["coap"] = listen_datagram(
                self.reactor, config.coap.port, self.coap, config.host, config.reuse_port
            )
        if config.http.port:
            self.listeners["http"] = listen(
                self.reactor, config.http.port, self.http, config.host,
                backlog=config.listen_backlog, reuse_port=config.reuse_port,
            )  # fmt: skip
        self._listen_raw()
        site = QuietSite(MetricsResource(self.samples, lambda: self.redis.connected))
        self.listeners["metrics"] = self.reactor.listenTCP(
            config.metrics_port, site, interface=config.metrics_host
        )
        log.info(
            "edge node {node} listening: MQTT on {host}:{mqtt}{more}, metrics on "
            "{metrics_host}:{metrics}"
            "{anon}",
            node=config.node_id,
            host=config.host,
            mqtt=self.mqtt_port,
            more="".join(
                f", {name.upper()} on {port.getHost().port}"
                for name, port in self.listeners.items()
                if name in ("tls", "ws", "wss", "coap", "http")
            ),
            metrics_host=config.metrics_host,
            metrics=self.metrics_port,
            anon=" (anonymous clients allowed)" if config.allow_anonymous else "",
        )
        return self

    def stop(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        log.info("edge node {node} stopping", node=self.config.node_id)
        for listener in self.listeners.values():
            await listener.stopListening()
        if self._heartbeat.running:
            self._heartbeat.stop()
        if self._trim.running:
            self._trim.stop()
        if self._codec_refresh.running:
            self._codec_refresh.stop()
        self.http.close_all()
        # Devices without a connection of their own (HTTP, CoAP…) go offline with the node.
        self.hooks.endpoints.stop()
        self.coap.stop()
        for connection in list(self.broker.connections):
            connection.close(Reason.SERVER_SHUTTING_DOWN, "shutdown")
        self.broker.flush()
        self.broker.stop()
        await self.sessions.stop()
        await self.cluster.stop()
        await self.uplink.drain()
        # Stopped cleanly: the devices' offline events are written, the online stamp (needed
        # after a crash only) goes.
        self.hooks.presence.close()
        if self.redis.connected:
            try:
                await self.redis.execute("HDEL", self.keys.nodes, self.config.node_id)
            except Exception as exc:
                log.warn("could not remove the node heartbeat: {error}", error=str(exc))
        await self.downlink.stop()
        await self.subscriber.stop()
        if self.uplink_redis is not self.redis:
            await self.uplink_redis.stop()
        await self.redis.stop()
        log.info("edge node {node} stopped", node=self.config.node_id)

    def _beat(self) -> None:
        info = {
            "pid": os.getpid(),
            "started": int(self.started_at * 1000),
            "conns": len(self.broker.connections),
            "ts": int(self.reactor.seconds() * 1000),
        }
        d = self.redis.execute("HSET", self.keys.nodes, self.config.node_id, json.dumps(info))
        d.addErrback(lambda f: log.warn("heartbeat failed: {error}", error=f.getErrorMessage()))

    def _listen_raw(self) -> None:
        """Raw TCP and UDP devices; their products' binary codecs are read now and then."""
        config = self.config
        self._codec_refresh.start(CODEC_REFRESH_SECONDS, now=True)
        if config.raw.tcp_port:
            self.listeners["rawtcp"] = listen(
                self.reactor, config.raw.tcp_port, self.rawtcp, config.host,
                backlog=config.listen_backlog, reuse_port=config.reuse_port,
            )  # fmt: skip
        if config.raw.udp_port:
            self.listeners["rawudp"] = listen_datagram(
                self.reactor, config.raw.udp_port, self.rawudp, config.host, config.reuse_port
            )
        for name in ("rawtcp", "rawudp"):
            if name in self.listeners:
                port = self.listeners[name].getHost().port
                log.info("{name} devices on {host}:{port}", name=name, host=config.host, port=port)

    def _registry_changed(self, kind: str, identifier: str) -> None:
        self.hooks.registry_changed(kind, identifier)
        self.codecs.changed(kind, identifier)

    def _bus_message(self, channel: bytes, data: bytes) -> None:
        """``tl:registry`` (webapp's changes), or an address over its failed-authentication
        budget announced by any edge worker (edge.throttle)."""
        if channel == self.keys.auth_blocked_channel.encode():
            self.hooks.throttle.announced(data)
        else:
            self.registry.changed(data)

    def _downlink_done(self, ids: list[bytes]) -> None:
        d = self.redis.execute("XDEL", self.keys.downlink(self.config.node_id), *ids)
        d.addErrback(
            lambda f: log.warn(
                "XDEL of delivered downlink entries failed: {error}", error=f.getErrorMessage()
            )
        )

    def samples(self) -> list[tuple[Any, ...]]:
        stats = self.broker.stats
        samples: list[tuple[Any, ...]] = [
            ("edge_connections", "gauge", "Open MQTT connections", len(self.broker.connections)),
            (
                "edge_sessions",
                "gauge",
                "MQTT sessions (online and persistent)",
                len(self.broker.sessions),
            ),
            (
                "edge_subscriptions",
                "gauge",
                "Non-shared subscriptions",
                len(self.broker.subscriptions),
            ),
            ("edge_retained_messages", "gauge", "Retained messages", len(self.broker.retained)),
            ("edge_messages_in_total", "counter", "PUBLISH packets received", stats["messages_in"]),
            ("edge_messages_out_total", "counter", "PUBLISH packets sent", stats["messages_out"]),
            (
                "edge_messages_dropped_total",
                "counter",
                "Messages dropped (queue full, too large)",
                stats["dropped"],
            ),
            ("edge_bytes_in_total", "counter", "Bytes received from clients", stats["bytes_in"]),
            ("edge_bytes_out_total", "counter", "Bytes sent to clients", stats["bytes_out"]),
            ("edge_auth_failures_total", "counter", "Refused CONNECTs", stats["auth_failures"]),
            (
                "edge_uplink_pending_events",
                "gauge",
                "Events waiting for the next XADD",
                self.uplink.pending,
            ),
            (
                "edge_uplink_entries_total",
                "counter",
                "Uplink stream entries written",
                self.uplink.entries_written,
            ),
            (
                "edge_uplink_events_total",
                "counter",
                "Uplink events written",
                self.uplink.events_written,
            ),
            (
                "edge_uplink_failures_total",
                "counter",
                "Uplink writes that failed",
                self.uplink.failures,
            ),
            (
                "edge_uplink_unreplicated_total",
                "counter",
                "Acknowledged-on-store writes that fewer replicas than EDGE_REDIS_WAIT_REPLICAS "
                "confirmed in time",
                self.uplink.unreplicated,
            ),
            (
                "edge_redis_connected",
                "gauge",
                "1 when the Redis command connection is up",
                int(self.redis.connected),
            ),
        ]
        samples.extend(self.broker.samples())
        samples.extend(self.transports.samples())
        samples.extend(self.http.samples())
        samples.extend(self.coap.samples())
        samples.extend(self.rawtcp.samples())
        samples.extend(self.rawudp.samples())
        samples.extend(self.cluster.samples())
        samples.extend(self._queue_samples())
        samples.extend(self._connect_samples())
        samples.extend(certificate_samples(self.config.transports.tls_cert))
        return samples

    def _connect_samples(self) -> list[tuple[Any, ...]]:
        """Connections the edge refused or could not take: by an accept error of the MQTT
        port (out of descriptors…), by the per-address budget; and the kernel's listen
        queue overflows (the whole host's: /proc/net/netstat)."""
        refused: dict[str, int] = {"files": 0}
        port = self.listeners.get("mqtt")
        refused.update(getattr(port, "refused", {}))
        refused["connections_per_address"] = self.broker.refusals.get("connections_per_address", 0)
        out: list[tuple[Any, ...]] = [
            (
                "edge_connects_refused_total",
                "counter",
                "MQTT connections refused at accept, per reason",
                count,
                {"reason": reason},
            )
            for reason, count in refused.items()
        ]
        overflows = listen_overflows()
        if overflows is not None:
            out.append(
                (
                    "edge_host_listen_overflows",
                    "gauge",
                    "Connections the kernel dropped because an accept queue was full (whole "
                    "host, TcpExtListenOverflows; raise EDGE_LISTEN_BACKLOG and somaxconn)",
                    overflows,
                )
            )
        return out

    def _queue_samples(self) -> list[tuple[Any, ...]]:
        """Messages waiting in sessions: queued (not yet sent) and in flight (sent, not yet
        acknowledged). One pass over the sessions per scrape."""
        queued = inflight = queued_bytes = 0
        for session in self.broker.sessions.values():
            inflight += len(session.inflight)
            if session.pending:
                queued += len(session.pending)
                queued_bytes += session.queued_bytes
        return [
            ("edge_queued_messages", "gauge", "QoS 1/2 messages queued in sessions", queued),
            (
                "edge_queued_bytes",
                "gauge",
                "Bytes (topics and payloads) of the messages queued in sessions",
                queued_bytes,
            ),
            ("edge_inflight_messages", "gauge", "QoS 1/2 messages awaiting an ack", inflight),
        ]
