"""The production topology of docker/compose.yml, running in containers (docker/trial/run.sh),
used as a user would: a device reports through the edge container, ingest stores it in the
PostgreSQL container, a rule fires an alarm, a command goes down and its answer comes back,
the web's /metrics (from inside its container) lists every process, and the Prometheus of the
monitoring profile scrapes the web (with METRICS_TOKEN) and the edge, evaluates every shipped
alert without an error, and fires EdgeWorkerRestarts once an edge worker is killed.

    python docker/trial/check.py --secret <demo-001's secret> --password <admin's password>
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import paho.mqtt.client as mqtt

WEB = "http://127.0.0.1:8000"
PROMETHEUS = "http://127.0.0.1:9090"
# Run in the edge container: SIGKILL one worker (a child of the supervisor, pid 1).
KILL_A_WORKER = """
import os, signal
for pid in sorted(int(p) for p in os.listdir('/proc') if p.isdigit()):
    try:
        status = open(f'/proc/{pid}/status').read()
        cmdline = open(f'/proc/{pid}/cmdline', 'rb').read()
    except OSError:
        continue
    if 'PPid:\\t1\\n' in status and b'edge' in cmdline:
        os.kill(pid, signal.SIGKILL)
        print(pid)
        break
"""
DEVICE = "demo-001"
BASE = f"/v1/devices/{DEVICE}"


def api(method: str, path: str, token: str | None = None, body: Any = None) -> Any:
    request = urllib.request.Request(  # noqa: S310 (http://127.0.0.1 only)
        WEB + path, method=method, data=None if body is None else json.dumps(body).encode()
    )
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=40) as response:  # noqa: S310
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        raise SystemExit(f"{method} {path}: {exc.code} {exc.read()[:500]!r}") from None


def prometheus(path: str) -> Any:
    with urllib.request.urlopen(PROMETHEUS + path, timeout=20) as response:  # noqa: S310
        body = json.loads(response.read())
    if body.get("status") != "success":
        raise SystemExit(f"Prometheus {path}: {body}")
    return body["data"]


def until(what: Any, check: Any, timeout: float = 30.0) -> Any:
    """``check()`` once it is truthy; after ``timeout`` seconds exit with ``what`` (a text, or
    a callable giving one)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            said = what() if callable(what) else what
            raise SystemExit(f"not reached in {timeout:.0f} s: {said} (last: {value!r})")
        time.sleep(0.5)


class Device:
    """demo-001 on the edge container's MQTT port: reports, reads datasResponse, answers
    commands."""

    def __init__(self, secret: str) -> None:
        self.responses: list[dict[str, Any]] = []
        self.commands: list[dict[str, Any]] = []
        self.subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{DEVICE}-trial")
        self.client.username_pw_set(DEVICE, secret)
        self.client.on_connect = self._connected
        self.client.on_subscribe = lambda *args: self.subscribed.set()
        self.client.on_message = self._message
        self.client.connect("127.0.0.1", 11883)
        self.client.loop_start()
        if not self.subscribed.wait(15):
            raise SystemExit("the device did not connect and subscribe to the edge container")

    def _connected(self, client: Any, _userdata: Any, _flags: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            print(f"CONNECT refused: {reason}", file=sys.stderr)
            return
        client.subscribe([(f"{BASE}/datasResponse", 1), (f"{BASE}/command", 1)])

    def _message(self, client: Any, _userdata: Any, message: Any) -> None:
        body = json.loads(message.payload)
        if message.topic.endswith("/datasResponse"):
            self.responses.append(body)
            return
        self.commands.append(body)
        inner = body.get("dataBody", body)
        reply = {"msgType": "deviceRsp", "serviceCode": inner.get("serviceCode"),
                 "cmd": inner.get("cmd"), "errCode": 0, "params": {}}
        mid = (body.get("head") or {}).get("mid")
        if mid is not None:
            reply = {"head": {"mid": mid, "cipherFlag": 0,
                              "timeStamp": int(time.time() * 1000)},
                     "dataBody": reply, "dataSign": ""}
        client.publish(f"{BASE}/commandResponse", json.dumps(reply), qos=1)

    def report(self, **values: float) -> None:
        body = {"devices": [{"deviceId": DEVICE,
                             "services": [{"serviceCode": "env", "data": values}]}]}
        self.client.publish(f"{BASE}/datas", json.dumps(body), qos=1).wait_for_publish(10)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--secret", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--project", default="tltrial")
    args = parser.parse_args()
    web_container, edge_container = f"{args.project}_web_1", f"{args.project}_edge_1"

    token = api("POST", "/api/v1/auth/token/", body={"username": "admin",
                                                      "password": args.password})["access"]
    api("POST", "/api/v1/rules/", token, {
        "name": "trial-hot", "enabled": True,
        "trigger": {"type": "property", "product": "thermo", "service": "env",
                    "property": "temperature"},
        "condition": {"op": ">", "value": 30},
        "actions": [{"type": "alarm", "severity": "major", "message": "too hot"}]})
    device = Device(args.secret)
    time.sleep(2)  # the rule reaches the ingest containers' rule index

    device.report(temperature=25.5, humidity=40)
    latest = until("the reported value in the telemetry API", lambda: api(
        "GET", f"/api/v1/telemetry/latest/?devices={DEVICE}", token
    )["results"].get(DEVICE, {}).get("env", {}).get("temperature"))
    assert latest["value"] == 25.5, latest
    print(f"telemetry: temperature {latest['value']} stored at {latest['ts']}")

    device.report(temperature=500)
    refused = until("the out-of-range answer on datasResponse",
                    lambda: [r for r in device.responses if r.get("statusCode") == 1])
    print(f"out of range: {refused[0]['statusDesc']}")

    device.report(temperature=35)
    alarms = until("the rule's alarm", lambda: [
        a for a in api("GET", "/api/v1/alarms/", token)["results"]
        if a["rule_name"] == "trial-hot" and a["device"] == DEVICE])
    print(f"rule: alarm {alarms[0]['severity']} '{alarms[0]['message']}' "
          f"(value {alarms[0]['details']['value']})")

    command = api("POST", f"/api/v1/devices/{DEVICE}/commands/", token, {
        "service": "env", "command": "set_interval", "params": {"seconds": 10},
        "timeout": 10, "sync": True})
    assert command["status"] == "succeeded", command
    assert device.commands, "the device saw no command"
    print(f"command {command['id']}: {command['status']}")

    script = ("import urllib.request; print(urllib.request.urlopen("
              "'http://127.0.0.1:8000/metrics', timeout=20).read().decode())")
    text = subprocess.run(["podman", "exec", web_container, "python", "-c", script],
                          check=True, capture_output=True, text=True).stdout
    roles = {line.split('role="', 1)[1].split('"', 1)[0]
             for line in text.splitlines() if 'role="' in line}
    missing = {"web", "edge", "ingest", "worker", "beat"} - roles
    assert not missing, f"/metrics lacks the processes {missing}"
    print(f"/metrics from inside the web container: roles {sorted(roles)}")
    device.client.loop_stop()
    device.client.disconnect()
    check_prometheus(edge_container)
    print("trial: device -> telemetry -> rule -> command through the containers: ok")


def check_prometheus(edge_container: str) -> None:
    """The monitoring profile's Prometheus: both targets up, every alert evaluated without an
    error, and EdgeWorkerRestarts firing once an edge worker is killed."""

    seen: dict[str, str] = {}

    def targets_up() -> bool:
        active = prometheus("/api/v1/targets")["activeTargets"]
        seen.clear()
        seen.update({t["labels"]["job"]: t["health"] + " " + t["lastError"] for t in active})
        return all(t["health"] == "up" for t in active) and len(active) == 2

    until(lambda: f"Prometheus scraping the web (bearer METRICS_TOKEN) and the edge: {seen}",
          targets_up, 60)

    def evaluated() -> list[dict[str, Any]]:
        rules = [rule for group in prometheus("/api/v1/rules")["groups"]
                 for rule in group["rules"]]
        return rules if rules and all(r.get("lastEvaluation", "").startswith("20")
                                      and r["health"] != "unknown" for r in rules) else []

    rules = until("every alerting rule evaluated", evaluated, 60)
    broken = {r["name"]: r.get("lastError") for r in rules if r["health"] != "ok"}
    assert not broken, f"alerting rules that fail to evaluate: {broken}"
    print(f"Prometheus: targets thinglinks and edge up, {len(rules)} alerting rules "
          "evaluated without an error")
    assert any(r["name"] == "EdgeWorkerRestarts" for r in rules)

    killed = subprocess.run(["podman", "exec", edge_container, "python", "-c", KILL_A_WORKER],
                            check=True, capture_output=True, text=True).stdout.strip()
    assert killed, "no edge worker process found in the edge container"

    def firing() -> list[dict[str, Any]]:
        return [a for a in prometheus("/api/v1/alerts")["alerts"]
                if a["labels"]["alertname"] == "EdgeWorkerRestarts" and a["state"] == "firing"]

    alert = until("EdgeWorkerRestarts firing", firing, 90)[0]
    print(f"edge worker (pid {killed} in its container) killed: alert EdgeWorkerRestarts "
          f"firing for worker {alert['labels'].get('worker')}")


if __name__ == "__main__":
    main()
