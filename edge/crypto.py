"""The secret key, and encryption of device and product secrets at rest (SQL and Redis).

Both `webapp` and `edge` use this module, so a secret is encrypted in one way only. The key is
derived from ``DJANGO_SECRET_KEY``. There is no built-in key: a process reads
``DJANGO_SECRET_KEY``, else the file ``DJANGO_SECRET_KEY_FILE`` (default ``var/secret_key``,
which the first ``make run`` creates with a random key), and refuses to start without one.
Moving to another key re-encrypts the stored secrets: ``manage.py rotate_secrets``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import tempfile
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

# Where `make run` keeps the key it generates (relative to the project root).
DEFAULT_KEY_FILE = Path(__file__).resolve().parent.parent / "var" / "secret_key"
# SHA-256 of keys that are public and therefore refused: the development key that earlier
# versions used when DJANGO_SECRET_KEY was unset (`rotate_secrets --old-key` moves off it).
PUBLIC_KEY_HASHES = frozenset({
    "4df194843557728bcbb9ff2430f672acf7249d5c205a2717d6cbc03741fe48b6",
})


class MissingSecretKey(RuntimeError):
    """No ``DJANGO_SECRET_KEY`` and no key file: the process must not start."""


__all__ = [
    "InvalidToken",
    "MissingSecretKey",
    "constant_time_equal",
    "create_key_file",
    "decrypt_secret",
    "derive_key",
    "encrypt_secret",
    "generate_secret",
    "hash_secret",
    "load_secret_key",
    "new_secret_key",
    "random_token",
]


def key_file(environ: Mapping[str, str]) -> Path:
    return Path(environ.get("DJANGO_SECRET_KEY_FILE") or DEFAULT_KEY_FILE)


def load_secret_key(environ: Mapping[str, str] | None = None) -> str:
    """``DJANGO_SECRET_KEY``, else the content of the key file; raises
    :class:`MissingSecretKey` with what to do when there is neither."""
    environ = os.environ if environ is None else environ
    key = (environ.get("DJANGO_SECRET_KEY") or "").strip()
    source = "DJANGO_SECRET_KEY"
    if not key:
        path = key_file(environ)
        try:
            key = path.read_text().strip()
        except FileNotFoundError:
            raise MissingSecretKey(
                f"DJANGO_SECRET_KEY is not set and {path} does not exist. `make run` creates "
                "that file with a random key on its first start; a process started on its "
                "own needs the key the others use: set DJANGO_SECRET_KEY (50 or more random "
                "characters, e.g. `python3 -c 'import secrets; print(secrets.token_urlsafe(50))'`)"
                " or DJANGO_SECRET_KEY_FILE") from None
        except OSError as exc:
            raise MissingSecretKey(f"cannot read the secret key file {path}: {exc}") from None
        source = str(path)
    if hashlib.sha256(key.encode()).hexdigest() in PUBLIC_KEY_HASHES:
        raise MissingSecretKey(
            f"the secret key from {source} is the public development key of earlier versions: "
            "set a new random key and move the stored secrets to it with "
            "`manage.py rotate_secrets --old-key …` (README, Production)")
    return key


def random_token(nbytes: int) -> str:
    """``secrets.token_urlsafe(nbytes)`` that never begins with "-". One in 64 would otherwise,
    and a key, secret or password shown to an operator ends up on command lines, where
    `rotate_secrets --old-key KEY` (or any other option parser) reads such a value as an
    option."""
    while True:
        token = secrets.token_urlsafe(nbytes)
        if not token.startswith("-"):
            return token


def new_secret_key() -> str:
    """A new random secret key (67 URL-safe characters)."""
    return random_token(50)


def create_key_file(path: Path = DEFAULT_KEY_FILE) -> bool:
    """Create ``path`` holding a new random key, readable by its owner only (0600). The file
    appears complete or not at all, and an existing one is never replaced (two processes
    racing here agree on the first key). Returns whether this call created it."""
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=".secret_key-", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "w") as out:
            out.write(new_secret_key() + "\n")
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(temporary, path)  # atomic, and fails when the file exists
        except FileExistsError:
            return False
        return True
    finally:
        os.unlink(temporary)


def derive_key(secret_key: str, purpose: str) -> str:
    """A key for one purpose (``"jwt"``, …) derived from the secret key, so that a key
    handed to a library for one use is never the key of another (hex HMAC-SHA256)."""
    label = f"thinglinks/{purpose}/v1".encode()
    return hmac.new(secret_key.encode(), label, hashlib.sha256).hexdigest()


def _secret_key() -> str:
    return load_secret_key()


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
    return random_token(nbytes)


def hash_secret(plain: str) -> str:
    """A one-way fingerprint of a secret, for display and logs ("sha256:ab12…")."""
    return "sha256:" + hashlib.sha256(plain.encode()).hexdigest()[:12]


def constant_time_equal(a: str | bytes, b: str | bytes) -> bool:
    if isinstance(a, str):
        a = a.encode()
    if isinstance(b, str):
        b = b.encode()
    return hmac.compare_digest(a, b)
