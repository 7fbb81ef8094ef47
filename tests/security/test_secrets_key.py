"""C2 and issue item 2: no installation runs on a public secret key.

There is no built-in key. `make run` (manage.py runplatform) creates a random one in
var/secret_key (0600) on its first start and gives it to every process it starts; every other
process (web, edge, ingest, Celery, manage.py) refuses to start without a key, and the former
public development key is refused outright."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import redis
from django.db import connection

from edge.crypto import create_key_file, encrypt_secret, load_secret_key
from tests.edge.edge_process import ROOT, Client, Edge
from tests.support.platform import database_url, free_port
from tests.support.waiting import wait_for_port

# What earlier versions used whenever DJANGO_SECRET_KEY was unset (public: it was in the code).
FORMER_DEV_KEY = "thinglinks-dev-insecure-secret-key-change-me"
BIN = Path(sys.executable).parent
MODEL = {"services": {"env": {"properties": {"temperature": {"datatype": "decimal"}}}}}


def keyless_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The suite's environment without a key: no DJANGO_SECRET_KEY, a key file that does not
    exist, and no PYTEST_VERSION (under which the settings make a key for the test suite)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("DJANGO_SECRET_KEY", "PYTEST_VERSION")}
    env["DJANGO_SECRET_KEY_FILE"] = str(tmp_path / "var" / "secret_key")
    env.update(extra)
    return env


PROCESSES = {
    "manage.py": [sys.executable, "manage.py", "check"],
    "web": [str(BIN / "daphne"), "-p", "0", "config.asgi:application"],
    "edge": [sys.executable, "-m", "edge"],
    "ingest": [sys.executable, "manage.py", "ingest", "--no-republish"],
    "celery worker": [str(BIN / "celery"), "-A", "config", "worker"],
    "celery beat": [str(BIN / "celery"), "-A", "config", "beat"],
}


@pytest.mark.e2e
@pytest.mark.parametrize("name", sorted(PROCESSES))
def test_processes_started_on_their_own_refuse_to_start_without_a_key(name, tmp_path,
                                                                       redis_url):
    out = subprocess.run(PROCESSES[name], cwd=ROOT, env=keyless_env(tmp_path,
                         REDIS_URL=redis_url), capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "DJANGO_SECRET_KEY is not set" in out.stdout + out.stderr


@pytest.mark.e2e
@pytest.mark.parametrize("name", ["manage.py", "edge"])
def test_the_former_public_development_key_is_refused(name, tmp_path, redis_url):
    env = keyless_env(tmp_path, REDIS_URL=redis_url, DJANGO_SECRET_KEY=FORMER_DEV_KEY)
    out = subprocess.run(PROCESSES[name], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode != 0
    assert "public development key" in out.stdout + out.stderr


def test_no_key_in_code():
    """Nothing falls back to a key of its own: without the variable and the file there is
    no key at all."""
    with pytest.raises(RuntimeError, match="DJANGO_SECRET_KEY is not set"):
        load_secret_key({"DJANGO_SECRET_KEY_FILE": "/nonexistent/secret_key"})
    with pytest.raises(RuntimeError, match="public development key"):
        load_secret_key({"DJANGO_SECRET_KEY": FORMER_DEV_KEY})


def test_key_file_is_private_and_never_replaced(tmp_path):
    path = tmp_path / "var" / "secret_key"
    assert create_key_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = load_secret_key({"DJANGO_SECRET_KEY_FILE": str(path)})
    assert len(key) >= 50
    assert not create_key_file(path)  # a second start (or a concurrent one) keeps the first
    assert load_secret_key({"DJANGO_SECRET_KEY_FILE": str(path)}) == key
    assert [p.name for p in path.parent.iterdir()] == ["secret_key"]  # no temporary left
    other = tmp_path / "other" / "secret_key"
    create_key_file(other)
    assert other.read_text() != path.read_text()  # random, not shared between installations


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_first_make_run_creates_the_key_and_gives_it_to_the_processes_it_starts(
        tmp_path, redis_url, redis_prefix):
    """`manage.py runplatform` with no key: var/secret_key appears (0600, never printed) and
    the edge it starts decrypts device secrets with it; a device secret under any other key
    (the suite's own here) is refused."""
    key_path = tmp_path / "var" / "secret_key"
    mqtt_port, metrics_port = free_port(), free_port()
    node = f"node-{uuid.uuid4().hex[:6]}"
    env = keyless_env(tmp_path, DATABASE_URL=database_url(connection.settings_dict),
                      REDIS_URL=redis_url, REDIS_PREFIX=redis_prefix, PYTHONUNBUFFERED="1",
                      EDGE_MQTT_PORT=str(mqtt_port), EDGE_METRICS_PORT=str(metrics_port),
                      EDGE_WS_PORT="0", EDGE_COAP_PORT="0", EDGE_HTTP_PORT="0",
                      EDGE_TCP_PORT="0", EDGE_UDP_PORT="0",
                      EDGE_HOST="127.0.0.1",
                      EDGE_NODE_ID=node)
    process = subprocess.Popen(
        [sys.executable, "manage.py", "runplatform", "--no-bootstrap", "--only", "edge"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    r = redis.Redis.from_url(redis_url)
    clients: list[Client] = []
    try:
        wait_for_port(mqtt_port, process, timeout=60)
        assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
        key = key_path.read_text().strip()
        assert len(key) >= 50
        suite_key = os.environ["DJANGO_SECRET_KEY"]
        r.hset(f"{redis_prefix}prod:thermo", mapping={"model": json.dumps(MODEL),
                                                      "type": "common"})
        for identifier, secret_key in (("made-with-file-key", key),
                                       ("made-with-other-key", suite_key)):
            r.hset(f"{redis_prefix}dev:{identifier}", mapping={
                "product": "thermo", "secret": encrypt_secret("s3cret", secret_key),
                "status": "activated", "node_type": "direct", "gateway": ""})
        edge = Edge(redis_prefix, node, mqtt_port, metrics_port, process, tmp_path / "log", r)
        good = Client(edge, "c-good")
        bad = Client(edge, "c-bad")
        clients += [good, bad]
        assert good.connect("made-with-file-key", "s3cret") == 0
        assert bad.connect("made-with-other-key", "s3cret") != 0
    finally:
        for client in clients:
            client.close()
        process.send_signal(signal.SIGTERM)
        try:
            output = process.communicate(timeout=60)[0].decode(errors="replace")
        except subprocess.TimeoutExpired:
            process.kill()
            output = process.communicate()[0].decode(errors="replace")
        r.close()
    assert "a new random secret key was written to" in output
    assert key not in output  # the key itself is never logged
    # A second start keeps the key it made (else every stored secret would be lost).
    again = subprocess.run([sys.executable, "manage.py", "runplatform", "--help"], cwd=ROOT,
                           env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert key_path.read_text().strip() == key
    assert "a new random secret key" not in again.stdout
