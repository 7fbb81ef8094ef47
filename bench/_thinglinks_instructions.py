"""The edge's own work per device CONNECT or QoS 1 telemetry message through the ThingLinks
layer, in process, for instruction counting.

`bench._broker_instructions` counts the broker alone (no hooks); this counts what a device
costs: authentication with its secret, presence, the uplink pipeline (parse, authorize,
validate against the thing model, events and message log) and the PUBACK once the uplink
entry is written. Run under valgrind's callgrind, which counts instructions whatever else
the machine does:

    valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        .venv/bin/python -m bench._thinglinks_instructions publish 10000

and subtract the count of `… base 0` (`… register N` for `connect N`, which writes the N
devices it connects); divide by N. Modes: `connect N` (N devices connect with their secret,
each a first use of its record), `publish N` (N QoS 1 `datas` messages of the bare body the
device-transports bench sends, from 10 connected devices, 100 per device per read).
Redis is a stand-in answering every command at once from memory: the count is the edge's,
not Redis's or the network's.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from edge.bus.client import Arg
from edge.bus.keys import Keys
from edge.bus.registry import Registry
from edge.bus.uplink import Uplink
from edge.crypto import encrypt_secret
from edge.mqtt.broker import Broker
from edge.mqtt.codec import encode
from edge.mqtt.packets import MQTT_3_1_1, Connect, Publish
from edge.thinglinks.mqtt import EdgeHooks
from tests.support.broker import FakeClient

SECRET_KEY = "bench-thinglinks-secret-key"
DEVICE_SECRET = b"bench-device-secret"
MODEL = {
    "services": {
        "env": {
            "properties": {
                "temperature": {"datatype": "decimal"},
                "humidity": {"datatype": "int"},
            }
        }
    }
}
DEVICES = 10
BATCH = 100
CONNACK_ACCEPTED = b"\x20\x02\x00\x00"


class MemoryRedis:
    """Hashes for the registry's HGETALL; every other command (XADD, HSET, scripts) is
    answered with a success at once."""

    connected = True

    def __init__(self, hashes: dict[str, dict[bytes, bytes]]) -> None:
        self.hashes = hashes

    def start(self) -> Deferred[None]:
        return succeed(None)

    def stop(self) -> Deferred[None]:
        return succeed(None)

    def execute(self, *args: Arg) -> Deferred[Any]:
        if args[0] == "HGETALL":
            fields = self.hashes.get(str(args[1]), {})
            return succeed([item for pair in fields.items() for item in pair])
        return succeed(1)

    def pipeline(self, commands: Sequence[Sequence[Arg]]) -> list[Deferred[Any]]:
        return [self.execute(*command) for command in commands]


def connect(broker: Broker, clock: Clock, index: int) -> FakeClient:
    client = FakeClient(
        broker, port=2000 + index % 30000, host=f"10.2.{index // 250}.{index % 250 + 1}"
    )
    device = f"d{index}"
    client.send(Connect(device, protocol_level=MQTT_3_1_1, username=device, password=DEVICE_SECRET))
    broker.flush()
    clock.advance(0)
    assert client.transport.value() == CONNACK_ACCEPTED, client.transport.value()
    client.transport.clear()
    return client


def publishes(device: str) -> bytes:
    """BATCH QoS 1 messages of ``device`` in one read."""
    body = json.dumps(
        {
            "devices": [
                {
                    "deviceId": device,
                    "services": [
                        {"serviceCode": "env", "data": {"temperature": 21.5, "humidity": 40}}
                    ],
                }
            ]
        }
    ).encode()
    topic = f"/v1/devices/{device}/datas"
    return b"".join(
        encode(Publish(topic, body, qos=1, packet_id=k + 1), MQTT_3_1_1) for k in range(BATCH)
    )


def main(mode: str, n: int) -> None:
    keys = Keys("bench:")
    secret = encrypt_secret(DEVICE_SECRET.decode(), SECRET_KEY).encode()
    hashes = {keys.product("p"): {b"model": json.dumps(MODEL).encode(), b"type": b"common"}}
    registered = DEVICES + (n if mode in ("connect", "register") else 0)
    for i in range(registered):
        hashes[keys.device(f"d{i}")] = {
            b"product": b"p",
            b"secret": secret,
            b"status": b"activated",
            b"node_type": b"direct",
            b"gateway": b"",
        }
    redis = MemoryRedis(hashes)
    clock = Clock()
    registry = Registry(redis, keys, SECRET_KEY)
    uplink = Uplink(redis, keys, clock)
    hooks = EdgeHooks(
        clock=clock, redis=redis, keys=keys, registry=registry, uplink=uplink, node="bench"
    )
    broker = Broker(clock, hooks)
    hooks.broker = broker
    broker.start()
    clients = [connect(broker, clock, i) for i in range(DEVICES)]
    reads = [publishes(f"d{i}") for i in range(DEVICES)]
    if mode == "connect":
        for i in range(DEVICES, DEVICES + n):
            connect(broker, clock, i)
    elif mode == "publish":
        for _ in range(n // (BATCH * DEVICES)):
            for client, data in zip(clients, reads, strict=True):
                client.send_bytes(data)
            # One second per round of 100 messages a device: within its publish budget.
            broker.flush()
            clock.advance(1.0)
            broker.flush()
            for client in clients:
                assert len(client.transport.value()) == 4 * BATCH, "a PUBACK is missing"
                client.transport.clear()
        assert uplink.events_written >= 2 * n, "not every message was accepted"
    elif mode not in ("base", "register"):
        raise SystemExit(f"unknown mode {mode!r}: base, register, connect or publish")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 0)
