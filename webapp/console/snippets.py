"""Ready-to-copy commands that connect a new device over its product's transport.

Shown once, next to the device's secret, right after the device is added: each snippet sends
one `datas` report built from the product's thing model, so an operator can paste it and see
the device come online. A product's `protocol` names the one transport its devices may use
(MQTT and MQTT over WebSocket are one family), so a device gets the snippets of that transport.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from django.conf import settings
from django.http import HttpRequest
from django.http.request import split_domain_port
from django.utils.translation import gettext as _

from webapp.devices.models import Device
from webapp.products.choices import Datatype
from webapp.products.thingmodel import export_services

# The settings naming each transport's port (docs/processes.md lists the ports).
PORT_SETTINGS = {"mqtt": "EDGE_MQTT_PORT", "http": "EDGE_HTTP_PORT", "coap": "EDGE_COAP_PORT",
                 "tcp": "EDGE_TCP_PORT", "udp": "EDGE_UDP_PORT"}


@dataclass(frozen=True)
class Snippet:
    title: str
    language: str  # "sh" or "python"
    code: str


@dataclass(frozen=True)
class Connection:
    """Where and how the device connects, and what it can paste."""

    transport: str
    host: str
    port: int
    snippets: list[Snippet]
    binary: bool


def transport_of(protocol: str) -> str:
    return "mqtt" if protocol in ("mqtt", "websocket", "") else protocol


def public_host(request: HttpRequest) -> str:
    """`EDGE_PUBLIC_HOST`, else the host name the console was opened at (without its port
    and without the brackets of an IPv6 address)."""
    configured = str(getattr(settings, "EDGE_PUBLIC_HOST", "") or "")
    if configured:
        return configured.strip("[]")
    domain, _port = split_domain_port(request.get_host())
    return domain.strip("[]")  # bare: tools take -h ::1; URLs bracket it (_in_url)


def _in_url(host: str) -> str:
    """The host as a URL names it: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host else host


def _sample(prop: dict[str, Any]) -> Any:
    """A value the platform accepts for `prop`: inside its range, one of its enum values."""
    datatype = prop["datatype"]
    low, high = prop.get("min"), prop.get("max")
    if datatype in (Datatype.INT, Datatype.BIGINT, Datatype.DECIMAL):
        if low is not None and high is not None:
            value = (float(low) + float(high)) / 2
        else:
            value = float(low if low is not None else high if high is not None else 1)
        return int(value) if datatype != Datatype.DECIMAL else round(value, 1)
    if datatype == Datatype.BOOL:
        return True
    if datatype == Datatype.ENUM:
        return (prop.get("enum_values") or [None])[0]
    if datatype == Datatype.STRING:
        return "hello"[: prop.get("max_length") or 5]
    return None  # datetime, json, binary: left out of the sample


def sample_datas(device: Device) -> dict[str, Any]:
    """A `datas` body reporting a value for each property of the product's first service
    that has properties (an empty report when the model has none)."""
    for service in export_services(device.product):
        data = {p["code"]: value for p in service["properties"]
                if (value := _sample(p)) is not None}
        if data:
            return {"devices": [{"deviceId": device.identifier, "services": [
                {"serviceCode": service["code"], "data": data}]}]}
    return {"devices": [{"deviceId": device.identifier, "services": []}]}


def _mqtt(host: str, port: int, ident: str, secret: str, body: str) -> list[Snippet]:
    auth = f"-h {shlex.quote(host)} -p {port} -u {shlex.quote(ident)} -P {shlex.quote(secret)}"
    return [
        Snippet(_("Report (mosquitto_pub)"), "sh",
                f"mosquitto_pub {auth} -q 1 \\\n  -t /v1/devices/{ident}/datas \\\n"
                f"  -m {shlex.quote(body)}"),
        Snippet(_("Wait for commands (mosquitto_sub)"), "sh",
                f"mosquitto_sub {auth} -q 1 -v \\\n  -t /v1/devices/{ident}/command"),
    ]


def _http(host: str, port: int, ident: str, secret: str, body: str) -> list[Snippet]:
    base = f"http://{_in_url(host)}:{port}/v1/devices/{quote(ident)}"
    user = shlex.quote(f"{ident}:{secret}")
    return [
        Snippet(_("Report (curl)"), "sh",
                f"curl -s -u {user} {base}/datas \\\n"
                f"  -H 'Content-Type: application/json' \\\n  -d {shlex.quote(body)}"),
        Snippet(_("Wait up to 30 s for a command (curl)"), "sh",
                f"curl -s -i -u {user} {shlex.quote(base + '/command?wait=30')}"),
    ]


def _coap(host: str, port: int, ident: str, secret: str, body: str) -> list[Snippet]:
    base = f"coap://{_in_url(host)}:{port}/v1/devices/{quote(ident)}"
    query = "?p=" + quote(secret, safe="")
    return [
        Snippet(_("Report (coap-client, libcoap)"), "sh",
                f"coap-client-notls -m post -e {shlex.quote(body)} \\\n"
                f"  {shlex.quote(base + '/datas' + query)}"),
        Snippet(_("Wait 10 minutes for commands (coap-client, Observe)"), "sh",
                f"coap-client-notls -s 600 {shlex.quote(base + '/command' + query)}"),
    ]


def _tcp(host: str, port: int, ident: str, secret: str, body: str) -> list[Snippet]:
    code = f"""import json, socket

DEVICE, SECRET = {ident!r}, {secret!r}
REPORT = {body!r}

with socket.create_connection(({host!r}, {port}), timeout=30) as sock:
    stream = sock.makefile("rwb")

    def send(message):
        stream.write(json.dumps(message).encode() + b"\\n")
        stream.flush()
        return json.loads(stream.readline())

    print(send({{"deviceId": DEVICE, "password": SECRET}}))  # statusCode 0: logged in
    print(send({{"topic": "datas", "payload": json.loads(REPORT)}}))  # datasResponse
"""
    return [Snippet(_("Log in and report (Python, JSON lines over TCP)"), "python", code)]


def _udp(host: str, port: int, ident: str, secret: str, body: str) -> list[Snippet]:
    code = f"""import json, socket

DEVICE, SECRET = {ident!r}, {secret!r}
REPORT = {body!r}

with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
    sock.settimeout(10)
    message = {{"deviceId": DEVICE, "password": SECRET, "topic": "datas",
               "payload": json.loads(REPORT)}}
    sock.sendto(json.dumps(message).encode(), ({host!r}, {port}))
    print(json.loads(sock.recv(65535)))  # datasResponse
"""
    return [Snippet(_("Report (Python, one JSON datagram)"), "python", code)]


BUILDERS = {"mqtt": _mqtt, "http": _http, "coap": _coap, "tcp": _tcp, "udp": _udp}


def connection_for(request: HttpRequest, device: Device, secret: str) -> Connection:
    """The snippets for `device` (with its plain `secret`) on its product's transport; none
    when that transport is turned off (port 0)."""
    product = device.product
    transport = transport_of(product.protocol)
    host = public_host(request)
    port = int(getattr(settings, PORT_SETTINGS[transport], 0) or 0)
    body = json.dumps(sample_datas(device), ensure_ascii=False, separators=(",", ":"))
    snippets = BUILDERS[transport](host, port, device.identifier, secret, body) if port else []
    binary = product.data_format == "binary" or bool(product.codec)
    return Connection(transport, host, port, snippets, binary)
