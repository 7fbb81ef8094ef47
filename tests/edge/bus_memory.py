"""What the in-memory bus tests share: the key prefix real nodes use, an in-memory Redis on
a test clock set to a fixed wall time, and broker hooks that admit every client as the
identity its user name says (the bus, not authentication, is what these tests look at)."""

from __future__ import annotations

from twisted.internet.task import Clock

from edge.bus.keys import Keys
from edge.mqtt.policy import AuthResult, BrokerHooks
from tests.support.fake_redis import FakeRedis

KEYS = Keys("tl:")
START = 1_700_000_000.0


class UserIsIdentity(BrokerHooks):
    """Every client is accepted as the identity named by its user name."""

    def authenticate(self, connection):
        assert connection.connect is not None
        return AuthResult(identity=connection.connect.username)


def fake_redis() -> FakeRedis:
    """An empty in-memory Redis whose clock reads START."""
    clock = Clock()
    clock.advance(START)
    return FakeRedis(clock)
