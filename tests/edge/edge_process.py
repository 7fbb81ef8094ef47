"""Start ``python -m edge`` as a subprocess on free ports and talk to it with paho-mqtt."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import socket
import subprocess
import sys
import tempfile
import threading
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import redis

from edge.mqtt.codec import Decoder, encode
from edge.mqtt.packets import MQTT_3_1_1, ConnAck, Connect, PubAck, Publish
from tests.support.processes import stop_process
from tests.support.waiting import wait_for, wait_for_port

from .redis_server import free_port

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Edge:
    prefix: str
    node: str
    mqtt_port: int
    metrics_port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    redis: redis.Redis

    def key(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def events(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for _id, fields in self.redis.xrange(self.key("uplink")):
            out.extend(json.loads(fields[b"b"]))
        return out

    def wait_for_events(
        self, predicate: Callable[[dict[str, Any]], bool], count: int = 1
    ) -> list[dict[str, Any]]:
        def found() -> list[dict[str, Any]]:
            matching = [e for e in self.events() if predicate(e)]
            return matching if len(matching) >= count else []

        return wait_for(found, message=lambda: f"events: {self.events()}")

    def log(self) -> str:
        return self.log_path.read_text()


def metric(edge: Edge, name: str) -> float:
    """The value of an unlabelled sample on the edge's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{edge.metrics_port}/metrics") as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"no metric {name}")


@contextmanager
def running_edge(
    redis_url: str, prefix: str, env: dict[str, str], client: redis.Redis | None = None
) -> Iterator[Edge]:
    """The edge on free ports with key prefix ``prefix``; stopped and its keys removed after.
    ``client`` reaches the same Redis when ``redis_url`` is not one redis-py opens (Sentinel)."""
    node = f"node-{uuid.uuid4().hex[:6]}"
    r = client if client is not None else redis.Redis.from_url(redis_url)
    mqtt_port, metrics_port = free_port(), free_port()
    full_env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "REDIS_PREFIX": prefix,
        "EDGE_MQTT_PORT": str(mqtt_port),
        "EDGE_METRICS_PORT": str(metrics_port),
        "EDGE_WS_PORT": str(free_port()),
        "EDGE_COAP_PORT": "0",  # UDP 15683 by default: several test edges run at once
        "EDGE_HTTP_PORT": "0",  # TCP 18080 by default, for the same reason
        "EDGE_TCP_PORT": "0",  # raw TCP 18901 and UDP 18902 by default, likewise
        "EDGE_UDP_PORT": "0",
        "EDGE_HOST": "127.0.0.1",
        "EDGE_NODE_ID": node,
        "EDGE_ALLOW_ANONYMOUS": "0",
        **env,
    }
    fd, name = tempfile.mkstemp(prefix="edge-e2e-", suffix=".log")
    log_path = Path(name)
    with os.fdopen(fd, "wb") as log_file:
        command = [sys.executable, "-m", "edge"]
        process = subprocess.Popen(
            command, cwd=ROOT, env=full_env, stdout=log_file, stderr=subprocess.STDOUT
        )
    try:
        wait_for_port(mqtt_port, process, 60, log_path)
        yield Edge(prefix, node, mqtt_port, metrics_port, process, log_path, r)
    finally:
        stop_process(process, 10)
        for key in r.scan_iter(f"{prefix}*"):
            r.delete(key)
        r.close()
        log_path.unlink(missing_ok=True)


class Client:
    """A paho client running its network loop in a thread, with queues for what arrives."""

    def __init__(
        self,
        edge: Edge,
        client_id: str,
        protocol: int = mqtt.MQTTv311,
        transport: str = "tcp",
    ) -> None:
        self.protocol = protocol
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=protocol,
            transport=transport,  # type: ignore[arg-type]
        )
        self.port = edge.mqtt_port
        self.connacks: queue.Queue[Any] = queue.Queue()
        self.subacks: queue.Queue[list[int]] = queue.Queue()
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.disconnects: queue.Queue[Any] = queue.Queue()
        self.client.on_connect = lambda c, u, flags, rc, props: self.connacks.put(rc)
        self.client.on_subscribe = lambda c, u, mid, codes, props: self.subacks.put(
            [int(x.value) for x in codes]
        )
        self.client.on_message = lambda c, u, msg: self.messages.put(msg)
        self.client.on_disconnect = lambda c, u, flags, rc, props: self.disconnects.put(rc)

    def connect(self, username: str | None, password: str | None) -> int:
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.reconnect_delay_set(60, 120)
        if self.protocol == mqtt.MQTTv5:
            self.client.connect("127.0.0.1", self.port, keepalive=30, clean_start=True)
        else:
            self.client.connect("127.0.0.1", self.port, keepalive=30)
        self.client.loop_start()
        return int(self.connacks.get(timeout=10).value)

    def subscribe(self, topic: str, qos: int = 1) -> list[int]:
        self.client.subscribe(topic, qos)
        return self.subacks.get(timeout=10)

    def publish(self, topic: str, payload: Any, qos: int = 1) -> mqtt.MQTTMessageInfo:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        info = self.client.publish(topic, body, qos=qos)
        info.wait_for_publish(timeout=10)
        return info

    def next_message(self, timeout: float = 10) -> mqtt.MQTTMessage:
        return self.messages.get(timeout=timeout)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def raw_connack(port: int, username: str, password: bytes) -> ConnAck:
    """Send a 3.1.1 CONNECT on a plain socket and decode the answer byte by byte (paho
    reports 3.1.1 return codes as 5.0 reason codes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(encode(Connect("raw", username=username, password=password), MQTT_3_1_1))
        decoder = Decoder(MQTT_3_1_1)
        while True:
            data = sock.recv(64)
            assert data, "connection closed without CONNACK"
            packets = list(decoder.feed(data))
            if packets:
                return packets[0]


class RawClient:
    """A 3.1.1 client on a plain socket; a thread reads, acknowledges QoS 1 PUBLISHes and
    counts what arrives."""

    def __init__(self, edge: Edge, client_id: str, clean_start: bool = True) -> None:
        self.sock = socket.create_connection(("127.0.0.1", edge.mqtt_port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.decoder = Decoder(MQTT_3_1_1)
        self.received: set[bytes] = set()
        self.duplicates = 0
        self.acked = 0
        self.other: list[object] = []
        self.closed = False
        self.sock.sendall(encode(Connect(client_id, clean_start=clean_start), MQTT_3_1_1))
        packets = self._read()
        assert isinstance(packets[0], ConnAck) and packets[0].reason_code == 0
        self.connack: ConnAck = packets[0]
        # What came in the same read (a resumed session's queued messages): the thread's first.
        self._early = packets[1:]
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _read(self) -> list[Any]:
        while True:
            data = self.sock.recv(1 << 16)
            if not data:
                self.closed = True
                return []
            packets = list(self.decoder.feed(data))
            if packets:
                return packets

    def _run(self) -> None:
        try:
            while not self.closed:
                acks = []
                packets, self._early = self._early or self._read(), []
                for packet in packets:
                    if isinstance(packet, Publish):
                        key = packet.payload[:8]
                        if key in self.received:
                            self.duplicates += 1
                        self.received.add(key)
                        if packet.qos and packet.packet_id is not None:
                            acks.append(encode(PubAck(packet.packet_id), MQTT_3_1_1))
                    elif isinstance(packet, PubAck):
                        self.acked += 1
                    else:
                        self.other.append(packet)
                if acks:
                    self.sock.sendall(b"".join(acks))
        except OSError:
            self.closed = True

    def close(self) -> None:
        self.closed = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
