"""MQTT over TLS end to end: ``python -m edge`` with a certificate made at test time, paho
clients (3.1.1 and 5.0) authenticating with passwords and with client certificates."""

from __future__ import annotations

import json
import ssl
import uuid
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import redis

from edge.crypto import encrypt_secret

from .edge_process import Client, Edge, running_edge
from .redis_server import free_port
from .tls_material import Authority, Issued, self_signed

pytestmark = pytest.mark.e2e

SECRET_KEY = "tls-test-secret-key"


class Material:
    def __init__(self, directory: Path) -> None:
        self.ca = Authority(directory)
        self.server = self.ca.issue("localhost", server=True, stem="server")
        # Identifies device tls-cn by its CN (chain verified by the CA).
        self.by_cn = self.ca.issue("tls-cn", stem="by-cn")
        # Self-signed, registered by fingerprint for device tls-pinned.
        self.pinned = self_signed(directory, "anything", "pinned")
        # Self-signed with a device's CN: no CA vouches for it, nothing registers it.
        self.forged = self_signed(directory, "tls-cn", "forged")
        # Issued by the CA with the CN of a device that pins another certificate.
        self.unpinned = self.ca.issue("tls-pinned", stem="unpinned")


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> Material:
    return Material(tmp_path_factory.mktemp("tls"))


def put_device(r: redis.Redis, prefix: str, identifier: str, secret: str, **extra: str) -> None:
    record = {
        "product": "thermo",
        "secret": encrypt_secret(secret, SECRET_KEY),
        "status": "activated",
        "node_type": "direct",
        "gateway": "",
        **extra,
    }
    r.hset(f"{prefix}dev:{identifier}", mapping=record)


@pytest.fixture(scope="module")
def edge(edge_redis_url: str, material: Material) -> Iterator[Edge]:
    prefix = f"tls{uuid.uuid4().hex[:8]}:"
    r = redis.Redis.from_url(edge_redis_url)
    model = {"services": {"env": {"properties": {"t": {"datatype": "decimal"}}}}}
    r.hset(f"{prefix}prod:thermo", mapping={"model": json.dumps(model), "type": "common"})
    put_device(r, prefix, "tls-cn", "cn-secret")
    # Colons and upper case as a webapp form might store them.
    pinned = ":".join(material.pinned.fingerprint[i : i + 2] for i in range(0, 64, 2)).upper()
    put_device(r, prefix, "tls-pinned", "pinned-secret", cert_fp=f"sha256:{pinned}")
    put_device(r, prefix, "tls-pw", "pw-secret")
    r.close()
    env = {
        "DJANGO_SECRET_KEY": SECRET_KEY,
        "EDGE_TLS_PORT": str(free_port()),
        "EDGE_TLS_CERT": str(material.server.cert),
        "EDGE_TLS_KEY": str(material.server.key),
        "EDGE_TLS_CA": str(material.ca.path),
        "EDGE_WSS_PORT": str(free_port()),
    }
    with running_edge(edge_redis_url, prefix, env) as running:
        running.tls_port = int(env["EDGE_TLS_PORT"])  # type: ignore[attr-defined]
        running.wss_port = int(env["EDGE_WSS_PORT"])  # type: ignore[attr-defined]
        yield running


def tls_client(
    edge: Edge,
    material: Material,
    clients: list[Client],
    client_id: str,
    protocol: int,
    cert: Issued | None = None,
    websocket: bool = False,
) -> Client:
    """A paho client over TLS (or, with `websocket`, over wss:// on /mqtt)."""
    client = Client(edge, client_id, protocol, transport="websockets" if websocket else "tcp")
    client.port = edge.wss_port if websocket else edge.tls_port  # type: ignore[attr-defined]
    if websocket:
        client.client.ws_set_options(path="/mqtt")
    client.client.tls_set(
        ca_certs=str(material.ca.path),
        certfile=str(cert.cert) if cert else None,
        keyfile=str(cert.key) if cert else None,
        cert_reqs=ssl.CERT_REQUIRED,
    )
    clients.append(client)
    return client


@pytest.mark.parametrize("protocol", [mqtt.MQTTv311, mqtt.MQTTv5])
def test_password_over_tls_and_wrong_password(
    edge: Edge, material: Material, clients: list[Client], protocol: int
):
    """A device authenticates with its secret over TLS (no client certificate); a wrong
    secret is refused."""
    ok = tls_client(edge, material, clients, f"pw-{protocol}", protocol)
    assert ok.connect("tls-pw", "pw-secret") == 0
    bad = tls_client(edge, material, clients, f"bad-{protocol}", protocol)
    assert bad.connect("tls-pw", "not-the-secret") != 0


def test_certificate_common_name_identifies_device_and_carries_traffic(
    edge: Edge, material: Material, clients: list[Client]
):
    """A CA-issued certificate with CN = device identifier logs the device in without user
    name or password; downlink and uplink flow over TLS."""
    device = tls_client(edge, material, clients, "cn-client", mqtt.MQTTv5, material.by_cn)
    assert device.connect(None, None) == 0
    assert edge.redis.hget(edge.key("route"), "tls-cn") == edge.node.encode()
    assert device.subscribe("/v1/devices/tls-cn/command", 1) == [1]
    edge.redis.xadd(
        edge.key(f"down:{edge.node}"),
        {"topic": "/v1/devices/tls-cn/command", "payload": b'{"cmd":"x"}', "qos": "1"},
    )
    assert device.next_message().payload == b'{"cmd":"x"}'
    body = {
        "devices": [
            {"deviceId": "tls-cn", "services": [{"serviceCode": "env", "data": {"t": 21.5}}]}
        ]
    }
    device.publish("/v1/devices/tls-cn/datas", body, qos=1)
    events = edge.wait_for_events(lambda e: e.get("t") == "data" and e["dev"] == "tls-cn")
    assert events[0]["v"] == {"t": 21.5}


def test_pinned_self_signed_certificate(edge: Edge, material: Material, clients: list[Client]):
    """A self-signed certificate whose fingerprint is the device's ``cert_fp`` logs it in
    (user name = device, no password)."""
    device = tls_client(edge, material, clients, "pinned", mqtt.MQTTv311, material.pinned)
    assert device.connect("tls-pinned", None) == 0


@pytest.mark.parametrize(
    ("cert_name", "username"),
    [("forged", None), ("forged", "tls-cn"), ("unpinned", None), ("unpinned", "tls-pinned")],
)
def test_unrecognised_certificates_are_refused(
    edge: Edge, material: Material, clients: list[Client], cert_name: str, username: str | None
):
    """A self-signed certificate with a device's CN, or a CA-issued one for a device that
    pins another fingerprint, does not log the device in."""
    cert = getattr(material, cert_name)
    device = tls_client(edge, material, clients, f"x-{cert_name}", mqtt.MQTTv5, cert)
    assert device.connect(username, None) == 0x86


@pytest.mark.parametrize("protocol", [mqtt.MQTTv311, mqtt.MQTTv5])
def test_websocket_over_tls(edge: Edge, material: Material, clients: list[Client],
                            protocol: int):
    """wss://…:EDGE_WSS_PORT/mqtt with the TLS listener's certificate: a device
    authenticates with its secret and its data reaches the uplink stream; a wrong secret is
    refused."""
    device = tls_client(edge, material, clients, f"wss-{protocol}", protocol, websocket=True)
    assert device.connect("tls-cn", "cn-secret") == 0
    value = 1.5 + protocol
    device.publish("/v1/devices/tls-cn/datas", {"devices": [
        {"deviceId": "tls-cn", "services": [{"serviceCode": "env", "data": {"t": value}}]}]})
    edge.wait_for_events(lambda e: e.get("t") == "data" and e.get("v") == {"t": value})
    bad = tls_client(edge, material, clients, f"wss-bad-{protocol}", protocol, websocket=True)
    assert bad.connect("tls-cn", "not-the-secret") != 0


def test_client_certificates_over_websocket_tls(edge: Edge, material: Material,
                                               clients: list[Client]):
    """Over wss too, a CA-issued certificate with CN = device logs the device in without a
    password, a pinned self-signed one logs in its device, and a forged one is refused."""
    def wss(client_id: str, cert: Issued) -> Client:
        return tls_client(edge, material, clients, client_id, mqtt.MQTTv5, cert, websocket=True)

    assert wss("wss-cn", material.by_cn).connect(None, None) == 0
    assert wss("wss-pinned", material.pinned).connect("tls-pinned", None) == 0
    assert wss("wss-forged", material.forged).connect(None, None) != 0
