"""The broker's own work per CONNECT or per message, in process, for instruction counting.

Run under valgrind's callgrind, which counts instructions whatever else the machine does:

    valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        .venv/bin/python -m bench._broker_instructions connect 2000

and subtract the count of `… base 0` (start-up and set-up alone); divide by N. Modes:
`connect N` (N clean-start MQTT 3.1.1 clients from distinct addresses), `fanout N` (N QoS 0
messages to 10 subscribers), `fanin N` (N QoS 0 messages to one subscriber), `qos1 N` (N QoS 1
messages to one QoS 1 subscriber, both sides acknowledging), `fanin5 N` (`fanin` between MQTT
5.0 clients). No sockets, no
hooks, no Redis: `FakeClient`s of tests/support/broker.py on a `Broker` (docs/performance.md).
"""

from __future__ import annotations

import sys

from twisted.internet.task import Clock

from edge.mqtt.broker import Broker
from edge.mqtt.codec import encode
from edge.mqtt.packets import MQTT_3_1_1, MQTT_5, Connect, Publish, Subscribe, Subscription
from tests.support.broker import FakeClient

BATCH = 100


def client(broker: Broker, i: int, version: int = MQTT_3_1_1) -> FakeClient:
    return FakeClient(broker, version, port=1000 + i, host=f"10.1.{i // 250}.{i % 250 + 1}")


def connected(broker: Broker, i: int, client_id: str, version: int = MQTT_3_1_1) -> FakeClient:
    c = client(broker, i, version)
    c.send(Connect(client_id, protocol_level=version))
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
    one.send(Subscribe(2, (Subscription("q/#", 1),)))
    five = [connected(broker, 50 + i, f"f{i}", MQTT_5) for i in range(2)]
    five[0].send(Subscribe(1, (Subscription("v/#", 0),)))
    broker.flush()
    for c in clients + five:
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
    elif mode == "fanin5":
        data = encode(Publish("v/a", b"x" * 64), MQTT_5) * BATCH
        for _ in range(n // BATCH):
            five[1].send_bytes(data)
            broker.flush()
            five[0].transport.clear()
    elif mode == "qos1":
        session = broker.sessions["c20"]
        sender = clients[31]
        batches = [
            b"".join(
                encode(Publish("q/a", b"x" * 64, qos=1, packet_id=k * BATCH + j + 1), MQTT_3_1_1)
                for j in range(BATCH)
            )
            for k in range(2)
        ]
        for k in range(n // BATCH):
            sender.send_bytes(batches[k % 2])
            broker.flush()
            sender.transport.clear()
            # The subscriber acknowledges what it received.
            acks = [b"\x40\x02" + pid.to_bytes(2, "big") for pid in session.inflight]
            one.send_bytes(b"".join(acks))
            broker.flush()
            one.transport.clear()
    elif mode != "base":
        raise SystemExit(f"unknown mode {mode!r}: base, connect, fanout, fanin, fanin5 or qos1")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 0)
