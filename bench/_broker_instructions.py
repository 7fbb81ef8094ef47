"""The broker's own work per CONNECT or per message, in process, for instruction counting.

Run under valgrind's callgrind, which counts instructions whatever else the machine does:

    valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        .venv/bin/python -m bench._broker_instructions connect 2000

and subtract the count of `… base 0` (start-up and set-up alone); divide by N. Modes:
`connect N` (N clean-start MQTT 3.1.1 clients from distinct addresses), `fanout N` (N QoS 0
messages to 10 subscribers), `fanin N` (N QoS 0 messages to one subscriber). No sockets, no
hooks, no Redis: `FakeClient`s of tests/support/broker.py on a `Broker` (docs/performance.md).
"""

from __future__ import annotations

import sys

from twisted.internet.task import Clock

from edge.mqtt.broker import Broker
from edge.mqtt.codec import encode
from edge.mqtt.packets import MQTT_3_1_1, Connect, Publish, Subscribe, Subscription
from tests.support.broker import FakeClient

BATCH = 100


def client(broker: Broker, i: int) -> FakeClient:
    return FakeClient(broker, port=1000 + i, host=f"10.1.{i // 250}.{i % 250 + 1}")


def connected(broker: Broker, i: int, client_id: str) -> FakeClient:
    c = client(broker, i)
    c.send(Connect(client_id, protocol_level=MQTT_3_1_1))
    broker.flush()
    c.transport.clear()
    return c


def main(mode: str, n: int) -> None:
    broker = Broker(Clock(), None)
    broker.start()
    clients = [connected(broker, i, f"c{i}") for i in range(40)]
    for s in clients[:10]:
        s.send(Subscribe(1, (Subscription("t/#", 0),)))
    one = clients[20]
    one.send(Subscribe(1, (Subscription("u/#", 0),)))
    broker.flush()
    for c in clients:
        c.transport.clear()
    if mode == "connect":
        for i in range(n):
            connected(broker, 100 + i, f"k{i}")
    elif mode == "fanout":
        data = encode(Publish("t/a", b"x" * 64), MQTT_3_1_1) * BATCH
        for _ in range(n // BATCH):
            clients[10].send_bytes(data)
            broker.flush()
            for s in clients[:10]:
                s.transport.clear()
    elif mode == "fanin":
        data = encode(Publish("u/a", b"x" * 64), MQTT_3_1_1) * BATCH
        for _ in range(n // BATCH):
            clients[30].send_bytes(data)
            broker.flush()
            one.transport.clear()
    elif mode != "base":
        raise SystemExit(f"unknown mode {mode!r}: base, connect, fanout or fanin")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 0)
