"""The production topology of docker/compose.yml, run as processes on this machine: the
commands, environment, replica counts and healthchecks are read from the compose file (and the
web's command from the Dockerfile's CMD), not repeated here. Only what a container gets from
its network is replaced: the machine's PostgreSQL (a database of this test's own, created and
dropped here) and Redis (a key prefix of its own) instead of the `postgres` and `redis`
services, free ports on 127.0.0.1 instead of the published ones, a temporary var/.

Then device → telemetry → rule → command through them, over the REST API and MQTT."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

import pytest

from tests.conftest import THERMO, delete_prefixed, require_service
from tests.support import compose
from tests.support.platform import Client, Platform, datas, free_port
from tests.support.processes import stop_process
from tests.support.waiting import wait_for, wait_for_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(170)]

PASSWORD = "Pw-topology-2468"
APP_SERVICES = ("web", "edge", "ingest", "worker", "beat")
# What each process without a port logs once it works.
READY_LINES = {"ingest": "ingest worker", "worker": " ready.", "beat": "beat pidbox: Connected"}


def machine_postgres() -> str:
    """The server of DATABASE_URL when it names PostgreSQL, else the machine's default."""
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        url = "postgres://postgres@127.0.0.1:5432/postgres"
    parsed = urlparse(url)
    require_service("PostgreSQL", parsed.hostname or "127.0.0.1", parsed.port or 5432)
    return parsed._replace(path="/postgres").geturl()


def admin_sql(server: str, statement: str) -> None:
    import psycopg

    with psycopg.connect(server, autocommit=True) as connection:
        connection.execute(statement)


class Topology:
    """The services of docker/compose.yml as child processes, their output in files."""

    def __init__(self, variables: dict[str, str], overrides: dict[str, str], logs: Path):
        self.spec = compose.load(variables)["services"]
        self.overrides = overrides
        self.logs = logs
        self.processes: list[tuple[str, subprocess.Popen[bytes], Path]] = []
        self.last_health: dict[str, str] = {}

    def env(self, service: str) -> dict[str, str]:
        bin_dir = str(Path(sys.executable).parent)
        return {**os.environ, **compose.environment(self.spec[service]), **self.overrides,
                "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}"}

    def run(self, service: str, argv: list[str], timeout: float) -> subprocess.CompletedProcess:
        return subprocess.run(argv, cwd=compose.ROOT, env=self.env(service), capture_output=True,
                              text=True, timeout=timeout, check=False)

    def start(self, service: str, argv: list[str] | None = None) -> subprocess.Popen[bytes]:
        n = sum(1 for name, _p, _l in self.processes if name == service)
        log = self.logs / f"{service}-{n}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(argv or compose.command(self.spec[service]),
                                       cwd=compose.ROOT, env=self.env(service), stdout=out,
                                       stderr=subprocess.STDOUT)
        self.processes.append((service, process, log))
        return process

    def healthy(self, service: str) -> bool:
        result = self.run(service, compose.healthcheck(self.spec[service]), timeout=30)
        self.last_health[service] = f"{result.returncode} {result.stdout}{result.stderr}"
        return result.returncode == 0

    def said(self, service: str, text: str) -> bool:
        """Whether every process of `service` wrote `text` to its output."""
        logs = [log for name, _p, log in self.processes if name == service]
        return bool(logs) and all(text in log.read_text(errors="replace") for log in logs)

    def tail(self, service: str) -> str:
        return "\n".join(log.read_text(errors="replace")[-2000:]
                         for name, _p, log in self.processes if name == service)

    def stop_all(self) -> None:
        # The edge first (devices go offline while ingest still records it), as runplatform.
        order = {"edge": 0, "web": 1, "ingest": 2, "worker": 3, "beat": 4}
        for name, process, log in sorted(self.processes, key=lambda p: order.get(p[0], 9)):
            stop_process(process, 20)
            print(f"----- {name} ({log.name}) -----\n{log.read_text(errors='replace')[-3000:]}")


@pytest.fixture
def topology(tmp_path, redis_url) -> Iterator[tuple[Topology, Platform]]:
    server = machine_postgres()
    database = f"tl_topology_{uuid.uuid4().hex[:10]}"
    prefix = f"topo{uuid.uuid4().hex[:8]}:"
    web_port, metrics_port = free_port(), free_port()
    db_url = urlparse(server)._replace(path=f"/{database}").geturl()
    # What .env gives compose: the test's key, its own admin password, the web's address.
    variables = {"DJANGO_SECRET_KEY": os.environ["DJANGO_SECRET_KEY"],
                 "POSTGRES_PASSWORD": "unused", "REDIS_PASSWORD": "unused",
                 "PUBLIC_BASE_URL": f"http://127.0.0.1:{web_port}",
                 "DJANGO_SUPERUSER_PASSWORD": PASSWORD}
    # What the containers' network gives them instead.
    overrides = {"DATABASE_URL": db_url, "REDIS_URL": redis_url, "REDIS_PREFIX": prefix,
                 "THINGLINKS_VAR_DIR": str(tmp_path / "var"), "PYTHONUNBUFFERED": "1",
                 "WEB_PORT": str(web_port), "EDGE_HOST": "127.0.0.1",
                 "EDGE_METRICS_HOST": "127.0.0.1", "EDGE_METRICS_PORT": str(metrics_port)}
    for name in ("MQTT", "TLS", "WS", "WSS", "TCP", "UDP", "HTTP", "COAP"):
        overrides[f"EDGE_{name}_PORT"] = str(free_port())
    logs = tmp_path / "logs"
    logs.mkdir()
    admin_sql(server, f'CREATE DATABASE "{database}"')
    topology = Topology(variables, overrides, logs)
    platform = Platform({}, mqtt_port=int(overrides["EDGE_MQTT_PORT"]), web_port=web_port,
                        metrics_port=metrics_port)
    try:
        yield topology, platform
    finally:
        topology.stop_all()
        admin_sql(server, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        delete_prefixed(redis_url, prefix)


def web_command(topology: Topology) -> list[str]:
    """The image's CMD, listening on the test's port of 127.0.0.1 instead of 0.0.0.0:8000."""
    argv = compose.command(topology.spec["web"])
    assert argv[:1] == ["daphne"] and argv[argv.index("-p") + 1] == "8000", argv
    argv[argv.index("-p") + 1] = topology.overrides["WEB_PORT"]
    argv[argv.index("-b") + 1] = "127.0.0.1"
    return argv


def test_device_telemetry_rule_command_through_the_compose_processes(topology):
    topo, platform = topology
    spec = topo.spec
    assert compose.environment(spec["web"])["DJANGO_DEBUG"] == "0"
    assert compose.environment(spec["edge"])["EDGE_WORKERS"] == "2"
    assert compose.replicas(spec["ingest"]) == 2 and compose.replicas(spec["beat"]) == 1

    # The worker's healthcheck fails while no worker of this prefix runs (it pings its own).
    no_worker = subprocess.Popen(compose.healthcheck(spec["worker"]), cwd=compose.ROOT,
                                 env=topo.env("worker"), stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
    started = time.monotonic()
    migrated = topo.run("migrate", compose.command(spec["migrate"]), timeout=120)
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    assert "password from DJANGO_SUPERUSER_PASSWORD" in migrated.stdout
    print(f"migrate: {time.monotonic() - started:.1f} s")
    assert no_worker.wait(30) == 1

    edge = topo.start("edge")
    for _ in range(compose.replicas(spec["ingest"])):
        topo.start("ingest")
    topo.start("worker")
    topo.start("beat")
    wait_for_port(platform.web_port, topo.start("web", web_command(topo)), timeout=60)
    wait_for_port(platform.mqtt_port, edge, timeout=60)
    # Cheap signs first (a health check loads Django: polling five of them while the
    # processes start would slow everything on a small machine), then every healthcheck of
    # the compose file passes, run side by side as Docker would.
    for service, line in READY_LINES.items():
        wait_for(lambda s=service, t=line: topo.said(s, t), timeout=60, interval=0.2,
                 message=lambda s=service: topo.tail(s))
    print(f"started: {time.monotonic() - started:.1f} s")
    with ThreadPoolExecutor(len(APP_SERVICES)) as pool:
        for future in [pool.submit(wait_for, lambda s=service: topo.healthy(s), timeout=60,
                                   interval=1.0, message=lambda s=service: topo.last_health[s])
                       for service in APP_SERVICES]:
            future.result()
    print(f"healthy: {time.monotonic() - started:.1f} s")

    import redis

    client = redis.Redis.from_url(topo.overrides["REDIS_URL"])
    prefix = topo.overrides["REDIS_PREFIX"]
    try:
        # Two edge workers are nodes of the cluster; two consumers share the uplink group.
        assert len(client.hgetall(f"{prefix}nodes")) == 2
        consumers = client.xinfo_groups(f"{prefix}uplink")[0]["consumers"]
        assert consumers == 2
    finally:
        client.close()

    # With DJANGO_DEBUG=0 the web still serves the console's and admin's static files, and
    # an unknown URL gets the plain 404, not the debug page.
    base = f"http://127.0.0.1:{platform.web_port}"
    with urllib.request.urlopen(f"{base}/static/admin/css/base.css",  # noqa: S310
                                timeout=10) as response:
        assert response.status == 200
    with pytest.raises(urllib.error.HTTPError) as missing_page:
        urllib.request.urlopen(f"{base}/no-such-page/", timeout=10)  # noqa: S310
    assert missing_page.value.code == 404
    assert b"DEBUG = True" not in missing_page.value.read()

    platform.login("admin", PASSWORD)
    status, body = platform.call("POST", "/api/v1/products/", THERMO)
    assert status == 201, body
    status, device = platform.call("POST", "/api/v1/devices/",
                                   {"product": "thermo", "identifier": "topo-001"})
    assert status == 201, device
    status, rule = platform.call("POST", "/api/v1/rules/", {
        "name": "hot", "enabled": True,
        "trigger": {"type": "property", "product": "thermo", "service": "env",
                    "property": "temperature"},
        "condition": {"op": ">", "value": 30},
        "actions": [{"type": "alarm", "severity": "major", "message": "too hot {{value}}"},
                    {"type": "command", "service": "env", "command": "set_interval",
                     "params": {"seconds": 5}}]})
    assert status == 201, rule

    thing = Client(platform.mqtt_port, "topo-001", device["secret"])
    try:
        assert thing.connected() == 0
        assert thing.subscribe("/v1/devices/topo-001/command") == [1]
        thing.publish("/v1/devices/topo-001/datas", datas("topo-001", {"temperature": 35.5}))

        # Stored, through one of the two ingest consumers.
        stored = wait_for(lambda: platform.call(
            "GET", "/api/v1/devices/topo-001/telemetry/?service=env&property=temperature")[1]
            .get("results"), timeout=20)
        assert [point["value"] for point in stored] == [35.5]
        # The rule fired: an alarm, and its command reached the device.
        alarms = wait_for(lambda: platform.call(
            "GET", "/api/v1/alarms/?device=topo-001&status=active")[1]["results"], timeout=20)
        assert (alarms[0]["rule"], alarms[0]["severity"]) == (rule["id"], "major")
        assert alarms[0]["message"] == "too hot 35.5"
        topic, sent = thing.next_message(timeout=20)
        assert topic == "/v1/devices/topo-001/command"
        assert (sent["dataBody"]["cmd"], sent["dataBody"]["params"]) == (
            "set_interval", {"seconds": 5})

        # A command through the API reaches the device; its reply is recorded.
        status, command = platform.call("POST", "/api/v1/devices/topo-001/commands/", {
            "service": "env", "command": "set_interval", "params": {"seconds": 10}})
        assert status == 201 and command["status"] == "sent", command
        topic, sent = thing.next_message(timeout=20)
        assert sent["head"]["mid"] == command["id"]
        assert sent["dataBody"]["params"] == {"seconds": 10}
        thing.publish("/v1/devices/topo-001/commandResponse", {
            "head": {"mid": command["id"], "cipherFlag": 0,
                     "timeStamp": int(time.time() * 1000)},
            "dataBody": {"msgType": "deviceRsp", "serviceCode": "env", "cmd": "set_interval",
                         "errCode": 0, "params": {"result": "10 s"}},
            "dataSign": ""})
        done = wait_for(lambda: (c := platform.call(
            "GET", f"/api/v1/commands/{command['id']}/")[1])["status"] == "succeeded" and c,
            timeout=20)
        assert done["response"] == {"result": "10 s"}
    finally:
        thing.close()
    # Every process is still up and healthy after the run.
    for name, process, _log in topo.processes:
        assert process.poll() is None, name
    print(f"scenario done: {time.monotonic() - started:.1f} s on {socket.gethostname()}")
