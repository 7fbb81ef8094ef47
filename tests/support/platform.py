"""Start the real platform processes (edge, ingest, web) for end-to-end tests, and talk to
them as a device (a paho client) and over the REST API."""

from __future__ import annotations

import json
import os
import queue
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from tests.support.processes import stop_process
from tests.support.waiting import wait_for_port

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def database_url(settings_dict: dict[str, Any]) -> str:
    if settings_dict["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{settings_dict['NAME']}"
    user = settings_dict.get("USER") or ""
    password = f":{settings_dict['PASSWORD']}" if settings_dict.get("PASSWORD") else ""
    auth = f"{user}{password}@" if user else ""
    host = settings_dict.get("HOST") or "127.0.0.1"
    port = settings_dict.get("PORT") or 5432
    return f"postgres://{auth}{host}:{port}/{settings_dict['NAME']}"


@dataclass
class Platform:
    env: dict[str, str]
    mqtt_port: int = field(default_factory=free_port)
    web_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    token: str = ""

    @classmethod
    def create(cls, db_url: str, redis_url: str) -> Platform:
        prefix = f"e2e{uuid.uuid4().hex[:8]}:"
        env = {**os.environ, "DATABASE_URL": db_url, "REDIS_URL": redis_url,
               "REDIS_PREFIX": prefix, "PYTHONUNBUFFERED": "1", "EDGE_NODE_ID": f"{prefix}n1"}
        platform = cls(env)
        platform.env.update({"EDGE_MQTT_PORT": str(platform.mqtt_port),
                             "EDGE_METRICS_PORT": str(platform.metrics_port),
                             "EDGE_WS_PORT": str(free_port()),
                             "EDGE_COAP_PORT": str(free_port()),
                             "EDGE_HTTP_PORT": str(free_port()),
                             "EDGE_TCP_PORT": str(free_port()),
                             "EDGE_UDP_PORT": str(free_port()),
                             "EDGE_HOST": "127.0.0.1"})
        return platform

    @property
    def prefix(self) -> str:
        return self.env["REDIS_PREFIX"]

    def spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        process = subprocess.Popen(argv, cwd=ROOT, env=self.env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT)
        self.processes[name] = process
        return process

    def start_edge(self) -> None:
        wait_for_port(self.mqtt_port, self.spawn("edge", [sys.executable, "-m", "edge"]))

    def start_ingest(self) -> None:
        self.spawn("ingest", [sys.executable, "manage.py", "ingest", "--count", "50"])

    def start_web(self) -> None:
        daphne = str(Path(sys.executable).parent / "daphne")
        wait_for_port(self.web_port, self.spawn(
            "web", [daphne, "-b", "127.0.0.1", "-p", str(self.web_port),
                    "config.asgi:application"]))

    def stop(self, name: str) -> str:
        process = self.processes.pop(name)
        stop_process(process, 15)
        return process.stdout.read().decode(errors="replace") if process.stdout else ""

    def stop_all(self) -> dict[str, str]:
        return {name: self.stop(name) for name in list(self.processes)}

    # REST API over real HTTP ------------------------------------------------------------

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"http://127.0.0.1:{self.web_port}{path}", data=data,
                                         method=method)
        request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
                raw = response.read()
                return response.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as error:
            raw = error.read()
            return error.code, json.loads(raw) if raw else None

    def login(self, username: str, password: str) -> None:
        status, body = self.call("POST", "/api/v1/auth/token/",
                                 {"username": username, "password": password})
        assert status == 200, body
        self.token = body["access"]



@contextmanager
def running_platform(settings_dict: dict[str, Any], redis_url: str, username: str,
                     password: str) -> Iterator[Platform]:
    """Edge, ingest and web started and logged in as `username`; on the way out every process
    is stopped and the tail of its output printed (shown when a test fails)."""
    platform = Platform.create(database_url(settings_dict), redis_url)
    try:
        platform.start_edge()
        platform.start_ingest()
        platform.start_web()
        platform.login(username, password)
        yield platform
    finally:
        for name, out in platform.stop_all().items():
            print(f"----- {name} -----\n{out[-4000:]}")


class Client:
    """A paho MQTT 3.1.1 client with a queue of received messages."""

    def __init__(self, port: int, username: str, password: str, client_id: str = "") -> None:
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.connack: queue.Queue[int] = queue.Queue()
        self.suback: queue.Queue[list[int]] = queue.Queue()
        self.disconnected = False
        self.mqtt = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or
                                f"c-{time.monotonic_ns()}", protocol=mqtt.MQTTv311)
        self.mqtt.username_pw_set(username, password)
        self.mqtt.on_connect = lambda c, u, f, rc, p: self.connack.put(rc.value)
        self.mqtt.on_message = lambda c, u, m: self.messages.put((m.topic, m.payload))
        self.mqtt.on_subscribe = lambda c, u, mid, codes, p: self.suback.put(
            [code.value for code in codes])
        self.mqtt.connect("127.0.0.1", port, keepalive=30)
        self.mqtt.loop_start()

    def connected(self) -> int:
        return self.connack.get(timeout=10)

    def subscribe(self, topic: str, qos: int = 1) -> list[int]:
        self.mqtt.subscribe(topic, qos)
        return self.suback.get(timeout=10)

    def publish(self, topic: str, body, qos: int = 1) -> None:
        payload = body if isinstance(body, bytes | str) else json.dumps(body)
        info = self.mqtt.publish(topic, payload, qos=qos)
        info.wait_for_publish(timeout=10)
        assert info.is_published()

    def next_message(self, timeout: float = 10.0) -> tuple[str, dict]:
        topic, payload = self.messages.get(timeout=timeout)
        return topic, json.loads(payload)

    def close(self) -> None:
        self.mqtt.disconnect()
        self.mqtt.loop_stop()


def datas(device: str, data: dict, service: str = "env") -> dict:
    return {"devices": [{"deviceId": device, "services": [{"serviceCode": service,
                                                          "data": data}]}]}
