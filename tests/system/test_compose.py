"""docker/compose.yml as Debian's docker-compose reads it (`docker-compose config`; there is
no Docker engine here, images are not built): every service, the README's ports, the volumes,
the healthchecks, the scaling, and .env.example naming every variable it needs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
import yaml

from tests.conftest import ROOT, missing
from tests.support import compose

# Dummy values for the variables .env.example leaves empty on purpose (secrets, address).
REQUIRED = {"DJANGO_SECRET_KEY": "ci-dummy-key-" + "x" * 50, "POSTGRES_PASSWORD": "ci-pg",
            "REDIS_PASSWORD": "ci-redis", "PUBLIC_BASE_URL": "https://iot.example.com"}
APP = {"migrate", "web", "edge", "ingest", "worker", "beat"}
# docker-compose is a process: not for the fast suite (tests/support/slow.py).
pytestmark = pytest.mark.e2e


def docker_compose(*args: str, extra: dict[str, str] | None = None,
                   ) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    if binary is None:
        missing("docker-compose is not installed (apt-get install docker-compose)")
    env = {k: v for k, v in os.environ.items() if k not in REQUIRED}
    env.update(extra or {})
    return subprocess.run([binary, "--env-file", ".env.example", "-f", "docker/compose.yml",
                           *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60, check=False)


@pytest.fixture(scope="module")
def config() -> dict:
    result = docker_compose("config", extra=REQUIRED)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def readme_ports() -> list[tuple[int, str]]:
    """The published ports of the README's table (the edge metrics port stays inside)."""
    rows = re.findall(r"^\| (web|edge)[^|]*\| ([^|]*) \| (\d+) \(`(\w+)`", (ROOT / "README.md")
                      .read_text(), re.MULTILINE)
    ports = [(int(port), "udp" if "UDP" in what else "tcp") for _p, what, port, setting in rows
             if setting != "EDGE_METRICS_PORT"]
    assert len(ports) >= 9, rows
    return ports


def published(service: dict) -> set[tuple[int, str]]:
    return {(int(p["published"]), p.get("protocol", "tcp")) for p in service.get("ports", [])}


def test_every_service_port_volume_and_healthcheck(config):
    services = config["services"]
    assert set(services) == {"postgres", "redis", "tdengine", "prometheus", "grafana"} | APP
    assert services["tdengine"]["profiles"] == ["tdengine"]
    optional = {"tdengine", "prometheus", "grafana"}
    assert all("profiles" not in services[name] for name in services.keys() - optional)
    every_port = published(services["web"]) | published(services["edge"])
    assert set(readme_ports()) == every_port
    assert (8000, "tcp") in published(services["web"])
    for name in ("postgres", "redis", "migrate", "ingest", "worker", "beat"):
        assert not services[name].get("ports"), name
    for name in services.keys() - {"migrate"}:
        assert services[name]["healthcheck"]["test"], name
    assert services["postgres"]["healthcheck"]["test"][1] == "pg_isready"
    assert "redis-cli ping" in services["redis"]["healthcheck"]["test"][1]
    for name in ("web", "edge", "ingest", "worker", "beat"):
        assert services[name]["healthcheck"]["test"][-2:] == ["docker/healthcheck.py", name]

    assert "pg:/var/lib/postgresql/data" in services["postgres"]["volumes"][0]
    assert services["redis"]["volumes"][0].startswith("redis:/data")
    assert "--appendonly" in services["redis"]["command"]
    for name in ("web", "worker", "ingest", "beat", "migrate"):
        assert any(v.startswith("media:/app/var/media") for v in services[name]["volumes"])
    assert {"pg", "redis", "media", "tdengine"} <= set(config["volumes"])


def test_the_production_settings(config):
    services = config["services"]
    for name in APP:
        env = services[name]["environment"]
        assert env["DJANGO_DEBUG"] == "0" and env["DJANGO_SECRET_KEY"] == REQUIRED[
            "DJANGO_SECRET_KEY"]
        assert env["PUBLIC_BASE_URL"] == "https://iot.example.com"
        assert env["DATABASE_URL"] == "postgres://thinglinks:ci-pg@postgres:5432/thinglinks"
        assert env["REDIS_URL"] == "redis://:ci-redis@redis:6379/0"
        assert "env_file" not in services[name]
    assert services["edge"]["environment"]["EDGE_WORKERS"] == "2"
    assert services["ingest"]["deploy"]["replicas"] == 2
    assert services["beat"]["deploy"]["replicas"] == 1
    assert "--enable-remote-control" in services["beat"]["command"]
    assert services["migrate"]["restart"] == "no"
    assert services["web"]["depends_on"]["migrate"]["condition"] == \
        "service_completed_successfully"


def test_tdengine_is_a_profile(config):
    """Started only with `--profile tdengine`, its data in a volume, not published."""
    tdengine = config["services"]["tdengine"]
    assert tdengine["image"].startswith("tdengine/tdengine:")
    assert tdengine["volumes"][0].startswith("tdengine:/var/lib/taos")
    assert tdengine["healthcheck"]["test"] and not tdengine.get("ports")
    result = docker_compose("--profile", "tdengine", "config", "-q", extra=REQUIRED)
    assert result.returncode == 0, result.stderr


def test_prometheus_and_grafana_are_a_profile(config):
    """`--profile monitoring`: Prometheus with the shipped scrape config and alerts (the
    token written where prometheus.yml reads it), Grafana with the shipped provisioning and
    dashboards; both only on the host's loopback, and neither starts without its secret."""
    services = config["services"]
    prometheus, grafana = services["prometheus"], services["grafana"]
    assert prometheus["profiles"] == grafana["profiles"] == ["monitoring"]
    scrape = yaml.safe_load((ROOT / "docker/prometheus/prometheus.yml").read_text())
    token_file = scrape["scrape_configs"][0]["authorization"]["credentials_file"]
    script = " ".join(prometheus["entrypoint"])
    assert f"> {token_file}" in script and 'exit 1' in script
    mounts = {v.split(":")[1] for v in prometheus["volumes"]}
    assert {"/etc/prometheus/prometheus.yml", "/etc/prometheus/alerts.yml"} <= mounts
    assert scrape["rule_files"] == ["/etc/prometheus/alerts.yml"]
    mounts = {v.split(":")[1] for v in grafana["volumes"]}
    assert {"/etc/grafana/provisioning", "/var/lib/grafana/dashboards"} <= mounts
    assert "GF_SECURITY_ADMIN_PASSWORD" in " ".join(grafana["entrypoint"])
    for service in (prometheus, grafana):
        # docker-compose 1.29 writes a port bound to an address in the short form.
        assert all((p.get("host_ip") if isinstance(p, dict) else p.split(":")[0])
                   == "127.0.0.1" for p in service["ports"])
        assert service["healthcheck"]["test"]
    result = docker_compose("--profile", "monitoring", "config", "-q", extra=REQUIRED)
    assert result.returncode == 0, result.stderr


def test_env_example_names_every_variable_and_no_secret():
    """`cp .env.example .env` gives every variable the compose file reads; the secrets are
    empty, so compose refuses to start until they are filled in (and names the first)."""
    text = compose.ENV_EXAMPLE.read_text()
    example = dict(re.findall(r"^([A-Z_][A-Z0-9_]*)=(.*)$", text, re.MULTILINE))
    assert compose.referenced_variables() <= set(example)
    for name in REQUIRED:
        assert example[name] == "", name
    result = docker_compose("config", "-q")
    assert result.returncode != 0
    assert re.search(r"set (DJANGO_SECRET_KEY|POSTGRES_PASSWORD|REDIS_PASSWORD|PUBLIC_BASE_URL)"
                     r" in \.env", result.stderr), result.stderr


def test_our_interpolation_reads_the_file_as_compose_does(config):
    """The end-to-end test (test_production_topology.py) reads the file with
    tests/support/compose.py: it must agree with docker-compose."""
    example = dict(re.findall(r"^([A-Z_][A-Z0-9_]*)=\"?(.*?)\"?$",
                              compose.ENV_EXAMPLE.read_text(), re.MULTILINE))
    ours = compose.load({**example, **REQUIRED})["services"]
    for name in APP:
        assert compose.environment(ours[name]) == config["services"][name]["environment"], name
        if "command" in config["services"][name]:
            assert compose.command(ours[name]) == config["services"][name]["command"], name
    assert compose.command(ours["web"])[0] == "daphne"
    with pytest.raises(compose.MissingVariable, match="DJANGO_SECRET_KEY"):
        compose.load({})
