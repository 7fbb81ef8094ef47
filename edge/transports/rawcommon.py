"""What the raw TCP and UDP transports share: their settings and budgets, the binary codecs of
the products that declare one, and the check of a frame that proves its device with a MAC.

Budgets (docs/bus.md "Edge budgets"): ``EDGE_TCP_MAX_LINE`` (a JSON line, and bytes held of
an incomplete one, 65536), ``EDGE_TCP_LOGIN_TIMEOUT`` (seconds to log in, 10),
``EDGE_TCP_IDLE_TIMEOUT`` (seconds of silence before a connection is closed, 300),
``EDGE_TCP_MAX_CONNECTIONS`` (open raw TCP connections per process, 10000),
``EDGE_TCP_MAX_PENDING`` (a connection's messages in the pipeline before it is no longer
read, 32), ``EDGE_UDP_MAX_DATAGRAM`` (bytes, 4096), ``EDGE_UDP_RATE`` (datagrams per second
per source address, with a burst of as many, 20).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from edge.auth import refusal
from edge.bus.client import Commands
from edge.bus.keys import Keys
from edge.bus.registry import DeviceRecord, ProductRecord
from edge.deferreds import then
from edge.frames import Codec, Decoded, FrameError, SpecError
from edge.rawdevices.frames import Candidate
from edge.thinglinks.interfaces import Directory
from edge.throttle import AuthThrottle, client_address

log = Logger(namespace="edge")


@dataclass(frozen=True, slots=True)
class RawConfig:
    """The ports (``EDGE_TCP_PORT`` 18901, ``EDGE_UDP_PORT`` 18902; 0 turns one off) and the
    budgets of the module docstring."""

    tcp_port: int = 18901
    udp_port: int = 18902
    max_line: int = 65536
    login_timeout: float = 10.0
    idle_timeout: float = 300.0
    max_connections: int = 10000
    max_pending: int = 32
    max_datagram: int = 4096
    udp_rate: float = 20.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> RawConfig:
        """Raises ValueError for an unusable setting."""
        config = cls(
            tcp_port=int(env.get("EDGE_TCP_PORT") or 18901),
            udp_port=int(env.get("EDGE_UDP_PORT") or 18902),
            max_line=int(env.get("EDGE_TCP_MAX_LINE") or 65536),
            login_timeout=float(env.get("EDGE_TCP_LOGIN_TIMEOUT") or 10),
            idle_timeout=float(env.get("EDGE_TCP_IDLE_TIMEOUT") or 300),
            max_connections=int(env.get("EDGE_TCP_MAX_CONNECTIONS") or 10000),
            max_pending=int(env.get("EDGE_TCP_MAX_PENDING") or 32),
            max_datagram=int(env.get("EDGE_UDP_MAX_DATAGRAM") or 4096),
            udp_rate=float(env.get("EDGE_UDP_RATE") or 20),
        )
        if min(config.max_line, config.max_connections, config.max_pending) < 1:
            raise ValueError("EDGE_TCP_MAX_LINE, _MAX_CONNECTIONS and _MAX_PENDING must be >= 1")
        if min(config.login_timeout, config.idle_timeout, config.udp_rate) <= 0:
            raise ValueError("the raw TCP timeouts and EDGE_UDP_RATE must be positive")
        if config.max_datagram < 64:
            raise ValueError("EDGE_UDP_MAX_DATAGRAM must be at least 64")
        return config


class CodecCatalog:
    """The binary codecs of products whose devices use raw TCP or UDP, by product.

    A device's first bytes do not say its product, so the transports try these codecs on
    them (:mod:`edge.rawdevices.frames`). Read from the product hashes in Redis at start,
    again for a product webapp says changed, and whole every ``refresh`` seconds (which also
    covers webapp republishing everything).
    """

    def __init__(self, redis: Commands, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self.codecs: dict[str, dict[str, Candidate]] = {"tcp": {}, "udp": {}}

    def candidates(self, transport: str) -> list[Candidate]:
        return list(self.codecs[transport].values())

    def load(self) -> Deferred[None]:
        """Read every product's protocol and codec (SCAN over the product hashes)."""
        return Deferred.fromCoroutine(self._load())

    async def _load(self) -> None:
        prefix = self.keys.product("")
        found: dict[str, dict[str, Candidate]] = {"tcp": {}, "udp": {}}
        cursor = b"0"
        while True:
            cursor, names = await self.redis.execute(
                "SCAN", cursor, "MATCH", f"{prefix}*", "COUNT", 500
            )
            for name in names:
                product = name.decode("utf-8", "replace")[len(prefix) :]
                fields = await self.redis.execute("HMGET", name, "protocol", "codec")
                self._put(found, product, fields[0], fields[1])
            if cursor in (b"0", 0, "0"):
                break
        self.codecs = found

    def changed(self, kind: str, identifier: str) -> None:
        """A registry change (``prod``): read that product's codec again."""
        if kind != "prod":
            return
        d = self.redis.execute("HMGET", self.keys.product(identifier), "protocol", "codec")

        def read(fields: list[Any]) -> None:
            for codecs in self.codecs.values():
                codecs.pop(identifier, None)
            self._put(self.codecs, identifier, fields[0], fields[1])

        d.addCallback(read)
        d.addErrback(lambda f: log.warn("codec of {p} not read: {e}", p=identifier, e=f.value))

    def refresh(self) -> None:
        self.load().addErrback(lambda f: log.warn("codecs not read: {e}", e=f.value))

    @staticmethod
    def _put(found: dict[str, dict[str, Candidate]], product: str, protocol: Any, raw: Any) -> None:
        transport = (protocol or b"").decode("utf-8", "replace")
        if transport not in found or not raw:
            return
        try:
            found[transport][product] = Candidate(product, Codec.published(raw))
        except (SpecError, ValueError) as exc:
            log.warn("product {p}: codec not usable: {e}", p=product, e=exc)


@dataclass(frozen=True, slots=True)
class Verified:
    """A frame whose device is known and proven: its record and what the frame says."""

    record: DeviceRecord
    product: ProductRecord
    decoded: Decoded


def device_product(
    directory: Directory, device: str
) -> tuple[DeviceRecord | None, ProductRecord | None] | Deferred[Any]:
    """The device's record and its product's."""

    def with_record(record: DeviceRecord | None) -> Any:
        if record is None or not record.product:
            return record, None
        return then(directory.product(record.product), lambda product: (record, product))

    return then(directory.device(device), with_record)  # type: ignore[no-any-return]


def admitted(
    record: DeviceRecord | None,
    product: ProductRecord | None,
    device: str,
    transport: str,
    candidate: Candidate,
) -> None:
    """Raise :class:`FrameError` unless the device may use ``transport`` with the codec that
    read its frame."""
    if record is None:
        raise FrameError("unknown_device", f"device {device} does not exist")
    refused = refusal(record, product, transport)
    if refused is not None:
        raise FrameError(refused[1], refused[2])
    assert product is not None, "refusal() refuses a device without its product"
    if product.codec is None:
        raise FrameError("no_codec", f"product {product.identifier} has no binary codec")
    if product.identifier != candidate.product and product.codec.spec != candidate.codec.spec:
        raise FrameError(
            "wrong_codec", f"device {device} is of {product.identifier}, not {candidate.product}"
        )


def verify_mac_frame(
    directory: Directory,
    throttle: AuthThrottle,
    candidate: Candidate,
    frame: bytes,
    peer: str,
    transport: str,
) -> Verified | Deferred[Verified]:
    """Check a frame that names its device and carries a MAC keyed with the device's secret;
    a frame that fails is counted with the failed logins of its address and device
    (edge.throttle). Raises (or fails with) :class:`FrameError`."""
    address = client_address(peer)
    if throttle.address_blocked(address):
        raise FrameError("throttled", "too many failed attempts; try later")
    device = candidate.codec.identify(frame)
    if device is None:
        raise FrameError("no_device", "the frame names no device")

    def check(found: Any) -> Verified:
        record, product = found
        try:
            admitted(record, product, device, transport, candidate)
            assert record is not None and product is not None and product.codec is not None
            if record.secret is None:
                raise FrameError("no_secret", f"device {device} has no usable secret")
            decoded = product.codec.decode(frame, record.secret)
        except FrameError as exc:
            if exc.code in ("bad_mac", "unknown_device"):
                throttle.failed(address, device)
            raise
        return Verified(record, product, decoded)

    return then(device_product(directory, device), check)  # type: ignore[no-any-return]
