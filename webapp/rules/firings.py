"""Firings queued in Redis (`tl:rules:firings`) are sealed: the ingest path signs each one with
a key derived from the secret key and `rules.drain_firings` runs only those whose signature
holds, so an entry pushed onto the list by anyone else (a sink pointed at the platform's Redis
before H8 was fixed, a client of an exposed Redis) runs no action.

An entry is `<hex HMAC-SHA256>.<JSON>`; the key is `salted_hmac` of the secret key (or one of
`SECRET_KEY_FALLBACKS`, so firings queued just before a key rotation still run).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import logging
from typing import Any

from django.conf import settings
from django.utils.crypto import salted_hmac

log = logging.getLogger(__name__)

SALT = "thinglinks.rules.firings"
_DIGEST_HEX = 64


@functools.lru_cache(maxsize=4)
def _key(secret: str) -> bytes:
    return salted_hmac(SALT, b"key", secret=secret, algorithm="sha256").digest()


def _sign(body: bytes, secret: str) -> bytes:
    return hmac.new(_key(secret), body, hashlib.sha256).hexdigest().encode()


def seal(body: bytes) -> bytes:
    """The entry to queue for a firing's JSON `body`."""
    return _sign(body, settings.SECRET_KEY) + b"." + body


def open_sealed(entry: bytes) -> dict[str, Any] | None:
    """The firing of a queued entry, or None (logged) when its signature does not hold."""
    signature, dot, body = entry.partition(b".")
    if dot and len(signature) == _DIGEST_HEX:
        for secret in (settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])):
            if hmac.compare_digest(signature, _sign(body, secret)):
                firing = json.loads(body)
                return firing if isinstance(firing, dict) else None
    log.warning("dropped a queued firing without a valid signature (%d bytes)", len(entry))
    return None
