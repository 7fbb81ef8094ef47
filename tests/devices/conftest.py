"""Fixtures of the device-domain tests: a product, devices, the ingest worker on the test's
own Redis prefix, and helpers that act as the edge does (routes, uplink events, downlink)."""

from __future__ import annotations

import csv
import io
import json
import time
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from edge.bus.keys import Keys
from tests.edge import edge_process
from webapp.devices.models import Device
from webapp.telemetry.backends import get_backend
from webapp.telemetry.ingest import IngestWorker

NODE = "node-a"


def csv_file(rows: list[dict[str, Any]], name: str = "devices.csv") -> SimpleUploadedFile:
    """An uploaded CSV file of `rows` (the header from the first row's keys)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return SimpleUploadedFile(name, out.getvalue().encode(), content_type="text/csv")

GATEWAY = {
    "identifier": "gw",
    "name": "Gateway",
    "product_type": "gateway",
    "services": [{"code": "sys", "properties": [{"code": "uptime", "datatype": "int"}],
                  "commands": [{"code": "reboot"}]}],
}


def now_ms() -> int:
    return int(time.time() * 1000)


class Edge:
    """What the edge does on the bus, done by hand: routes, uplink entries, downlink reads."""

    def __init__(self, redis_client: Any, prefix: str, worker: IngestWorker) -> None:
        self.redis = redis_client
        self.keys = Keys(prefix)
        self.worker = worker

    def uplink(self, *events: dict[str, Any]) -> None:
        """Append events as one stream entry and let the ingest worker process it."""
        self.redis.xadd(self.keys.uplink, {"b": json.dumps(list(events))})
        self.worker.process(self.worker.read())

    def connect(self, identifier: str, node: str = NODE) -> None:
        self.redis.hset(self.keys.route, identifier, node)
        self.uplink({"t": "status", "dev": identifier, "s": "online", "ts": now_ms(),
                     "node": node, "addr": "127.0.0.1:5000"})

    def disconnect(self, identifier: str) -> None:
        self.redis.hdel(self.keys.route, identifier)
        self.uplink({"t": "status", "dev": identifier, "s": "offline", "ts": now_ms(),
                     "node": NODE, "addr": "", "reason": "disconnect"})

    def sent(self, node: str = NODE) -> list[dict[str, Any]]:
        """Every downlink entry of the node so far, decoded, oldest first."""
        out = []
        for _id, fields in self.redis.xrange(self.keys.downlink(node)):
            entry = {k.decode(): v for k, v in fields.items()}
            entry["topic"] = entry["topic"].decode()
            entry["dev"] = entry["dev"].decode()
            entry["message"] = json.loads(entry.pop("payload"))
            out.append(entry)
        return out

    def take(self, node: str = NODE) -> list[dict[str, Any]]:
        """The downlink entries sent since the last take (and forget them, as the edge does)."""
        entries = self.sent(node)
        self.redis.delete(self.keys.downlink(node))
        return entries


@pytest.fixture
def worker(redis_client, redis_prefix):
    w = IngestWorker(redis_client, Keys(redis_prefix), get_backend(), "test", block_ms=50)
    w.ensure_group()
    return w


@pytest.fixture
def edge(redis_client, redis_prefix, worker):
    return Edge(redis_client, redis_prefix, worker)


@pytest.fixture
def thermo(api, redis_prefix, thermo_payload):
    response = api.post("/api/v1/products/", thermo_payload, format="json")
    assert response.status_code == 201, response.json()
    return response.json()


@pytest.fixture
def device(api, thermo):
    response = api.post("/api/v1/devices/", {"product": "thermo", "identifier": "dev-1"},
                        format="json")
    assert response.status_code == 201, response.json()
    return Device.objects.get(identifier="dev-1")


@pytest.fixture
def gateway(api, redis_prefix):
    assert api.post("/api/v1/products/", GATEWAY, format="json").status_code == 201
    response = api.post("/api/v1/devices/", {"product": "gw", "identifier": "gw-1"},
                        format="json")
    assert response.status_code == 201, response.json()
    return Device.objects.get(identifier="gw-1")


@pytest.fixture
def live(redis_url, redis_prefix, monkeypatch):
    """`python -m edge` on the test's Redis prefix (tests/edge/edge_process.py).

    Its port picker may hand out the same free port twice in one launch (the kernel reuses a
    port as soon as the probing socket closes); the ports of one edge are kept distinct here.
    """
    picked: set[int] = set()
    original = edge_process.free_port

    def distinct() -> int:
        while True:
            port = original()
            if port not in picked:
                picked.add(port)
                return port

    monkeypatch.setattr(edge_process, "free_port", distinct)
    with edge_process.running_edge(redis_url, redis_prefix, {}) as edge:
        yield edge
