"""The reconnect storm bench (bench/edge_storm.py): its packets, the supervisor's /metrics
with 56 workers, and the whole storm, small, as one e2e test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.edge_storm import persistent_connect, subscribe
from edge.mqtt.codec import Decoder
from edge.mqtt.packets import Connect, Subscribe

ROOT = Path(__file__).resolve().parents[2]


def test_devices_connect_with_a_persistent_session_and_subscribe_to_their_namespace() -> None:
    (packet,) = Decoder().feed(persistent_connect("dev-7", "dev-7", "s3cret", 600))
    assert isinstance(packet, Connect)
    assert (packet.client_id, packet.username, packet.password) == ("dev-7", "dev-7", b"s3cret")
    assert packet.clean_start is False and packet.keep_alive == 600
    decoder = Decoder()
    list(decoder.feed(persistent_connect("dev-7", "dev-7", "s3cret", 600)))
    (sub,) = decoder.feed(subscribe("dev-7"))
    assert isinstance(sub, Subscribe)
    assert [(s.topic_filter, s.qos) for s in sub.subscriptions] == [("/v1/devices/dev-7/#", 1)]


@pytest.mark.e2e
def test_supervisor_scrape_with_56_workers_is_one_parallel_fetch() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.edge_storm", "scrape", "56", "--rounds", "3"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["edge_connections_summed"] == f"edge_connections {56 * 17_857}"
    assert result["cached_scrape_ms_median"] < 5


@pytest.mark.e2e
@pytest.mark.timeout(600)
def test_edge_storm_small_every_device_back_with_its_session() -> None:
    """`python -m bench --small edge-storm`: 2,000 devices, both workers killed."""
    env = {**os.environ, "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")}
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--small", "edge-storm"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=560,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert '"session_present": 2000' in done.stdout
    assert '"not_back": 0' in done.stdout
    assert '"online": 2000' in done.stdout
    assert '"problems": []' in done.stdout
