"""Virtual devices for demos, tests and benchmarks (`manage.py simulate`).

Each virtual device connects over MQTT with its identifier and secret, reports values generated
from the product's thing model on ``/datas``, answers ``/command`` with a ``commandResponse``
carrying the same mid (and applies parameters named like writable properties), follows the
shadow (``/shadow/delta`` → apply → ``/shadow/update``) and plays along with OTA upgrades.

Many devices share one thread: the paho clients run on an external ``selectors`` loop, so a
thousand devices cost a thousand sockets, not a thousand threads.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import random
import selectors
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt

from edge.clock import now_ms
from edge.codecs.thinglinks import TOPIC_PREFIX

log = logging.getLogger(__name__)

TOPIC = TOPIC_PREFIX + "{device}/{suffix}"


# values from the thing model --------------------------------------------------------------


def _bounds(spec: dict[str, Any], low: float, high: float) -> tuple[float, float]:
    lo = spec.get("min")
    hi = spec.get("max")
    lo = float(lo) if lo is not None else (min(low, float(hi) - (high - low)) if hi is not None
                                           else low)
    hi = float(hi) if hi is not None else lo + (high - low)
    return lo, hi


def initial_value(spec: dict[str, Any], rng: random.Random) -> Any:
    """A plausible value of a property (or parameter) for its datatype and limits."""
    datatype = spec.get("datatype")
    enum = spec.get("enum") or spec.get("enum_values")
    if datatype == "enum" or (datatype == "string" and enum):
        return rng.choice(list(enum)) if enum else ""
    if datatype in ("int", "bigint"):
        lo, hi = _bounds(spec, 0, 100)
        return rng.randint(int(lo), max(int(lo), int(hi)))
    if datatype == "decimal":
        lo, hi = _bounds(spec, 0, 100)
        return _rounded(rng.uniform(lo, hi), spec)
    if datatype == "bool":
        return rng.random() < 0.5
    if datatype == "datetime":
        return now_ms()
    if datatype == "json":
        return {"simulated": True}
    if datatype == "binary":
        return base64.b64encode(rng.randbytes(4)).decode()
    limit = int(spec.get("max_length") or 16)
    return f"sim-{rng.randrange(10_000)}"[:limit]


def _rounded(value: float, spec: dict[str, Any]) -> float:
    step = spec.get("step")
    value = round(round(value / float(step)) * float(step), 6) if step else round(value, 2)
    lo, hi = spec.get("min"), spec.get("max")
    if lo is not None:
        value = max(value, float(lo))
    if hi is not None:
        value = min(value, float(hi))
    return value


def next_value(current: Any, spec: dict[str, Any], rng: random.Random) -> Any:
    """The next reading: a small random walk within the limits, or a fresh value."""
    datatype = spec.get("datatype")
    if datatype in ("int", "bigint") and isinstance(current, int):
        lo, hi = _bounds(spec, 0, 100)
        stride = max(1, int((hi - lo) / 20))
        return int(min(max(current + rng.randint(-stride, stride), lo), hi))
    if datatype == "decimal" and isinstance(current, int | float):
        lo, hi = _bounds(spec, 0, 100)
        return _rounded(current + rng.uniform(-1, 1) * (hi - lo) / 50, spec)
    if datatype == "datetime":
        return now_ms()
    if datatype == "bool":
        return current if rng.random() < 0.9 else not current
    return current


# one virtual device -----------------------------------------------------------------------


@dataclass
class Stats:
    connected: int = 0
    reports: int = 0
    commands: int = 0
    shadow_updates: int = 0
    upgrades: int = 0


@dataclass
class VirtualDevice:
    identifier: str
    secret: str
    model: dict[str, Any]
    rng: random.Random
    stats: Stats
    state: dict[str, dict[str, Any]] = field(default_factory=dict)
    client: Any = None
    next_report: float = 0.0
    mid: int = 0
    connected: bool = False
    reconnect_at: float | None = None
    versions: dict[int, str] = field(default_factory=lambda: {0: "1.0.0", 1: "1.0.0"})

    def __post_init__(self) -> None:
        for service, spec in self.model.get("services", {}).items():
            self.state[service] = {code: initial_value(prop, self.rng)
                                   for code, prop in (spec.get("properties") or {}).items()}

    def topic(self, suffix: str) -> str:
        return TOPIC.format(device=self.identifier, suffix=suffix)

    def publish(self, suffix: str, body: dict[str, Any], mid: int | None = None,
                qos: int = 0) -> None:
        if mid is None:
            self.mid = self.mid % 2_000_000_000 + 1
            mid = self.mid
        message = {"head": {"mid": mid, "cipherFlag": 0, "timeStamp": now_ms()},
                   "dataBody": body, "dataSign": ""}
        self.client.publish(self.topic(suffix), json.dumps(message, separators=(",", ":")),
                            qos=qos)

    # behaviour -----------------------------------------------------------------------------

    def on_connect(self) -> None:
        self.connected = True
        self.stats.connected += 1
        for suffix in ("command", "shadow/delta", "shadow/getResponse", "topo/otaCommand",
                       "topo/otaRead"):
            self.client.subscribe(self.topic(suffix), qos=1)
        self.publish("shadow/get", {})

    def report(self) -> None:
        """One ``/datas`` message with every service's values."""
        services = []
        for service, values in self.state.items():
            specs = self.model["services"][service].get("properties") or {}
            for code in values:
                values[code] = next_value(values[code], specs[code], self.rng)
            if values:
                services.append({"serviceCode": service, "data": dict(values),
                                 "eventTime": now_ms()})
        if services:
            self.publish("datas", {"devices": [{"deviceId": self.identifier,
                                                "services": services}]})
            self.stats.reports += 1

    def apply(self, changes: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """Take ``{service: {property: value}}`` into the state; returns what was applied."""
        applied: dict[str, dict[str, Any]] = {}
        for service, values in (changes or {}).items():
            if service in self.state and isinstance(values, dict):
                for code, value in values.items():
                    if code in self.state[service]:
                        self.state[service][code] = value
                        applied.setdefault(service, {})[code] = value
        return applied

    def handle(self, topic: str, payload: bytes) -> None:
        try:
            message = json.loads(payload)
        except ValueError:
            return
        mid = message.get("head", {}).get("mid") if isinstance(message, dict) else None
        body = message.get("dataBody", message) if isinstance(message, dict) else {}
        if not isinstance(body, dict):
            return
        suffix = topic.split(f"/{self.identifier}/", 1)[-1]
        if suffix == "command":
            self._answer_command(body, mid)
        elif suffix == "shadow/delta" or suffix == "shadow/getResponse":
            applied = self.apply(body.get("delta") or {})
            if applied:
                self.publish("shadow/update", {"reported": applied})
                self.stats.shadow_updates += 1
        elif suffix == "topo/otaCommand":
            self._upgrade(body)
        elif suffix == "topo/otaRead":
            package_type = int(body.get("packageType", 1))
            self.publish("topo/otaReadResponse", {
                "deviceIdentification": self.identifier, "packageType": package_type,
                "currentVersion": self.versions.get(package_type, "1.0.0")})

    def _answer_command(self, body: dict[str, Any], mid: Any) -> None:
        service, command = body.get("serviceCode"), body.get("cmd")
        raw = body.get("params")
        params: dict[str, Any] = raw if isinstance(raw, dict) else {}
        if isinstance(service, str):
            self.apply({service: params})
        spec = (self.model.get("services", {}).get(service, {}).get("commands", {})
                .get(command, {}))
        response = {code: initial_value(p, self.rng)
                    for code, p in (spec.get("responses") or {}).items()}
        for code in response:
            if code in params:
                response[code] = params[code]
            elif spec["responses"][code].get("datatype") == "string":
                response[code] = "ok"
        self.publish("commandResponse", {
            "deviceIdentification": body.get("deviceIdentification", self.identifier),
            "msgType": "deviceRsp", "serviceCode": service, "cmd": command, "errCode": 0,
            "params": response}, mid=mid if isinstance(mid, int) else None, qos=1)
        self.stats.commands += 1

    def _upgrade(self, body: dict[str, Any]) -> None:
        task = body.get("otaTaskId")
        for status, progress in ((1, 50), (2, 100)):
            self.publish("topo/otaCommandResponse", {
                "deviceIdentification": self.identifier, "otaTaskId": task,
                "upgradeStatus": status, "progress": progress}, qos=1)
        self.versions[int(body.get("packageType", 1))] = str(body.get("version", ""))
        self.stats.upgrades += 1


# the loop ---------------------------------------------------------------------------------


class Simulator:
    """Runs virtual devices on one selector loop until ``stop()`` returns true."""

    def __init__(self, devices: list[tuple[str, str]], model: dict[str, Any], *,
                 host: str = "127.0.0.1", port: int = 11883, interval: float = 5.0,
                 keepalive: int = 60, seed: int | None = None) -> None:
        rng = random.Random(seed)
        self.stats = Stats()
        self.host, self.port, self.interval, self.keepalive = host, port, interval, keepalive
        self.devices = [VirtualDevice(identifier, secret, model, random.Random(rng.random()),
                                      self.stats) for identifier, secret in devices]
        self.selector = selectors.DefaultSelector()

    def _client(self, device: VirtualDevice) -> Any:
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                             client_id=f"{device.identifier}-sim", protocol=mqtt.MQTTv311)
        client.username_pw_set(device.identifier, device.secret)

        def connected(c: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
            if reason.is_failure:
                log.warning("%s refused: %s", device.identifier, reason)
                return
            device.on_connect()

        def disconnected(c: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
            if device.connected:
                self.stats.connected -= 1
            device.connected = False
            device.reconnect_at = time.monotonic() + 2 + device.rng.random() * 3

        client.on_connect = connected
        client.on_disconnect = disconnected
        client.on_message = lambda c, u, m: device.handle(m.topic, bytes(m.payload))

        def opened(c: Any, userdata: Any, sock: Any) -> None:
            self.selector.register(sock, selectors.EVENT_READ, device)

        client.on_socket_open = opened
        client.on_socket_close = lambda c, u, sock: self._unregister(sock)
        client.on_socket_register_write = lambda c, u, sock: None
        client.on_socket_unregister_write = lambda c, u, sock: None
        return client

    def _unregister(self, sock: Any) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(sock)

    def _connect(self, device: VirtualDevice) -> None:
        device.reconnect_at = None
        try:
            if device.client is None:
                device.client = self._client(device)
                device.client.connect(self.host, self.port, keepalive=self.keepalive)
            else:
                device.client.reconnect()
        except OSError as exc:
            log.warning("%s cannot connect: %s", device.identifier, exc)
            device.reconnect_at = time.monotonic() + 5

    def run(self, stop: Callable[[], bool] = lambda: False,
            on_tick: Callable[[Stats], None] | None = None) -> Stats:
        started = time.monotonic()
        for i, device in enumerate(self.devices):
            device.next_report = started + self.interval * (i / max(1, len(self.devices)))
            self._connect(device)
        last_tick = started
        try:
            while not stop():
                for key, _events in self.selector.select(timeout=0.05):
                    device = key.data
                    device.client.loop_read()
                now = time.monotonic()
                for device in self.devices:
                    client = device.client
                    if device.reconnect_at is not None and now >= device.reconnect_at:
                        self._connect(device)
                        continue
                    if client is None:
                        continue
                    if device.connected and now >= device.next_report:
                        device.report()
                        device.next_report = now + self.interval
                    if client.want_write():
                        client.loop_write()
                    client.loop_misc()
                if on_tick is not None and now - last_tick >= 5:
                    last_tick = now
                    on_tick(self.stats)
        finally:
            for device in self.devices:
                if device.client is not None:
                    device.client.disconnect()
                    if device.client.want_write():
                        device.client.loop_write()
            self.selector.close()
        return self.stats
