"""What the edge knows about devices and products: ``tl:dev:*`` / ``tl:prod:*`` hashes read from
Redis, cached in memory and dropped when ``tl:registry`` announces a change (docs/bus.md)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from edge.acl import AclRule, parse_rules
from edge.crypto import InvalidToken, decrypt_secret
from edge.frames.codec import Codec
from edge.frames.errors import SpecError
from edge.thingmodel import ThingModel

from .client import Commands
from .keys import Keys

log = Logger(namespace="edge.registry")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    identifier: str
    product: str
    secret: str | None
    status: str
    node_type: str
    gateway: str
    cert_fp: str = ""  # SHA-256 fingerprints of the device's TLS client certificates
    # ThingLinks envelope keys (decrypted): dataSign check, cipherFlag 1/2 bodies.
    sign_key: str | None = None
    encrypt_key: str | None = None
    encrypt_vector: str | None = None
    acl: tuple[AclRule, ...] = ()
    # Who owns the device, for the data scope of application clients: the id of its
    # department and of the user who created it ("" when none).
    department: str = ""
    owner: str = ""


@dataclass(frozen=True, slots=True)
class ProductRecord:
    identifier: str
    type: str
    model: ThingModel | None
    model_error: str | None
    secret: str | None = None  # dynamic registration (decrypted); None: registration off
    acl: tuple[AclRule, ...] = ()
    status: str = "enabled"  # "disabled": its devices are refused and disconnected
    # The transport its devices use (mqtt, websocket, http, coap, tcp, udp): see ``admits``.
    protocol: str = "mqtt"
    # The product's binary frame codec (raw TCP and UDP devices that speak their own bytes),
    # or None: the default codec (JSON lines / datagrams). ``codec_error`` says why a
    # published codec could not be used (its devices are then refused with that reason).
    codec: Codec | None = None
    codec_error: str | None = None

    @property
    def disabled(self) -> bool:
        return self.status == "disabled"

    def admits(self, transport: str) -> bool:
        """Whether a device of this product may connect over ``transport`` (``mqtt`` covers
        MQTT over TCP, TLS and WebSocket; ``http``, ``coap``, ``tcp``, ``udp`` the device
        transports of the same names). A product's protocol names its transport: MQTT and
        MQTT over WebSocket are one family, every other transport only admits itself."""
        if self.protocol in ("mqtt", "websocket", ""):
            return transport == "mqtt"
        return transport == self.protocol


@dataclass(frozen=True, slots=True)
class AppRecord:
    """An application client (``app:{key id}`` on CONNECT): a platform API key, with the
    data scope of its user: every device (``everything``), or the devices of
    ``departments`` and those the user created (``owner``, a user id)."""

    key_id: str
    key_hash: str  # SHA-256 hex of the full API key
    user: str
    expires_ms: int | None
    acl: tuple[AclRule, ...] = ()
    everything: bool = False
    departments: frozenset[str] = frozenset()
    owner: str = ""

    def reaches(self, device: DeviceRecord) -> bool:
        """Whether the key's user may see ``device`` (its data scope)."""
        if self.everything:
            return True
        if device.department and device.department in self.departments:
            return True
        return bool(self.owner) and device.owner == self.owner


def _text(fields: dict[bytes, bytes], name: str) -> str:
    return fields.get(name.encode(), b"").decode("utf-8", "replace")


def _shared(fields: dict[bytes, bytes], name: str) -> str:
    """A field whose values many records repeat (a product, a status, a department): one
    string for all of them instead of ~55 bytes per cached record."""
    return sys.intern(_text(fields, name))


def _pairs(reply: list[bytes]) -> dict[bytes, bytes]:
    return dict(zip(reply[::2], reply[1::2]))


def _decrypted(
    fields: dict[bytes, bytes], name: str, what: str, secret_key: str | None
) -> str | None:
    """A Fernet-encrypted field in plain text; None when absent or not decryptable."""
    token = _text(fields, name)
    if not token:
        return None
    try:
        return decrypt_secret(token, secret_key)
    except InvalidToken:
        log.error(
            "cannot decrypt {field} of {what} (DJANGO_SECRET_KEY differs?)", field=name, what=what
        )
        return None


def parse_device(
    identifier: str, reply: list[bytes], secret_key: str | None
) -> DeviceRecord | None:
    """A device record from an HGETALL reply (``None`` when the hash does not exist)."""
    if not reply:
        return None
    fields = _pairs(reply)
    what = f"device {identifier}"
    secret = _decrypted(fields, "secret", what, secret_key)
    return DeviceRecord(
        identifier=identifier,
        product=_shared(fields, "product"),
        secret=secret,
        status=_shared(fields, "status") or "activated",
        node_type=_shared(fields, "node_type") or "direct",
        gateway=_shared(fields, "gateway"),
        cert_fp=_text(fields, "cert_fp"),
        sign_key=_decrypted(fields, "sign_key", what, secret_key),
        encrypt_key=_decrypted(fields, "encrypt_key", what, secret_key),
        encrypt_vector=_decrypted(fields, "encrypt_vector", what, secret_key),
        acl=parse_rules(fields.get(b"acl")),
        department=_shared(fields, "department"),
        owner=_shared(fields, "owner"),
    )


def parse_app(key_id: str, reply: list[bytes]) -> AppRecord | None:
    if not reply:
        return None
    fields = _pairs(reply)
    key_hash = _text(fields, "key_hash").lower()
    if len(key_hash) != 64:
        return None
    expires = _text(fields, "expires")
    # No scope published (an older webapp): no device at all rather than every device.
    scope = _text(fields, "scope")
    departments = _text(fields, "departments")
    return AppRecord(
        key_id,
        key_hash,
        _text(fields, "user"),
        int(expires) if expires.isdigit() else None,
        parse_rules(fields.get(b"acl")),
        everything=scope == "all",
        departments=frozenset(d for d in departments.split(",") if d),
        owner=_text(fields, "owner"),
    )


def parse_product(
    identifier: str, reply: list[bytes], secret_key: str | None = None
) -> ProductRecord | None:
    if not reply:
        return None
    fields = _pairs(reply)
    model: ThingModel | None = None
    error: str | None = None
    raw = fields.get(b"model")
    if raw:
        try:
            model = ThingModel.from_json(json.loads(raw))
        except (ValueError, TypeError, AttributeError) as exc:
            error = f"invalid thing model: {exc}"
            log.error("product {product}: {error}", product=identifier, error=error)
    else:
        error = "the product has no thing model"
    codec: Codec | None = None
    codec_error: str | None = None
    raw_codec = fields.get(b"codec")
    if raw_codec:
        try:
            codec = Codec.published(raw_codec)
        except (SpecError, ValueError) as exc:
            codec_error = f"invalid codec: {exc}"
            log.error("product {product}: {error}", product=identifier, error=codec_error)
    return ProductRecord(
        identifier,
        _text(fields, "type") or "common",
        model,
        error,
        _decrypted(fields, "secret", f"product {identifier}", secret_key),
        parse_rules(fields.get(b"acl")),
        _text(fields, "status") or "enabled",
        _text(fields, "protocol") or "mqtt",
        codec,
        codec_error,
    )


class AsyncCache(Generic[T]):
    """Values loaded on first use; concurrent lookups share one load; ``drop`` wins over a load
    that is still running (its result is returned but not kept).

    Bounded without ever forgetting everything at once: values live in two generations of at
    most ``max_entries // 2`` each. A full young generation becomes the old one and the old
    one is forgotten; a value used while old moves back to the young one. What leaves is thus
    what was not used for a whole generation (a cheap LRU: a hit costs one dict lookup).
    A ``None`` value (nothing in Redis) is kept apart, at most ``max_missing`` of them, each
    for ``missing_ttl`` seconds only: lookups of names that do not exist (a client trying
    random device topics) neither push real entries out nor pin a miss for long.
    """

    def __init__(
        self,
        load: Callable[[str], Deferred[T]],
        max_entries: int = 200_000,
        *,
        max_missing: int = 10_000,
        missing_ttl: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._load = load
        self.max_entries = max_entries
        self.max_missing = max_missing
        self.missing_ttl = missing_ttl
        self._now = clock
        self.values: dict[str, T] = {}  # the young generation
        self._old: dict[str, T] = {}
        # Names found missing → when that answer expires (insertion order: oldest first).
        self.missing: dict[str, float] = {}
        self._loading: dict[str, list[Deferred[T]]] = {}
        self._stale: set[str] = set()

    def __len__(self) -> int:
        return len(self.values) + len(self._old)

    def get(self, key: str) -> T | Deferred[T]:
        try:
            return self.values[key]
        except KeyError:
            pass
        old = self._old
        if key in old:
            value = old.pop(key)
            self._keep(key, value)
            return value
        missing = self.missing
        if key in missing:
            if missing[key] > self._now():
                return None  # type: ignore[return-value]
            del missing[key]
        d: Deferred[T] = Deferred()
        waiting = self._loading.get(key)
        if waiting is not None:
            waiting.append(d)
            return d
        self._loading[key] = [d]
        self._load(key).addCallbacks(
            self._loaded, self._failed, callbackArgs=(key,), errbackArgs=(key,)
        )
        return d

    def _keep(self, key: str, value: T) -> None:
        if len(self.values) >= max(self.max_entries // 2, 1):
            self._old = self.values
            self.values = {}
        self.values[key] = value

    def _loaded(self, value: T, key: str) -> None:
        waiting = self._loading.pop(key, [])
        if key in self._stale:
            self._stale.discard(key)
        elif value is None:
            missing = self.missing
            if len(missing) >= self.max_missing:
                del missing[next(iter(missing))]
            missing[key] = self._now() + self.missing_ttl
        else:
            self._keep(key, value)
        for d in waiting:
            d.callback(value)

    def _failed(self, failure: Any, key: str) -> None:
        waiting = self._loading.pop(key, [])
        self._stale.discard(key)
        for d in waiting:
            d.errback(failure)

    def drop(self, key: str) -> None:
        self.values.pop(key, None)
        self._old.pop(key, None)
        self.missing.pop(key, None)
        if key in self._loading:
            self._stale.add(key)

    def clear(self) -> None:
        self.values.clear()
        self._old.clear()
        self.missing.clear()
        self._stale.update(self._loading)


class Registry:
    """Cached device and product records."""

    def __init__(self, redis: Commands, keys: Keys, secret_key: str | None = None) -> None:
        self.redis = redis
        self.keys = keys
        self.secret_key = secret_key
        self.devices: AsyncCache[DeviceRecord | None] = AsyncCache(self._load_device)
        self.products: AsyncCache[ProductRecord | None] = AsyncCache(self._load_product)
        self.apps: AsyncCache[AppRecord | None] = AsyncCache(self._load_app, 10_000)
        # Told of each device or product change (kind, identifier) after its copy is dropped.
        self.on_change: Callable[[str, str], None] | None = None

    def device(self, identifier: str) -> DeviceRecord | Deferred[DeviceRecord | None] | None:
        return self.devices.get(identifier)

    def product(self, identifier: str) -> ProductRecord | Deferred[ProductRecord | None] | None:
        return self.products.get(identifier)

    def app(self, key_id: str) -> AppRecord | Deferred[AppRecord | None] | None:
        return self.apps.get(key_id)

    def _load_app(self, key_id: str) -> Deferred[AppRecord | None]:
        d = self.redis.execute("HGETALL", self.keys.app(key_id))
        return d.addCallback(lambda reply: parse_app(key_id, reply))

    def _load_device(self, identifier: str) -> Deferred[DeviceRecord | None]:
        d = self.redis.execute("HGETALL", self.keys.device(identifier))
        return d.addCallback(lambda reply: parse_device(identifier, reply, self.secret_key))

    def _load_product(self, identifier: str) -> Deferred[ProductRecord | None]:
        d = self.redis.execute("HGETALL", self.keys.product(identifier))
        return d.addCallback(lambda reply: parse_product(identifier, reply, self.secret_key))

    def changed(self, message: bytes) -> None:
        """A ``tl:registry`` message: ``dev:{identifier}``, ``prod:{identifier}`` or ``all``
        (webapp republished everything); ``kick:{identifier}`` asks that the device's
        connections end now (nothing cached changes)."""
        text = message.decode("utf-8", "replace")
        kind, _, identifier = text.partition(":")
        if text == "all":
            self.clear()
        elif kind == "dev":
            self.devices.drop(identifier)
        elif kind == "prod":
            self.products.drop(identifier)
        elif kind == "app":
            self.apps.drop(identifier)
        elif kind == "kick":
            pass
        else:
            log.warn("unknown registry message {message!r}", message=text)
            return
        if self.on_change is not None and text != "all":
            self.on_change(kind, identifier)

    def clear(self) -> None:
        """Forget everything (after the pub/sub connection was re-established)."""
        self.devices.clear()
        self.products.clear()
        self.apps.clear()
