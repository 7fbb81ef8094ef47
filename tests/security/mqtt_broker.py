"""An in-memory broker for the MQTT security tests: clients on StringTransports (the
FakeClient of tests/support/broker.py), identities from the user name, a clock the test moves."""

from __future__ import annotations

from twisted.internet.task import Clock

from edge.mqtt.broker import Broker, BrokerConfig
from edge.mqtt.packets import MQTT_5, Publish
from edge.mqtt.policy import OPEN_ACL, Acl, AuthResult, BrokerHooks
from tests.support.broker import FakeClient
from tests.support.broker import make_broker as started_broker

APP = "app:"


class Namespace(Acl):
    """A device may use ``{identity}/…`` only (as a ThingLinks device its own topics)."""

    __slots__ = ("prefix",)

    def __init__(self, identity: str) -> None:
        self.prefix = f"{identity}/"

    def may_publish(self, topic: str) -> bool:
        return topic.startswith(self.prefix)

    def may_subscribe(self, topic_filter: str) -> bool:
        return topic_filter.startswith(self.prefix)


class Identities(BrokerHooks):
    """A user name is a device identity with its namespace; ``app:{key}`` an application key
    (no identity, its own owner, any topic); no user name an anonymous client."""

    def __init__(self) -> None:
        self.authenticated = 0
        # identity → the ACL it gets at its next CONNECT (default: its namespace).
        self.acls: dict[str, Acl] = {}

    def authenticate(self, connection):  # type: ignore[no-untyped-def]
        self.authenticated += 1
        name = connection.connect.username
        if name is None:
            return AuthResult()
        if name.startswith(APP):
            return AuthResult(owner=name, acl=OPEN_ACL)
        return AuthResult(identity=name, acl=self.acls.get(name) or Namespace(name))


def make_broker(config: BrokerConfig | None = None) -> tuple[Broker, Identities, Clock]:
    hooks = Identities()
    broker, clock = started_broker(hooks, config)
    return broker, hooks, clock


def client(broker: Broker, version: int = MQTT_5, host: str = "10.0.0.1") -> FakeClient:
    """A client from ``host`` (not connected yet)."""
    return FakeClient(broker, version, host=host)


def connected(
    broker: Broker, client_id: str, username: str | None, version: int = MQTT_5, **connect
) -> FakeClient:
    fake = client(broker, version)
    connack = fake.connect(client_id, username=username, **connect)
    assert connack.reason_code == 0, connack
    return fake


def publish(topic: str, payload: bytes = b"x", qos: int = 1, packet_id: int = 1, **kw) -> Publish:
    return Publish(topic, payload, qos=qos, packet_id=packet_id if qos else None, **kw)
