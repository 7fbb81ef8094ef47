"""Throttling of failed authentications per client address and per user name (device).

The counts live in Redis (``{prefix}auth:fail:…``, fixed windows), so every edge worker and
node shares them (security review M2). Only failures are counted and only failures cost a
Redis round trip; a successful CONNECT reads nothing from Redis. What each count does:

* an **address** over the limit is refused (0x9F) before its credentials are looked at,
  correct or not, until its window ends: that bounds password guessing from one address.
  The worker that counts the failure reaching the limit announces the address on
  ``{prefix}auth:blocked``, and every worker keeps the announced addresses until their window
  ends, so no worker asks Redis on a CONNECT. A client certificate that identifies its device
  is still accepted from a blocked address (no guess reproduces one);
* a **user name** (a device) over the limit only changes the answer to further *failed*
  attempts to 0x9F: a correct secret, signed password or certificate still connects, so
  strangers failing a device's password do not keep the device out.

IPv6 clients are counted by their /64 network (one host usually holds a whole /64). While
Redis is unreachable the counts are kept in the process (:class:`FailureThrottle`).
"""

from __future__ import annotations

import hashlib
import ipaddress
from typing import Any

from twisted.internet.defer import Deferred, gatherResults
from twisted.logger import Logger

from .bus.client import Commands
from .bus.keys import Keys

log = Logger(namespace="edge")

FAILURE_LIMIT = 10
FAILURE_WINDOW = 60.0
# Addresses announced as blocked that a process remembers at most (the oldest go first).
MAX_BLOCKED = 100_000
# A user name longer than this is counted under its SHA-256 (keys stay small).
MAX_KEY_TEXT = 128

# One failure of KEYS[1] in a fixed window of ARGV[1] ms; when the count reaches ARGV[2] and
# ARGV[3] names a channel, ARGV[4] is announced there with the window's remaining time.
# Returns {count, remaining ms}.
COUNT_FAILURE = """
local n = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
if n == tonumber(ARGV[2]) and ARGV[3] ~= '' then
  redis.call('PUBLISH', ARGV[3], ttl .. ' ' .. ARGV[4])
end
return {n, ttl}
"""


def client_address(peer: str) -> str:
    """The address a client's failures are counted under: its IP (``host:port`` without the
    port), the /64 network for IPv6."""
    host = peer.rpartition(":")[0] or peer
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def _key_text(text: str) -> str:
    if len(text) <= MAX_KEY_TEXT:
        return text
    return "sha256:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class FailureThrottle:
    """In-process counts: at most ``limit`` failures per key in a fixed window of ``window``
    seconds; a key over the limit is blocked until its window ends. Used while Redis is
    unreachable. Past ``max_keys`` keys the oldest windows are dropped, never all of them."""

    def __init__(
        self, clock: Any, limit: int = FAILURE_LIMIT, window: float = FAILURE_WINDOW,
        max_keys: int = MAX_BLOCKED,
    ) -> None:  # fmt: skip
        self.clock = clock
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self._failures: dict[str, tuple[float, int]] = {}

    def blocked(self, key: str) -> bool:
        entry = self._failures.get(key)
        if entry is None:
            return False
        started, count = entry
        if self.clock.seconds() - started >= self.window:
            del self._failures[key]
            return False
        return count >= self.limit

    def failed(self, key: str) -> None:
        now = self.clock.seconds()
        entry = self._failures.get(key)
        if entry is None or now - entry[0] >= self.window:
            self._failures.pop(key, None)
            while len(self._failures) >= self.max_keys:
                # Entries keep their insertion order: the first started first.
                del self._failures[next(iter(self._failures))]
            self._failures[key] = (now, 1)
        else:
            self._failures[key] = (entry[0], entry[1] + 1)


class AuthThrottle:
    """The failure counts of the edge's authentication, shared through Redis (module doc)."""

    def __init__(
        self,
        clock: Any,
        redis: Commands | None = None,
        keys: Keys | None = None,
        limit: int = FAILURE_LIMIT,
        window: float = FAILURE_WINDOW,
        max_blocked: int = MAX_BLOCKED,
    ) -> None:
        self.clock = clock
        self.redis = redis
        self.keys = keys or Keys()
        self.limit = limit
        self.window = window
        self.max_blocked = max_blocked
        self.local = FailureThrottle(clock, limit, window, max_blocked)
        self._blocked: dict[str, float] = {}  # address -> end of its window (clock seconds)

    @property
    def channel(self) -> str:
        return self.keys.auth_blocked_channel

    def address_blocked(self, address: str) -> bool:
        """Whether ``address`` is over its failure budget (no Redis round trip)."""
        until = self._blocked.get(address)
        if until is not None:
            if self.clock.seconds() < until:
                return True
            del self._blocked[address]
        return self.local.blocked(f"addr:{address}")

    def failed(self, address: str, username: str | None) -> bool | Deferred[bool]:
        """Count a failed authentication of ``username`` from ``address``; True when either
        is past the limit (the attempt is then answered 0x9F)."""
        if self.redis is None or not self.redis.connected:
            return self._failed_locally(address, username)
        window_ms = int(self.window * 1000)
        commands: list[tuple[Any, ...]] = [
            (
                "EVAL", COUNT_FAILURE, 1, self.keys.auth_failures("addr", address),
                window_ms, self.limit, self.channel, address,
            ),
        ]  # fmt: skip
        if username:
            user_key = self.keys.auth_failures("user", _key_text(username))
            commands.append(("EVAL", COUNT_FAILURE, 1, user_key, window_ms, self.limit, "", ""))
        replies = gatherResults(self.redis.pipeline(commands), consumeErrors=True)

        def counted(results: list[Any]) -> bool:
            count, remaining = int(results[0][0]), int(results[0][1])
            if count >= self.limit:
                self._block(address, remaining)
            return any(int(result[0]) > self.limit for result in results)

        def unavailable(failure: Any) -> bool:
            log.warn("auth failure count failed: {e}", e=failure.getErrorMessage())
            return self._failed_locally(address, username)

        return replies.addCallbacks(counted, unavailable)

    def _failed_locally(self, address: str, username: str | None) -> bool:
        keys = [f"addr:{address}"] + ([f"user:{_key_text(username)}"] if username else [])
        over = any(self.local.blocked(key) for key in keys)
        for key in keys:
            self.local.failed(key)
        return over

    def announced(self, data: bytes) -> None:
        """A message on :attr:`channel`: ``{remaining ms} {address}`` (from any worker)."""
        remaining, _, address = data.decode("utf-8", "replace").partition(" ")
        try:
            self._block(address, int(remaining))
        except ValueError:
            log.warn("malformed auth block announcement {data!r}", data=data)

    def _block(self, address: str, remaining_ms: int) -> None:
        if not address:
            return
        self._blocked.pop(address, None)
        while len(self._blocked) >= self.max_blocked:
            del self._blocked[next(iter(self._blocked))]
        self._blocked[address] = self.clock.seconds() + max(remaining_ms, 0) / 1000
