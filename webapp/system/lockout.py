"""Login lockout per (username, address): after `security.login.max_failures` failures in a
row, that username is refused from that address for `security.login.lockout_minutes`.

Keyed on the pair on purpose: one user's mistakes never lock out everyone behind the same
address (an office NAT), and an attacker guessing one username from many addresses does not
lock its owner out of their own address either.
"""

from __future__ import annotations

import hashlib

from django.core.cache import cache

from webapp.system.cache import param


def max_failures() -> int:
    return int(param("security.login.max_failures", 5))


def lockout_seconds() -> int:
    return int(param("security.login.lockout_minutes", 15)) * 60


def _key(username: str, address: str | None) -> str:
    digest = hashlib.sha256(f"{username.casefold()}\0{address or ''}".encode()).hexdigest()
    return f"lockout:{digest[:40]}"


def failures(username: str, address: str | None) -> int:
    return int(cache.get(_key(username, address), 0))


def is_locked(username: str | None, address: str | None) -> bool:
    limit = max_failures()
    return bool(username) and limit > 0 and failures(str(username), address) >= limit


def record_failure(username: str, address: str | None) -> int:
    """Count a failure; the lockout window restarts at each one."""
    key = _key(username, address)
    timeout = lockout_seconds()
    if cache.add(key, 1, timeout):
        return 1
    try:
        count = cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.set(key, 1, timeout)
        return 1
    cache.touch(key, timeout)
    return int(count)


def reset(username: str, address: str | None) -> None:
    cache.delete(_key(username, address))
