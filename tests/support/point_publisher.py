"""A device that publishes numbered points at a steady rate from its own thread (paho-mqtt),
recording which were acknowledged (PUBACK) and when: the load of the tests that kill a Redis
under traffic and then count every acknowledged point in storage."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt

# The data of point `seq`: (service code, properties, eventTime or None).
Point = Callable[[int], tuple[str, dict[str, Any], int | None]]


def numbered(seq: int) -> tuple[str, dict[str, Any], int | None]:
    return "s", {"seq": seq}, None


@dataclass
class PointPublisher:
    port: int
    name: str
    password: str
    rate: float
    qos: int = 1
    start_seq: int = 0
    point: Point = numbered
    protocol: int = mqtt.MQTTv311
    mids: dict[int, int] = field(default_factory=dict)
    acked: list[tuple[int, float]] = field(default_factory=list)
    sent: list[int] = field(default_factory=list)
    disconnects: int = 0
    running: bool = True

    def __post_init__(self) -> None:
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.name,
                             protocol=self.protocol)
        client.username_pw_set(self.name, self.password)
        client.max_inflight_messages_set(50)
        client.reconnect_delay_set(1, 2)
        client.on_publish = lambda c, u, mid, rc, p: self.acked.append((mid, time.monotonic()))
        self.connected = threading.Event()
        client.on_connect = lambda c, u, flags, rc, p: (None if rc.is_failure
                                                        else self.connected.set())
        client.on_disconnect = self._on_disconnect
        self.lock = threading.Lock()
        self.client = client
        client.connect("127.0.0.1", self.port, keepalive=30)
        client.loop_start()
        assert self.connected.wait(15), f"{self.name} did not connect"
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> PointPublisher:
        self.thread.start()
        return self

    def _on_disconnect(self, *args: Any) -> None:
        self.disconnects += 1

    def _run(self) -> None:
        seq = self.start_seq
        period = 1 / self.rate
        next_at = time.monotonic()
        while self.running:
            code, data, event_time = self.point(seq)
            service: dict[str, Any] = {"serviceCode": code, "data": data}
            if event_time is not None:
                service["eventTime"] = event_time
            body = {"devices": [{"deviceId": self.name, "services": [service]}]}
            with self.lock:  # the mid is known before its PUBACK can arrive
                info = self.client.publish(f"/v1/devices/{self.name}/datas", json.dumps(body),
                                           qos=self.qos)
                self.mids[info.mid] = seq
            self.sent.append(seq)
            seq += 1
            next_at += period
            time.sleep(max(0.0, next_at - time.monotonic()))

    def acked_seqs(self, after: float = 0.0) -> set[int]:
        with self.lock:
            return {self.mids[mid] for mid, at in list(self.acked)
                    if at >= after and mid in self.mids}

    def stop(self) -> None:
        self.running = False
        self.thread.join(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
