"""Redis key names shared by webapp and edge (docs/bus.md). The only place they are spelled."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str = "tl:"

    @classmethod
    def from_env(cls) -> Keys:
        return cls(os.environ.get("REDIS_PREFIX", "tl:"))

    def device(self, identifier: str) -> str:
        return f"{self.prefix}dev:{identifier}"

    def product(self, identifier: str) -> str:
        return f"{self.prefix}prod:{identifier}"

    def app(self, key_id: str) -> str:
        """Hash: an application client's API key (``app:{key_id}`` on CONNECT)."""
        return f"{self.prefix}app:{key_id}"

    @property
    def registry_channel(self) -> str:
        return f"{self.prefix}registry"

    @property
    def uplink(self) -> str:
        return f"{self.prefix}uplink"

    @property
    def uplink_dead(self) -> str:
        """Uplink events the database refused, kept with the reason (docs/bus.md)."""
        return f"{self.prefix}uplink:dead"

    @property
    def route(self) -> str:
        return f"{self.prefix}route"

    def downlink(self, node: str) -> str:
        return f"{self.prefix}down:{node}"

    @property
    def nodes(self) -> str:
        return f"{self.prefix}nodes"

    @property
    def mqtt_subs(self) -> str:
        return f"{self.prefix}mqtt:subs"

    def mqtt_forward(self, node: str) -> str:
        return f"{self.prefix}mqtt:fwd:{node}"

    def mqtt_forward_queue(self, node: str) -> str:
        """List: batches of forwarded messages for one node, which it pops (edge.bus.cluster)."""
        return f"{self.prefix}mqtt:fwdq:{node}"

    def mqtt_forward_bytes(self, node: str) -> str:
        """Integer: the bytes waiting in ``mqtt_forward_queue(node)`` (the senders' bound)."""
        return f"{self.prefix}mqtt:fwdb:{node}"

    @property
    def mqtt_interest(self) -> str:
        """Channel: each change of ``mqtt_subs`` (filter and its new node list)."""
        return f"{self.prefix}mqtt:interest"

    @property
    def mqtt_retained(self) -> str:
        """Hash topic → encoded retained message, shared by all nodes."""
        return f"{self.prefix}mqtt:retained"

    @property
    def mqtt_retain_channel(self) -> str:
        """Channel: each change of ``mqtt_retained``, in the order Redis applied them."""
        return f"{self.prefix}mqtt:retain"

    @property
    def mqtt_clients(self) -> str:
        """Hash MQTT client id → node holding its session (cross-node takeover)."""
        return f"{self.prefix}mqtt:clients"

    @property
    def mqtt_sessions(self) -> str:
        """Hash MQTT client id → node owning its persisted session (edge.bus.sessions)."""
        return f"{self.prefix}mqtt:sessions"

    def mqtt_session(self, client_id: str) -> str:
        """Hash: one persistent session's ``owner``, ``meta`` and ``subs``."""
        return f"{self.prefix}mqtt:sess:{client_id}"

    def mqtt_session_queue(self, client_id: str) -> str:
        """List: the messages queued for one persistent session."""
        return f"{self.prefix}mqtt:sessq:{client_id}"

    def auth_failures(self, kind: str, value: str) -> str:
        """Counter: failed authentications of one client address (``addr``) or user name
        (``user``) in the current window (edge.throttle)."""
        return f"{self.prefix}auth:fail:{kind}:{value}"

    @property
    def auth_blocked_channel(self) -> str:
        """Channel: ``{remaining ms} {address}`` when an address reaches its failure limit."""
        return f"{self.prefix}auth:blocked"

    def signed_password(self, username: str, ts_ms: int) -> str:
        """Marks a signed password (``hmac-sha256:{ts}:…``) of ``username`` as used while its
        timestamp is still accepted: each is accepted once (edge.auth)."""
        return f"{self.prefix}auth:signed:{username}:{ts_ms}"

    def latest(self, identifier: str) -> str:
        return f"{self.prefix}latest:{identifier}"

    @property
    def latest_dirty(self) -> str:
        """Devices whose latest values changed since they were last persisted to SQL."""
        return f"{self.prefix}latest-dirty"

    def command_reply(self, command_id: int) -> str:
        """webapp only: a list the ingest worker pushes to when a command completes, so that a
        synchronous API call waiting on it (BLPOP) returns at once."""
        return f"{self.prefix}cmd:reply:{command_id}"

    def registration_done(self, device: str, ts: int) -> str:
        """webapp only: marks one ``register`` event as answered (the handler is idempotent)."""
        return f"{self.prefix}reg:{device}:{ts}"

    def import_secrets(self, token: str) -> str:
        """webapp only: the encrypted secrets of one device import, downloadable once."""
        return f"{self.prefix}import:secrets:{token}"

    @property
    def console_watched(self) -> str:
        """webapp only: a sorted set of the devices someone watches in the console, scored by
        when the watch lapses (ms); ingest pushes live updates for these devices only."""
        return f"{self.prefix}console:watched"

    @property
    def console_debug(self) -> str:
        """webapp only: a sorted set of the console's open debug streams (one member per
        socket), scored by when each lapses (ms); ingest pushes message log lines to the debug
        group only while one is open."""
        return f"{self.prefix}console:debug"

    def console_messages(self, minute: int) -> str:
        """webapp only: a hash of the device messages ingested in one minute (epoch minute),
        counted by result (`accepted`, `rejected`), for the console dashboard."""
        return f"{self.prefix}console:msgs:{minute}"

    @property
    def console_rejected(self) -> str:
        """webapp only: a capped list of the latest rejected device messages (JSON)."""
        return f"{self.prefix}console:rejected"


UPLINK_GROUP = "ingest"
UPLINK_MAXLEN = 1_000_000
