"""The rules' Redis keys (under the bus prefix, see docs/rules.md), and the version bump
that tells every process's rule index to recompile.

A leaf: the engine, the actions, the tasks and the API all name these keys, and none of them
needs the others to do so."""

from __future__ import annotations

from webapp.core.redis import get_redis, keys

# How long the outcome of a sink test or a redelivery is kept for the API to read.
RESULT_TTL_S = 3600


class RuleKeys:
    """The rule engine's keys under one prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    @property
    def version(self) -> str:
        return f"{self.prefix}rules:version"

    @property
    def states(self) -> str:
        """Hash device → JSON `{rule id: state}` of the devices that have rule state."""
        return f"{self.prefix}rules:states"

    def stats(self, rule_id: int) -> str:
        return f"{self.prefix}rules:stats:{rule_id}"

    @property
    def guards(self) -> str:
        """Hash `{device}|{stream}` → the newest message ts evaluated (replay guard)."""
        return f"{self.prefix}rules:guards"

    @property
    def firings(self) -> str:
        """List of firings decided on the ingest path, waiting for a Celery worker."""
        return f"{self.prefix}rules:firings"

    @property
    def drain_pending(self) -> str:
        """Set while a `rules.drain_firings` task is queued and has not started."""
        return f"{self.prefix}rules:drain-pending"

    def sink_test(self, token: str) -> str:
        """The outcome of a sink test (`POST /api/v1/sinks/{id}/test/`)."""
        return f"{self.prefix}rules:sink-test:{token}"

    def redeliver(self, token: str) -> str:
        """The outcome of a redelivery (`POST /api/v1/dead-letters/{id}/redeliver/`)."""
        return f"{self.prefix}rules:redeliver:{token}"

    def redeliver_lock(self, letter_id: int) -> str:
        """Held (the pending token) while a dead letter is being redelivered: a second
        request gets the same task instead of sending the message twice."""
        return f"{self.prefix}rules:redeliver-lock:{letter_id}"


def rule_keys() -> RuleKeys:
    return RuleKeys(keys().prefix)


def bump_version() -> None:
    """Tell every process's index that the rules changed (called after commit)."""
    get_redis().incr(rule_keys().version)
