"""CoAP, raw TCP and UDP devices through the running platform (edge, ingest and web
processes), with real clients: aiocoap, and plain sockets for the JSON lines and datagrams and
for a binary sensor of the ``th-sensor-tcp`` template. Each device's product and the device are
created over the REST API; the device reports, its data is read back as stored telemetry, it
is seen online, it receives a command sent over the REST API, answers it, and the command
succeeds. A wrong credential is refused on each transport with that transport's answer.

One platform serves every transport: starting it costs seconds."""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import time
from typing import Any

import pytest
from aiocoap import GET, POST, Context, Message
from django.db import connection

from edge.auth import sign_password
from edge.frames.codec import Codec
from tests.support.platform import Platform, datas, running_platform
from tests.support.waiting import wait_for, wait_for_port

from .raw_client import Lines
from .test_frames_codec import EXAMPLES, th_frame, th_login

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

TH = Codec.loads((EXAMPLES / "th-sensor-tcp.json").read_text())
SET_INTERVAL = {"service": "env", "command": "set_interval", "params": {"seconds": 10},
                "timeout": 15}  # fmt: skip


@pytest.fixture
def platform(transactional_db, django_user_model, redis_url):
    django_user_model.objects.create_superuser("e2e", "", "pw-e2e-123")
    with running_platform(connection.settings_dict, redis_url, "e2e", "pw-e2e-123") as p:
        wait_for_port(int(p.env["EDGE_TCP_PORT"]), p.processes["edge"])
        yield p


def create_device(platform: Platform, product: dict[str, Any], identifier: str) -> str:
    """The product (unless it exists) and a device of it; the device's secret."""
    status, body = platform.call("GET", f"/api/v1/products/{product['identifier']}/")
    if status == 404:
        status, body = platform.call("POST", "/api/v1/products/", product)
        assert status == 201, body
    status, body = platform.call(
        "POST", "/api/v1/devices/", {"product": product["identifier"], "identifier": identifier}
    )
    assert status == 201, body
    return body["secret"]  # type: ignore[no-any-return]


def stored(platform: Platform, device: str, service: str, prop: str) -> list[Any]:
    def values() -> list[Any] | None:
        status, body = platform.call(
            "GET", f"/api/v1/devices/{device}/telemetry/?service={service}&property={prop}"
        )
        return [r["value"] for r in body["results"]] if status == 200 else None

    return wait_for(values, timeout=20)


def wait_online(platform: Platform, device: str) -> None:
    wait_for(
        lambda: platform.call("GET", f"/api/v1/devices/{device}/")[1]["connect_status"]
        == "online",
        timeout=20,
    )


def send_command(platform: Platform, device: str, command: dict[str, Any]) -> int:
    status, sent = platform.call("POST", f"/api/v1/devices/{device}/commands/", command)
    assert status in (200, 201, 202), sent
    return sent["id"]  # type: ignore[no-any-return]


def finished(platform: Platform, command_id: int) -> str:
    def status() -> str | None:
        code, body = platform.call("GET", f"/api/v1/commands/{command_id}/")
        return body["status"] if code == 200 and body["status"] not in ("pending", "sent") \
            else None

    return wait_for(status, timeout=20)


def reply_to(received: dict[str, Any]) -> dict[str, Any]:
    """The commandResponse to a set_interval command received in its envelope."""
    body = received["dataBody"]
    assert body["cmd"] == "set_interval" and body["params"] == {"seconds": 10}, received
    return {"head": {"mid": received["head"]["mid"]},
            "dataBody": {"msgType": "deviceRsp", "serviceCode": "env", "cmd": "set_interval",
                         "errCode": 0, "params": {"result": "ok"}}}  # fmt: skip


def test_coap_tcp_udp_and_binary_devices_report_and_get_commands(platform, thermo_payload):
    check_coap(platform, {**thermo_payload, "identifier": "cthermo", "protocol": "coap"})
    check_json_tcp(platform, {**thermo_payload, "identifier": "tthermo", "protocol": "tcp"})
    check_json_udp(platform, {**thermo_payload, "identifier": "uthermo", "protocol": "udp"})
    check_binary_tcp(platform)


# CoAP ------------------------------------------------------------------------------------


def check_coap(platform: Platform, product: dict[str, Any]) -> None:
    secret = create_device(platform, product, "c-1")
    base = f"coap://127.0.0.1:{platform.env['EDGE_COAP_PORT']}/v1/devices/c-1"

    async def run() -> tuple[Any, Any, Any]:
        context = await Context.create_client_context()
        try:

            async def request(message: Message) -> Any:
                return await asyncio.wait_for(context.request(message).response, 20)

            body = json.dumps(datas("c-1", {"temperature": 21.5})).encode()
            wrong = await request(Message(code=POST, uri=f"{base}/datas?p=wrong", payload=body))
            posted = await request(
                Message(code=POST, uri=f"{base}/datas?p={secret}", payload=body)
            )
            observing = context.request(
                Message(code=GET, uri=f"{base}/command?p={secret}", observe=0)
            )
            first = await asyncio.wait_for(observing.response, 20)
            assert str(first.code) == "2.05 Content" and first.opt.observe is not None
            command_id = await asyncio.to_thread(send_command, platform, "c-1", SET_INTERVAL)
            note = await asyncio.wait_for(observing.observation.__aiter__().__anext__(), 20)
            observing.observation.cancel()
            received = json.loads(note.payload)
            assert received["head"]["mid"] == command_id
            answered = await request(Message(
                code=POST, uri=f"{base}/commandResponse?p={secret}",
                payload=json.dumps(reply_to(received)).encode(),
            ))  # fmt: skip
            return wrong, posted, (answered, command_id)
        finally:
            await context.shutdown()

    wrong, posted, (answered, command_id) = asyncio.run(run())
    assert str(wrong.code) == "4.01 Unauthorized" and b"wrong secret" in wrong.payload
    assert str(posted.code) == "2.04 Changed", posted.payload
    assert str(answered.code) == "2.04 Changed", answered.payload
    assert stored(platform, "c-1", "env", "temperature") == [21.5]
    wait_online(platform, "c-1")
    assert finished(platform, command_id) == "succeeded"


# Raw TCP, JSON lines ---------------------------------------------------------------------


def check_json_tcp(platform: Platform, product: dict[str, Any]) -> None:
    secret = create_device(platform, product, "t-1")
    port = int(platform.env["EDGE_TCP_PORT"])
    wrong = Lines(port)
    try:
        wrong.send({"deviceId": "t-1", "password": "wrong"})
        assert wrong.read() == {"statusCode": 1, "statusDesc": "wrong secret for device t-1"}
        assert wrong.reader.readline() == b""  # closed
    finally:
        wrong.close()

    device = Lines(port)
    try:
        device.send({"deviceId": "t-1", "password": secret})
        assert device.read() == {"statusCode": 0, "statusDesc": "successful"}
        device.send({"topic": "datas", "payload": datas("t-1", {"temperature": 22.5})})
        answer = device.read()
        assert answer["topic"] == "datasResponse" and answer["payload"]["statusCode"] == 0
        assert stored(platform, "t-1", "env", "temperature") == [22.5]
        wait_online(platform, "t-1")

        command_id = send_command(platform, "t-1", SET_INTERVAL)
        line = device.read()
        assert line["topic"] == "command" and line["payload"]["head"]["mid"] == command_id
        device.send({"topic": "commandResponse", "payload": reply_to(line["payload"])})
        assert finished(platform, command_id) == "succeeded"
    finally:
        device.close()


# UDP, JSON datagrams ---------------------------------------------------------------------


def check_json_udp(platform: Platform, product: dict[str, Any]) -> None:
    secret = create_device(platform, product, "u-1")
    address = ("127.0.0.1", int(platform.env["EDGE_UDP_PORT"]))
    stamps = itertools.count(int(time.time() * 1000))  # each signed password is used once

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:

        def exchange(topic: str, payload: dict[str, Any], password: str = "") -> list[dict]:
            """Send one datagram; its answer and any command that came with it."""
            password = password or sign_password("u-1", secret, next(stamps))
            message = {"deviceId": "u-1", "password": password, "topic": topic,
                       "payload": payload}  # fmt: skip
            sock.sendto(json.dumps(message).encode(), address)
            sock.settimeout(10)
            answers = [json.loads(sock.recvfrom(4096)[0])]
            sock.settimeout(0.5)
            try:
                while True:
                    answers.append(json.loads(sock.recvfrom(4096)[0]))
            except TimeoutError:
                return answers

        report = datas("u-1", {"temperature": 23.5})
        assert exchange("datas", report, password="wrong") == [
            {"statusCode": 1, "statusDesc": "wrong secret for device u-1"}
        ]
        [answer] = exchange("datas", report)
        assert answer["topic"] == "datasResponse" and answer["payload"]["statusCode"] == 0
        assert stored(platform, "u-1", "env", "temperature") == [23.5]
        wait_online(platform, "u-1")

        command_id = send_command(platform, "u-1", SET_INTERVAL)

        def command_came() -> dict[str, Any] | None:  # queue mode: with the next datagram
            answer, *rest = exchange("datas", datas("u-1", {"humidity": 40}))
            assert answer["topic"] == "datasResponse", answer
            return rest[0] if rest else None

        line = wait_for(command_came, timeout=20, interval=0.2)
        assert line["topic"] == "command" and line["payload"]["head"]["mid"] == command_id
        [answer] = exchange("commandResponse", reply_to(line["payload"]))
        assert answer["topic"] == "datasResponse", answer
        assert finished(platform, command_id) == "succeeded"


# A binary sensor over raw TCP (the th-sensor-tcp template's codec) ------------------------


def check_binary_tcp(platform: Platform) -> None:
    product = {"identifier": "th-sensor", "name": "TH sensor", "template": "th-sensor-tcp"}
    secret = create_device(platform, product, "th-001")
    port = int(platform.env["EDGE_TCP_PORT"])
    accepted = TH.encode("login_answer", {"result": "accepted"})
    refused = TH.encode("login_answer", {"result": "refused"})

    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(th_login("th-001", "wrong"))
        assert receive(sock, len(refused)) == refused
        assert sock.recv(1) == b""  # closed

    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        # 26.4 °C (i16, 0.1 °C) and 55.5 % (u16, 0.1 %)
        sock.sendall(th_login("th-001", secret) + th_frame("aa55020108022b"))
        assert receive(sock, len(accepted)) == accepted
        assert stored(platform, "th-001", "env", "temperature") == [26.4]
        assert stored(platform, "th-001", "env", "humidity") == [55.5]
        wait_online(platform, "th-001")

        command = {"service": "config", "command": "setReportInterval",
                   "params": {"interval": 60}, "timeout": 15}  # fmt: skip
        command_id = send_command(platform, "th-001", command)
        frame = TH.encode_command("config", "setReportInterval", {"interval": 60},
                                  mid=command_id)  # fmt: skip
        assert receive(sock, len(frame)) == frame
        # interval_set: seq (u32), result 0 (ok), interval (u16)
        sock.sendall(th_frame(f"aa5583{command_id:08x}00003c"))
        assert finished(platform, command_id) == "succeeded"


def receive(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data
