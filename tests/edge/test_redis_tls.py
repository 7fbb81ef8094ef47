"""Redis over TLS (``rediss://``, ``rediss+sentinel://``; docs/bus.md, "Redis over TLS"): the
grammar (edge.bus.redis_url), and the real edge (``python -m edge``) talking TLS to a real
TLS-only redis-server (the machine's, built with TLS) — its devices' QoS 1 publishes land in
the uplink stream — with a client certificate, through TLS sentinels, and failing clearly
(not hanging) with a wrong CA or a plain URL against the TLS port."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from edge.bus.redis_tls import material
from edge.bus.redis_url import RedisAddress, RedisTls, is_sentinel_url
from edge.crypto import encrypt_secret
from tests.support.processes import stop_process
from tests.support.slow import starts_processes
from tests.support.waiting import wait_for

from .edge_process import ROOT, Client, Edge, running_edge
from .redis_server import RedisTlsFiles, free_port, ping, private_redis_server
from .sentinel_set import SentinelSet, sentinel_set
from .tls_material import Authority, self_signed

SECRET_KEY = "redis-tls-test-secret-key"
MODEL = {"services": {"s": {"properties": {"seq": {"datatype": "int"}}}}}

# --- the grammar --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("rediss://h/0", RedisAddress(host="h", tls=RedisTls())),
        (
            "rediss://app:p%40ss@h:6380/2?ssl_ca_certs=/etc/ca.pem&ssl_certfile=/c.pem"
            "&ssl_keyfile=/k.pem&ssl_cert_reqs=required&ssl_check_hostname=false",
            RedisAddress(
                host="h", port=6380, db=2, username="app", password="p@ss",
                tls=RedisTls(ca_certs="/etc/ca.pem", certfile="/c.pem", keyfile="/k.pem",
                             check_hostname=False),
            ),
        ),
        ("REDISS://h?ssl_cert_reqs=none", RedisAddress(host="h", tls=RedisTls(verify=False))),
        ("rediss://h/0?ssl_check_hostname=Yes", RedisAddress(host="h", tls=RedisTls())),
        ("rediss://h/0?ssl_check_hostname=0", RedisAddress(host="h", tls=RedisTls(
            check_hostname=False))),
        # Other options are redis-py's (it reads the same URL), as with redis://.
        ("rediss://h/0?socket_timeout=3", RedisAddress(host="h", tls=RedisTls())),
        ("rediss://h/0?ssl_certfile=/both.pem", RedisAddress(host="h", tls=RedisTls(
            certfile="/both.pem"))),
        (
            "rediss+sentinel://:mpw@s1,[::1]:26380/tl/3?sentinel_password=spw"
            "&ssl_ca_certs=/ca%20dir/ca.pem&ssl_cert_reqs=none",
            RedisAddress(
                host="", port=0, db=3, password="mpw", sentinels=(("s1", 26379), ("::1", 26380)),
                master_name="tl", sentinel_password="spw",
                tls=RedisTls(ca_certs="/ca dir/ca.pem", verify=False),
            ),
        ),
        ("redis://h/0", RedisAddress(host="h")),  # plain: no TLS
    ],
)
def test_tls_url_parsing(url: str, expected: RedisAddress):
    assert RedisAddress.parse(url) == expected


def test_tls_options_for_redis_py_and_the_hostname_check():
    tls = RedisAddress.parse(
        "rediss://h/0?ssl_ca_certs=/ca.pem&ssl_certfile=/c.pem&ssl_keyfile=/k.pem").tls
    assert tls is not None and tls.checks_hostname
    assert tls.redis_py_options() == {
        "ssl": True, "ssl_cert_reqs": "required", "ssl_check_hostname": True,
        "ssl_ca_certs": "/ca.pem", "ssl_certfile": "/c.pem", "ssl_keyfile": "/k.pem",
    }
    # No verification: no hostname check either (as redis-py does).
    off = RedisTls(verify=False)
    assert not off.checks_hostname
    assert off.redis_py_options() == {
        "ssl": True, "ssl_cert_reqs": "none", "ssl_check_hostname": False,
    }


def test_tls_urls_are_printed_with_their_scheme_and_without_credentials():
    assert str(RedisAddress.parse("rediss://u:hunter2@h:6380/1?ssl_ca_certs=/ca.pem")) == (
        "rediss://h:6380/1"
    )
    assert str(RedisAddress.parse("rediss://[::1]:6380/1")) == "rediss://[::1]:6380/1"
    sentinel = RedisAddress.parse("rediss+sentinel://:pw@h1,h2:5000/m/2?sentinel_password=s")
    assert str(sentinel) == "rediss+sentinel://h1:26379,h2:5000/m/2"
    assert is_sentinel_url("rediss+sentinel://h/m") and is_sentinel_url("REDIS+SENTINEL://h/m")
    assert not is_sentinel_url("rediss://h/0")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://h/0?ssl_ca_certs=/ca.pem", "TLS options (ssl_ca_certs) need the rediss://"),
        ("unix:///r.sock?ssl_cert_reqs=none", "need the rediss:// scheme"),
        ("redis+sentinel://h/m?ssl_certfile=/c", "need the rediss:// scheme"),
        ("rediss://h/0?ssl_cert_reqs=optional", "ssl_cert_reqs is 'required' or 'none'"),
        ("rediss://h/0?ssl_cert_reqs=NONE", "ssl_cert_reqs is 'required' or 'none'"),
        ("rediss://h/0?ssl_check_hostname=maybe", "ssl_check_hostname is true or false"),
        ("rediss://h/0?ssl_ca_certs=", "ssl_ca_certs is empty"),
        ("rediss://h/0?ssl_ca_certs=/a&ssl_ca_certs=/b", "given twice"),
        ("rediss://h/0?ssl_keyfile=/k.pem", "ssl_keyfile needs ssl_certfile"),
        ("rediss://h/0?ssl_password=x", "unsupported TLS option(s) ssl_password"),
        ("rediss+sentinel://h/m?ssl_ca_path=/d", "unsupported TLS option(s) ssl_ca_path"),
        ("rediss+sentinel://h/m?socket_timeout=1", "unknown option(s) socket_timeout"),
        ("rediss+sentinel://h", "rediss+sentinel:// needs the master name"),
        ("rediss+sentinel:///m", "rediss+sentinel:// needs at least one sentinel host"),
        ("redisss://h/0", "unsupported Redis URL scheme 'redisss'"),
    ],
)
def test_bad_tls_urls_are_refused_clearly(url: str, message: str):
    with pytest.raises(ValueError) as raised:
        RedisAddress.parse(url)
    assert message in str(raised.value)


@pytest.mark.parametrize(
    "url",
    [
        "rediss://u:hunter2@h/0?ssl_cert_reqs=maybe",
        "rediss://:hunter2@h/0?ssl_check_hostname=hunter2x",
        "rediss+sentinel://:hunter2@h/m?sentinel_password=hunter3&ssl_cert_reqs=all",
        "redis+sentinel://:hunter2@h/m?sentinel_password=hunter3&ssl_ca_certs=/ca",
        "rediss+sentinel://:hunter2@h/m?sentinel_password=hunter3&sentinel_password=hunter4",
        "redis://:hunter2@h/0?ssl_keyfile=/k",
    ],
)
def test_errors_never_repeat_a_password(url: str):
    with pytest.raises(ValueError) as raised:
        RedisAddress.parse(url)
    assert "hunter" not in str(raised.value)


def test_unusable_tls_files_are_a_clear_error(tmp_path: Path):
    """The edge reads the files once, when its connections are made: a missing or wrong
    file is a ValueError naming the option and the file."""
    with pytest.raises(ValueError, match=r"ssl_ca_certs /nonexistent/ca.pem: No such file"):
        material(RedisTls(ca_certs="/nonexistent/ca.pem"))
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(ValueError, match=r"ssl_ca_certs .*garbage.pem: no PEM certificate"):
        material(RedisTls(ca_certs=str(garbage)))
    files = RedisTlsFiles.make(tmp_path)
    with pytest.raises(ValueError, match=r"ssl_keyfile .*: no usable .*private key"):
        material(RedisTls(certfile=str(files.client_cert), keyfile=str(files.client_cert)))
    trust, client, chain = material(RedisTls(
        ca_certs=str(files.ca), certfile=str(files.client_cert), keyfile=str(files.client_key)))
    assert trust is not None and client is not None and chain == ()
    assert material(RedisTls(verify=False))[0] is None


# --- the real edge against a real TLS redis-server ----------------------------------------


@pytest.fixture(scope="module")
@starts_processes
def tls_redis(tls_files: RedisTlsFiles) -> Iterator[str]:
    """A TLS-only redis-server that asks clients for a certificate of the CA."""
    with private_redis_server(tls=tls_files, auth_clients=True) as url:
        yield url


def with_client_certificate(url: str, files: RedisTlsFiles) -> str:
    return f"{url}&ssl_certfile={files.client_cert}&ssl_keyfile={files.client_key}"


def register_device(client: redis.Redis, prefix: str, name: str) -> None:
    client.hset(f"{prefix}prod:p", mapping={"model": json.dumps(MODEL), "type": "common",
                                            "secret": ""})
    client.hset(f"{prefix}dev:{name}", mapping={
        "product": "p", "secret": encrypt_secret("s3cret", SECRET_KEY), "status": "activated",
        "node_type": "direct", "gateway": "",
    })


def publish_lands(edge: Edge, name: str, seq: int) -> None:
    """A device of ``edge`` connects, publishes with QoS 1 (acknowledged), and the point is in
    the uplink stream."""
    device = Client(edge, name)
    try:
        assert device.connect(name, "s3cret") == 0
        body = {"devices": [{"deviceId": name,
                             "services": [{"serviceCode": "s", "data": {"seq": seq}}]}]}
        info = device.publish(f"/v1/devices/{name}/datas", body, qos=1)
        assert info.is_published()
        edge.wait_for_events(lambda e: e.get("t") == "data" and e.get("dev") == name
                             and e.get("v", {}).get("seq") == seq)
    finally:
        device.close()


@pytest.mark.e2e
def test_the_edge_talks_tls_to_redis_with_a_client_certificate(
    tls_redis: str, tls_files: RedisTlsFiles
):
    url = with_client_certificate(tls_redis, tls_files)
    prefix = f"tls{uuid.uuid4().hex[:8]}:"
    setup = redis.Redis.from_url(url)
    register_device(setup, prefix, "dev-tls")
    env = {"DJANGO_SECRET_KEY": SECRET_KEY, "EDGE_LOG_LEVEL": "info"}
    with running_edge(url, prefix, env, client=setup) as edge:
        publish_lands(edge, "dev-tls", 7)
        port = url.split(":")[2].split("/")[0]
        assert f"redis connected to rediss://127.0.0.1:{port}/0" in edge.log()
        # The server saw TLS clients only (it listens on no plain port).
        assert setup.config_get("port") == {"port": "0"}


def edge_log_until(url: str, wanted: str, timeout: float = 15.0) -> str:
    """Start ``python -m edge`` on ``url`` and return its log once it holds ``wanted``: a
    Redis it cannot use is said in the log at once and tried again, not waited for."""
    env = {
        **os.environ, "REDIS_URL": url, "REDIS_PREFIX": f"tlsbad{uuid.uuid4().hex[:6]}:",
        "DJANGO_SECRET_KEY": SECRET_KEY, "EDGE_MQTT_PORT": str(free_port()),
        "EDGE_METRICS_PORT": str(free_port()), "EDGE_WS_PORT": str(free_port()),
        "EDGE_COAP_PORT": "0", "EDGE_HTTP_PORT": "0", "EDGE_TCP_PORT": "0", "EDGE_UDP_PORT": "0",
        "EDGE_HOST": "127.0.0.1", "EDGE_NODE_ID": f"node-{uuid.uuid4().hex[:6]}",
    }
    with tempfile.NamedTemporaryFile(prefix="edge-tls-", suffix=".log") as log:
        process = subprocess.Popen([sys.executable, "-m", "edge"], cwd=ROOT, env=env,
                                   stdout=log, stderr=subprocess.STDOUT)
        try:
            def logged() -> str:
                text = Path(log.name).read_text()
                return text if wanted in text else ""

            text = wait_for(logged, timeout, message=lambda: Path(log.name).read_text()[-3000:])
            assert process.poll() is None  # it goes on trying
            return text
        finally:
            stop_process(process, 10)


@pytest.mark.e2e
def test_a_wrong_ca_or_no_client_certificate_or_no_tls_is_a_clear_error(
    tls_redis: str, tls_files: RedisTlsFiles, tmp_path: Path
):
    other = Authority(tmp_path, "Another CA")
    wrong_ca = with_client_certificate(tls_redis, tls_files).replace(
        str(tls_files.ca), str(other.path))
    log = edge_log_until(wrong_ca, "certificate verify failed")
    assert "redis: Redis connection to rediss://127.0.0.1:" in log
    assert "TLS handshake failed: certificate verify failed; retrying" in log
    assert "connected to" not in log
    # Tried again with a growing delay, not in a tight loop.
    assert log.count("certificate verify failed") < 15

    log = edge_log_until(tls_redis, "failed: TLS handshake failed")  # no client certificate
    assert "connected to" not in log

    port = tls_redis.split(":")[2].split("/")[0]
    log = edge_log_until(f"redis://127.0.0.1:{port}/1", "a TLS port?")
    assert ("the server closed the connection without answering (a TLS port? then the URL "
            "is rediss://); retrying") in log
    assert "connected to" not in log


@pytest.fixture(scope="module")
@starts_processes
def tls_sentinels(tls_files: RedisTlsFiles) -> Iterator[SentinelSet]:
    with sentinel_set(tls=tls_files) as group:
        yield group


@pytest.mark.e2e
def test_the_edge_finds_the_master_through_tls_sentinels(tls_sentinels: SentinelSet):
    url = tls_sentinels.url
    assert url.startswith("rediss+sentinel://")
    master_port = tls_sentinels.master()[1]
    setup = tls_sentinels.redis(master_port)
    prefix = f"tlss{uuid.uuid4().hex[:8]}:"
    register_device(setup, prefix, "dev-tls-s")
    setup.wait(1, 2000)
    env = {"DJANGO_SECRET_KEY": SECRET_KEY, "EDGE_LOG_LEVEL": "info"}
    with running_edge(url, prefix, env, client=setup) as edge:
        publish_lands(edge, "dev-tls-s", 11)  # acknowledged once the replica had it (WAIT 1)
        log = edge.log()
        assert f"connected to {RedisAddress.parse(url)} (master 127.0.0.1:{master_port})" in log
        # Every connection the edge has is TLS: the sentinels and the master have no plain port.
        for port in (master_port, *tls_sentinels.sentinel_ports):
            assert ping(port, tls_sentinels.tls) and not ping(port)


@pytest.mark.e2e
def test_the_edge_stops_at_start_on_an_unusable_tls_file():
    env = {**os.environ, "REDIS_URL": "rediss://127.0.0.1:1/0?ssl_ca_certs=/nonexistent/ca.pem",
           "DJANGO_SECRET_KEY": SECRET_KEY, "EDGE_MQTT_PORT": str(free_port()),
           "EDGE_METRICS_PORT": str(free_port())}
    done = subprocess.run([sys.executable, "-m", "edge"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "edge: Redis URL: ssl_ca_certs /nonexistent/ca.pem: No such file or directory"
    )


@pytest.mark.e2e
def test_the_name_check_and_the_whole_verification_can_be_turned_off(tmp_path: Path):
    """A server whose certificate names another host: refused by default, accepted with
    ssl_check_hostname=false (the chain is still verified); a certificate of an unknown CA is
    accepted with ssl_cert_reqs=none only."""
    elsewhere = self_signed(tmp_path, "elsewhere.example", "elsewhere")  # no 127.0.0.1 in it
    files = RedisTlsFiles(elsewhere.cert, elsewhere.cert, elsewhere.key, elsewhere.cert,
                          elsewhere.key)
    with private_redis_server(tls=files) as url:
        log = edge_log_until(url, "does not name the host")
        assert "connected to" not in log
        edge_log_until(url + "&ssl_check_hostname=false", "redis connected to rediss://")
        other = Authority(tmp_path, "Another CA")
        wrong = url.replace(str(elsewhere.cert), str(other.path))
        log = edge_log_until(wrong + "&ssl_check_hostname=false", "certificate verify failed")
        assert "connected to" not in log
        edge_log_until(wrong + "&ssl_cert_reqs=none", "redis connected to rediss://")
