"""Device passwords accepted on CONNECT (README "Device authentication", docs/protocol.md).

Two forms, both with ``username`` = the device identifier:

* the plain device secret, as ThingLinks devices send it;
* a time-bounded signed password ``hmac-sha256:{ts}:{sig}`` where ``ts`` is the current Unix
  time in milliseconds and ``sig`` is the lower-case hex HMAC-SHA256, keyed with the device
  secret, of the text ``{identifier}:{ts}``. It is accepted while ``ts`` is at most
  ``SIGNED_PASSWORD_WINDOW`` seconds old and at most ``SIGNED_PASSWORD_FUTURE`` seconds ahead
  of the edge's clock, and only once: ``edge.thinglinks.auth`` remembers each accepted one
  in Redis until it expires (security review M8), so a captured password cannot be replayed
  and the secret itself never travels.

Example (Python)::

    ts = str(int(time.time() * 1000))
    sig = hmac.new(secret.encode(), f"{identifier}:{ts}".encode(), hashlib.sha256).hexdigest()
    password = f"hmac-sha256:{ts}:{sig}"
"""

from __future__ import annotations

import hashlib
import hmac
from typing import TYPE_CHECKING

from edge.crypto import constant_time_equal
from edge.mqtt.errors import Reason

if TYPE_CHECKING:
    from edge.bus.registry import DeviceRecord, ProductRecord

SIGNED_PREFIX = b"hmac-sha256:"
# How old (seconds) a signed password's timestamp may be, and how far ahead of the edge's
# clock (a device's clock running fast).
SIGNED_PASSWORD_WINDOW = 300.0
SIGNED_PASSWORD_FUTURE = 30.0


def sign_password(identifier: str, secret: str, ts_ms: int) -> str:
    """The signed password of ``identifier`` at ``ts_ms`` (for devices, tools and tests)."""
    digest = hmac.new(secret.encode(), f"{identifier}:{ts_ms}".encode(), hashlib.sha256).hexdigest()
    return f"hmac-sha256:{ts_ms}:{digest}"


def password_matches(identifier: str, secret: str, password: bytes, now: float) -> bool:
    """Whether ``password`` is the plain secret or a currently valid signed password."""
    if password.startswith(SIGNED_PREFIX):
        try:
            ts_text, _, signature = password[len(SIGNED_PREFIX) :].decode("ascii").partition(":")
            ts_ms = int(ts_text)
        except (UnicodeDecodeError, ValueError):
            return False
        age = now - ts_ms / 1000
        if age > SIGNED_PASSWORD_WINDOW or -age > SIGNED_PASSWORD_FUTURE:
            return False
        return constant_time_equal(
            sign_password(identifier, secret, ts_ms), f"hmac-sha256:{ts_text}:{signature}"
        )
    return constant_time_equal(password, secret.encode())


def signed_timestamp(password: bytes | None) -> int | None:
    """The ``ts`` of a signed password, or None when ``password`` is not one."""
    if password is None or not password.startswith(SIGNED_PREFIX):
        return None
    ts_text = password[len(SIGNED_PREFIX) :].partition(b":")[0]
    try:
        return int(ts_text)
    except ValueError:
        return None


def signed_password_lifetime(ts_ms: int, now: float) -> float:
    """Seconds for which the signed password of ``ts_ms`` remains acceptable after ``now``
    (how long it must be remembered to refuse it a second time)."""
    return max(ts_ms / 1000 + SIGNED_PASSWORD_WINDOW - now, 0.0)


def refusal(
    device: DeviceRecord, product: ProductRecord | None, transport: str | None = None
) -> tuple[int, str, str] | None:
    """Why a known device may not be connected over ``transport`` whatever its credentials,
    or None.

    Returns the CONNACK reason, a short word (the ``reason`` of the ``status`` offline event
    when a connected device is disconnected for it) and the text for the log and the
    client: a locked device (0x8A Banned), a device of a disabled product, or of a product
    whose protocol is another transport (0x87 Not authorized; MQTT 3.1.1 0x05).
    ``transport`` None: the device does not connect itself (a sub-device reported by its
    gateway), so its product's protocol does not matter.
    """
    if device.status == "locked":
        return Reason.BANNED, "locked", f"device {device.identifier} is locked"
    if product is not None and product.disabled:
        return (
            Reason.NOT_AUTHORIZED,
            "product_disabled",
            f"device {device.identifier}: product {product.identifier} is disabled",
        )
    if product is not None and transport is not None and not product.admits(transport):
        return (
            Reason.NOT_AUTHORIZED,
            "protocol",
            f"device {device.identifier}: product {product.identifier} uses"
            f" {product.protocol}, not {transport}",
        )
    return None
