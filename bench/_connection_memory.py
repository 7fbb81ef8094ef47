"""Python heap per idle MQTT connection, in process, with tracemalloc (docs/performance.md,
"Memory per connection"):

    .venv/bin/python -m bench._connection_memory [N] [--top K]

N (default 3,000) MQTT 3.1.1 clients connect to a ``Broker`` with the ThingLinks hooks
(``EdgeHooks``) over the plain-MQTT transport the edge uses (``LeanServer``, on socket pairs,
with a reactor stand-in that only records readers): once as devices authenticated with their
secret (records read from an in-memory Redis by the real ``Registry``, so the record and its
cache entry count), once anonymously (``EDGE_ALLOW_ANONYMOUS``). Printed: bytes per
connection kept after the connects settled, and with ``--top K`` the K source lines that
keep the most. What the test side holds (the client ends of the socket pairs) is not
counted.
"""

from __future__ import annotations

import gc
import socket
import sys
import tracemalloc
from typing import Any

from twisted.internet.task import Clock

from edge.bus.keys import Keys
from edge.bus.registry import Registry
from edge.crypto import encrypt_secret
from edge.mqtt.broker import Broker
from edge.mqtt.codec import encode
from edge.mqtt.packets import MQTT_3_1_1, Connect
from edge.thinglinks.mqtt import EdgeHooks
from edge.transports.lean import LeanServer
from edge.transports.tcp import MqttTransportFactory, TransportCounter
from tests.support.fake_redis import FakeRedis

SECRET_KEY = "bench-memory-secret-key"
SECRET = "bench-device-secret"
NOW = 1_700_000_000.0


class Reactor(Clock):
    """What LeanServer asks of a reactor: readers and writers are only recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.readers: set[Any] = set()

    def addReader(self, reader: Any) -> None:
        self.readers.add(reader)

    def removeReader(self, reader: Any) -> None:
        self.readers.discard(reader)

    def addWriter(self, writer: Any) -> None:
        pass

    def removeWriter(self, writer: Any) -> None:
        pass


class Edge:
    def __init__(self, devices: int, anonymous: bool) -> None:
        self.reactor = Reactor()
        self.reactor.advance(NOW)
        self.redis = FakeRedis(self.reactor)
        keys = Keys("tl:")
        secret = encrypt_secret(SECRET, SECRET_KEY)
        self.redis.sync.hset(keys.product("bench"), mapping={"model": '{"services": {}}'})
        for i in range(devices):
            self.redis.sync.hset(
                keys.device(f"dev-{i}"),
                mapping={"product": "bench", "secret": secret, "status": "activated"},
            )
        self.commands = [self.redis.client(), self.redis.client()]
        self.registry = Registry(self.commands[0], keys, SECRET_KEY)
        self.hooks = EdgeHooks(
            clock=self.reactor,
            redis=self.commands[1],
            keys=keys,
            registry=self.registry,
            uplink=Sink(),
            node="n1",
            allow_anonymous=anonymous,
        )
        self.broker = Broker(self.reactor, self.hooks)
        self.hooks.broker = self.broker
        self.broker.start()
        self.factory = MqttTransportFactory(self.broker, TransportCounter("tcp"))
        # The client ends (allocated here, before the measurement).
        self.peers: list[socket.socket | None] = [None] * (devices + 1000)

    def connect(self, i: int, username: str | None, password: bytes | None) -> None:
        ours, theirs = socket.socketpair()
        self.peers[i % len(self.peers)] = theirs
        host = f"10.{i // 62500}.{i // 250 % 250}.{i % 250 + 1}"
        addr = (host, 40000 + i % 20000)
        # What the edge's LeanPort does on accept.
        protocol = self.factory.buildProtocol(addr)
        transport = LeanServer(ours, protocol, addr, None, i, self.reactor)
        protocol.makeConnection(transport)
        data = encode(
            Connect(f"client-{i}", protocol_level=MQTT_3_1_1, keep_alive=60,
                    username=username, password=password),
            MQTT_3_1_1,
        )  # fmt: skip
        protocol.dataReceived(data)

    def settle(self) -> None:
        self.redis.settle()
        self.broker.flush()
        self.reactor.advance(0)
        for commands in self.commands:
            commands.commands.clear()  # kept by the fake for assertions, not by an edge


class Sink:
    def emit(self, *events: Any) -> None:
        pass

    def emit_confirmed(self, events: Any) -> Any:
        from twisted.internet.defer import succeed

        return succeed(None)


def per_connection(n: int, anonymous: bool, top: int = 0) -> float:
    edge = Edge(n, anonymous)
    # Warm up: the product record, interned strings, caches of the first connects.
    warm = 50
    for i in range(warm):
        edge.connect(
            n + i, None if anonymous else f"dev-{i}", None if anonymous else SECRET.encode()
        )
        edge.settle()
    gc.collect()
    tracemalloc.start(8 if top else 1)
    before = tracemalloc.take_snapshot()
    for i in range(warm, n):
        edge.connect(i, None if anonymous else f"dev-{i}", None if anonymous else SECRET.encode())
        if i % 100 == 0:
            edge.settle()
    edge.settle()
    edge.reactor.advance(1)
    edge.settle()
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    held = len(edge.broker.connections)
    assert held >= n, f"only {held} of {n} connections held"
    # Not the edge's: the client ends (socket objects) and the in-memory Redis (a real edge
    # keeps routes, claims and signed passwords in Redis, not in its heap).
    test_side = [
        tracemalloc.Filter(False, "*/fakeredis/*"),
        tracemalloc.Filter(False, "*/tests/support/fake_redis.py"),
        tracemalloc.Filter(False, "*/redis/*"),
        tracemalloc.Filter(False, socket.__file__),
    ]
    stats = after.filter_traces(test_side).compare_to(
        before.filter_traces(test_side), "traceback" if top else "lineno"
    )
    total = sum(s.size_diff for s in stats)
    count = n - warm
    if top:
        for stat in sorted(stats, key=lambda s: -s.size_diff)[:top]:
            print(f"{stat.size_diff / count:8.1f} B  {stat.count_diff / count:5.2f} blocks")
            for line in stat.traceback.format(limit=2):
                print("        " + line)
    return total / count


def main(argv: list[str]) -> None:
    n = int(argv[0]) if argv and argv[0].isdigit() else 3000
    top = int(argv[argv.index("--top") + 1]) if "--top" in argv else 0
    for anonymous in (False, True):
        kind = "anonymous" if anonymous else "authenticated"
        print(f"{kind}: {per_connection(n, anonymous, top):.0f} B per connection (N={n})")


if __name__ == "__main__":
    main(sys.argv[1:])
