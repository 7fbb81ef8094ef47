"""End to end: CoAP devices against ``python -m edge`` and a real Redis, with aiocoap as the
client (and libcoap's coap-client when it is installed): data lands in the uplink stream,
refusals carry their codes and reasons, a 3 KB body goes block-wise, and an observed command
arrives when the platform writes it to the node's downlink stream."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from aiocoap import GET, POST, Context, Message

from edge.auth import sign_password
from edge.crypto import encrypt_secret
from tests.conftest import missing

from .edge_process import Edge, running_edge
from .redis_server import free_port

pytestmark = pytest.mark.e2e

SECRET_KEY = "e2e-coap-secret-key"
MODEL = {"services": {"env": {"properties": {"humidity": {"datatype": "int", "max": 100}}}}}


def datas(device: str, humidity: int) -> bytes:
    service = {"serviceCode": "env", "data": {"humidity": humidity}}
    return json.dumps({"devices": [{"deviceId": device, "services": [service]}]}).encode()


@pytest.fixture(scope="module")
def edge(edge_redis_url: str) -> Iterator[Edge]:
    prefix = f"coap{uuid.uuid4().hex[:8]}:"
    r = redis.Redis.from_url(edge_redis_url)
    for name, protocol in (("coapthermo", "coap"), ("mqttthermo", "mqtt")):
        r.hset(
            f"{prefix}prod:{name}",
            mapping={"model": json.dumps(MODEL), "type": "common", "protocol": protocol},
        )
    for name, product in (("c1", "coapthermo"), ("c2", "coapthermo"), ("m1", "mqttthermo")):
        fields = {
            "product": product,
            "secret": encrypt_secret(f"{name}-secret", SECRET_KEY),
            "status": "activated",
            "node_type": "direct",
            "gateway": "",
        }
        r.hset(f"{prefix}dev:{name}", mapping=fields)
    r.close()
    port = free_port()
    env = {"DJANGO_SECRET_KEY": SECRET_KEY, "EDGE_COAP_PORT": str(port)}
    with running_edge(edge_redis_url, prefix, env) as running:
        running.coap_port = port  # type: ignore[attr-defined]
        yield running


def uri(edge: Edge, path: str, query: str) -> str:
    return f"coap://127.0.0.1:{edge.coap_port}{path}?{query}"  # type: ignore[attr-defined]


def exchange(edge: Edge, code: Any, path: str, query: str, payload: bytes = b"") -> Any:
    async def run() -> Any:
        context = await Context.create_client_context()
        try:
            message = Message(code=code, uri=uri(edge, path, query), payload=payload)
            return await asyncio.wait_for(context.request(message).response, 20)
        finally:
            await context.shutdown()

    return asyncio.run(run())


def data_of(edge: Edge, device: str) -> list[dict[str, Any]]:
    return [e for e in edge.events() if e["t"] == "data" and e["dev"] == device]


def test_posted_data_lands_in_the_uplink_stream(edge: Edge) -> None:
    response = exchange(edge, POST, "/v1/devices/c1/datas", "p=c1-secret", datas("c1", 41))
    assert str(response.code) == "2.04 Changed"
    (event,) = edge.wait_for_events(lambda e: e["t"] == "data" and e["v"] == {"humidity": 41})
    assert event["dev"] == "c1" and event["prod"] == "coapthermo"
    signed = sign_password("c1", "c1-secret", int(time.time() * 1000))
    response = exchange(edge, POST, "/v1/devices/c1/datas", f"p={signed}", datas("c1", 42))
    assert str(response.code) == "2.04 Changed"
    edge.wait_for_events(lambda e: e["t"] == "data" and e["v"] == {"humidity": 42})
    statuses = [e for e in edge.events() if e["t"] == "status" and e["dev"] == "c1"]
    assert statuses[0]["s"] == "online"


def test_refusals_carry_their_codes_and_reasons(edge: Edge) -> None:
    path = "/v1/devices/c1/datas"
    wrong = exchange(edge, POST, path, "p=nope", datas("c1", 1))
    assert str(wrong.code) == "4.01 Unauthorized" and b"wrong secret" in wrong.payload
    mqtt_device = exchange(edge, POST, "/v1/devices/m1/datas", "p=m1-secret", datas("m1", 1))
    assert str(mqtt_device.code) == "4.01 Unauthorized"
    other = exchange(edge, POST, path, "u=c2&p=c2-secret", datas("c1", 1))
    assert str(other.code) == "4.03 Forbidden"
    bad = exchange(edge, POST, path, "p=c1-secret", b"{not json")
    assert str(bad.code) == "4.00 Bad Request"
    body = json.loads(bad.payload)
    assert body["errors"][0]["code"] == "malformed_json" and body["statusDesc"]
    out_of_range = exchange(edge, POST, path, "p=c1-secret", datas("c1", 1000))
    assert str(out_of_range.code) == "4.00 Bad Request"
    assert "humidity" in json.loads(out_of_range.payload)["statusDesc"]
    missing = exchange(edge, GET, "/v1/devices/c1/nothing", "p=c1-secret")
    assert str(missing.code) == "4.04 Not Found"


def test_a_3_kb_body_goes_block_wise(edge: Edge) -> None:
    # aiocoap sends a body over 1024 bytes as Block1 blocks of 1024 (3 here).
    body = datas("c1", 77) + b" " * 3000  # trailing white space is still one JSON value
    assert len(body) > 3000
    response = exchange(edge, POST, "/v1/devices/c1/datas", "p=c1-secret", body)
    assert str(response.code) == "2.04 Changed"
    edge.wait_for_events(lambda e: e["t"] == "data" and e["v"] == {"humidity": 77})


def test_an_observed_command_arrives_as_a_notification(edge: Edge) -> None:
    async def run() -> tuple[Any, Any]:
        context = await Context.create_client_context()
        try:
            message = Message(
                code=GET, uri=uri(edge, "/v1/devices/c2/command", "p=c2-secret"), observe=0
            )
            request = context.request(message)
            first = await asyncio.wait_for(request.response, 20)
            # What the platform does for a device online on this node: an entry in the
            # node's downlink stream.
            command = {"serviceCode": "env", "cmd": "reset", "paras": {}, "mid": 7}
            edge.redis.xadd(
                edge.key(f"down:{edge.node}"),
                {"topic": "/v1/devices/c2/command", "payload": json.dumps(command)},
            )
            notifications = request.observation.__aiter__()
            note = await asyncio.wait_for(notifications.__anext__(), 20)
            request.observation.cancel()
            return first, note
        finally:
            await context.shutdown()

    first, note = asyncio.run(run())
    assert str(first.code) == "2.05 Content" and first.opt.observe is not None
    assert str(note.code) == "2.05 Content"
    assert json.loads(note.payload)["cmd"] == "reset"
    (logged,) = edge.wait_for_events(lambda e: e["t"] == "log" and e["dir"] == "down")
    assert logged["dev"] == "c2" and logged["ok"] is True


def test_libcoap_coap_client_posts_data(edge: Edge) -> None:
    if shutil.which("coap-client-notls") is None:
        missing("libcoap's coap-client (Debian package libcoap3-bin; .ci/run installs it)")
    target = uri(edge, "/v1/devices/c1/datas", "p=c1-secret")
    done = subprocess.run(
        ["coap-client-notls", "-m", "post", "-e", datas("c1", 55).decode(), "-B", "10", target],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    edge.wait_for_events(lambda e: e["t"] == "data" and e["v"] == {"humidity": 55})
