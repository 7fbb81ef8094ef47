"""Encryption of device and product secrets at rest (SQL and Redis).

Both `webapp` and `edge` use this module, so a secret is encrypted in one way only. The key is
derived from ``DJANGO_SECRET_KEY``; rotating that key requires re-encrypting stored secrets
(``manage.py rotate_secrets``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken

DEV_SECRET_KEY = "thinglinks-dev-insecure-secret-key-change-me"  # noqa: S105 - documented dev default

__all__ = [
    "InvalidToken",
    "constant_time_equal",
    "decrypt_secret",
    "encrypt_secret",
    "generate_secret",
    "hash_secret",
]


def _secret_key() -> str:
    return os.environ.get("DJANGO_SECRET_KEY") or DEV_SECRET_KEY


@lru_cache(maxsize=4)
def _fernet(secret_key: str) -> Fernet:
    digest = hashlib.sha256(b"thinglinks/secrets/v1:" + secret_key.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def encrypt_secret(plain: str, secret_key: str | None = None) -> str:
    """Return the Fernet token of ``plain`` (an ASCII string safe to store anywhere)."""
    return _fernet(secret_key or _secret_key()).encrypt(plain.encode()).decode()


def decrypt_secret(token: str, secret_key: str | None = None) -> str:
    """Return the plain secret of a token made by :func:`encrypt_secret`.

    Raises :class:`InvalidToken` when the token was not made with this key.
    """
    return _fernet(secret_key or _secret_key()).decrypt(token.encode()).decode()


def generate_secret(nbytes: int = 24) -> str:
    """A new random device secret (URL-safe text)."""
    return secrets.token_urlsafe(nbytes)


def hash_secret(plain: str) -> str:
    """A one-way fingerprint of a secret, for display and logs ("sha256:ab12…")."""
    return "sha256:" + hashlib.sha256(plain.encode()).hexdigest()[:12]


def constant_time_equal(a: str | bytes, b: str | bytes) -> bool:
    if isinstance(a, str):
        a = a.encode()
    if isinstance(b, str):
        b = b.encode()
    return hmac.compare_digest(a, b)
