"""Device passwords: the plain secret and the time-bounded HMAC-SHA256 signed form."""

from __future__ import annotations

import hashlib
import hmac

from edge.auth import SIGNED_PASSWORD_WINDOW, password_matches, sign_password


def test_plain_secret():
    """The plain secret matches; anything else does not."""
    assert password_matches("dev-1", "s3cret", b"s3cret", now=0)
    assert not password_matches("dev-1", "s3cret", b"s3cret ", now=0)


def test_signed_password_format_and_window():
    """hmac-sha256:{ts}:{hex HMAC(secret, "{id}:{ts}")} is valid within the window only."""
    ts = 1_700_000_000_000
    expected = hmac.new(b"s3cret", b"dev-1:1700000000000", hashlib.sha256).hexdigest()
    password = sign_password("dev-1", "s3cret", ts)
    assert password == f"hmac-sha256:{ts}:{expected}"
    now = ts / 1000
    assert password_matches("dev-1", "s3cret", password.encode(), now)
    assert password_matches("dev-1", "s3cret", password.encode(), now + SIGNED_PASSWORD_WINDOW - 1)
    assert not password_matches(
        "dev-1", "s3cret", password.encode(), now + SIGNED_PASSWORD_WINDOW + 1
    )
    assert not password_matches("dev-2", "s3cret", password.encode(), now)
    assert not password_matches("dev-1", "other", password.encode(), now)


def test_malformed_signed_passwords():
    """Broken signed passwords are refused, never raise."""
    for bad in (b"hmac-sha256:", b"hmac-sha256:abc:00", b"hmac-sha256:\xff:1", b"hmac-sha256:1"):
        assert not password_matches("dev-1", "s3cret", bad, now=0)
