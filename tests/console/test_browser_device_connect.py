"""Issue 14 end to end: add a device in the console and connect it with the snippet the page
shows, against the whole platform as processes (edge, ingest, Daphne on free ports).

An operator signs in to Debian's Chromium, adds a device at /devices/new/, takes the secret
and the `mosquitto_pub` snippet from the page as a user copies them (the copy button's text),
runs that exact text through a shell with /usr/bin/mosquitto_pub, and sees on the device
page, without reloading it (WebSockets), the reported values, the message-log line and its
last-seen time; after a reload they are there from storage, with the MQTT connection in its
history. The same for an HTTP product with the `curl` snippet. The device page stays open for
a few idle seconds first (the user goes to a terminal) and must keep its WebSocket all along.

The console is opened at `localhost` while the web process has EDGE_PUBLIC_HOST=127.0.0.1:
the snippet's host comes from the setting, not from the browser's address bar. Before running
it, the snippet is parsed as the shell will read it and must be exactly the expected command
(host, port, identifier, secret, topic, the sample body): the shell only ever runs what this
test expected.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection

from edge.crypto import decrypt_secret
from tests.console.browsing import new_page, set_language, shoot, sign_in
from tests.console.conftest import OPERATOR_PERMISSIONS, create_product
from tests.support.platform import Platform, database_url
from tests.support.slow import starts_processes
from tests.support.waiting import wait_for_port
from tests.system.conftest import Org
from webapp.devices.models import Device
from webapp.telemetry.models import DeviceMessage

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

ADDER = (*OPERATOR_PERMISSIONS, "devices.add_device")
EDGE_HOST = "127.0.0.1"  # where the platform's edge listens, and EDGE_PUBLIC_HOST
# The sample report the snippets carry, from the console's thermometer model (tests/console/
# conftest.py): the middle of each range, the first enum value.
SAMPLE = {"temperature": 42.5, "humidity": 50, "mode": "eco", "target": 17.5}
SHELL_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}  # mosquitto_pub is /usr/bin's


@pytest.fixture
@starts_processes
def platform(transactional_db, redis_url) -> Iterator[Platform]:
    """Edge (MQTT and HTTP listeners), ingest and Daphne on the test database; products
    `thermo-a` (MQTT) and `thermo-h` (HTTP) in department A, whose operator `adder` may add
    devices."""
    org = Org()
    create_product("thermo-a", org.a)
    http = create_product("thermo-h", org.a)
    http.protocol = "http"
    http.save(update_fields=["protocol"])
    org.user("adder", org.a, ADDER, scope="department")
    platform = Platform.create(database_url(connection.settings_dict), redis_url)
    try:
        platform.start_edge()
        wait_for_port(int(platform.env["EDGE_HTTP_PORT"]), platform.processes["edge"])
        platform.start_ingest()
        # The web's snippets point at the edge: its host, and its ports (already in env).
        platform.env = {**platform.env, "EDGE_PUBLIC_HOST": EDGE_HOST}
        platform.start_web()
        yield platform
    finally:
        for name, out in platform.stop_all().items():
            print(f"----- {name} -----\n{out[-4000:]}")


def shell_words(text: str) -> list[str]:
    """`text` split into words as sh reads it, after checking that sh would do nothing else
    with it: outside its single-quoted strings, only characters sh takes literally (no
    expansion, substitution, globbing, redirection, comment or second command)."""
    joined = text.replace("\\\n", " ")
    bare = re.sub(r"'[^']*'", "''", joined)
    assert re.fullmatch(r"[\w .,:/@%=+'-]*", bare), bare
    return shlex.split(joined)


def report(identifier: str) -> dict[str, Any]:
    return {"devices": [{"deviceId": identifier, "services": [
        {"serviceCode": "env", "data": SAMPLE}]}]}


def add_device(page: Any, base: str, product: str, identifier: str, name: str, step: str
               ) -> tuple[str, str]:
    """Fill /devices/new/ and submit it; the secret and the report snippet as the user gets
    them: the report's Copy button clicked and the clipboard read (both checked against the
    text the page shows)."""
    page.goto(f"{base}/devices/new/")
    page.select_option("#id_product", product)
    page.fill("#id_identifier", identifier)
    page.fill("#id_name", name)
    shoot(page, f"device-connect-{step}-form")
    with page.expect_navigation():
        page.click('[data-testid="device-new-form"] button[type=submit]')
    page.wait_for_selector('[data-testid="device-created"]')
    shoot(page, f"device-connect-{step}-created")
    secret_el = page.locator('[data-testid="device-secret"]')
    secret = secret_el.locator("xpath=following-sibling::button[@data-copy]").get_attribute(
        "data-copy")
    assert secret and secret == secret_el.inner_text()
    first = page.locator('[data-testid="snippet"]').first
    button = first.locator("xpath=following-sibling::button[@data-copy][1]")
    page.evaluate("navigator.clipboard.writeText('')")
    button.click()
    page.wait_for_function("b => b.textContent === '\\u2713'", arg=button.element_handle())
    snippet = page.evaluate("navigator.clipboard.readText()")
    assert snippet and snippet == first.inner_text() == button.get_attribute("data-copy")
    return secret, snippet


def run(snippet: str) -> subprocess.CompletedProcess[str]:
    # The text is the console's own page and was compared word by word with what we expect.
    return subprocess.run(snippet, shell=True, env=SHELL_ENV, capture_output=True,  # noqa: S602
                          text=True, timeout=20, check=False)


def watch_it_arrive(page: Any, identifier: str, topic: str) -> None:
    """On the open device page, without reloading it: the values, the log line, last seen."""
    page.wait_for_function(
        "() => document.querySelector('[data-testid=\"value-env.temperature\"] .v')"
        ".textContent === '42.5'", timeout=15_000)
    for code in ("humidity", "mode", "target"):
        assert page.inner_text(f'[data-testid="value-env.{code}"] .v') == str(SAMPLE[code])
    line = page.locator('#log-body tr.accepted', has_text=topic)
    line.first.wait_for(timeout=15_000)
    assert '"temperature":42.5' in line.first.locator("code.payload").inner_text()
    # The status events came too (mosquitto_pub connects and leaves at once, curl is one
    # request, so the badge may already say Offline again): "Last seen" now has a time.
    page.wait_for_selector("#last-seen time", timeout=15_000)


def test_add_a_device_and_connect_it_with_the_snippet(platform: Platform, browser: Any) -> None:
    mqtt_port, http_port = platform.env["EDGE_MQTT_PORT"], platform.env["EDGE_HTTP_PORT"]
    base = f"http://localhost:{platform.web_port}"
    page = new_page(browser)
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
    # The page's WebSockets that closed (the device page then reconnects, and misses what
    # ingest pushed meanwhile): one left open must keep its socket.
    closed: list[str] = []
    page.on("websocket", lambda ws: ws.on("close", lambda ws: closed.append(ws.url)))
    sign_in(page, base, "adder", start="/devices/new/")
    set_language(page, "en")

    # MQTT: mosquitto_pub ---------------------------------------------------------------
    secret, snippet = add_device(page, base, "thermo-a", "boiler-7", "Boiler 7", "mqtt")
    device = Device.objects.get(identifier="boiler-7")
    assert decrypt_secret(device.secret_encrypted) == secret
    assert device.created_by is not None and device.created_by.username == "adder"
    words = shell_words(snippet)
    assert words == ["mosquitto_pub", "-h", EDGE_HOST, "-p", mqtt_port, "-u", "boiler-7",
                     "-P", secret, "-q", "1", "-t", "/v1/devices/boiler-7/datas", "-m",
                     words[-1]], snippet
    assert json.loads(words[-1]) == report("boiler-7")

    page.click("text=Open the device page")
    page.wait_for_url(f"{base}/devices/boiler-7/")
    page.wait_for_selector('[data-testid="live-state"][data-state="live"]', timeout=15_000)
    assert page.inner_text('[data-testid="value-env.temperature"] .v') == "—"
    shoot(page, "device-connect-mqtt-waiting")
    # The user goes to a terminal and pastes the snippet: seconds with nothing to push.
    page.wait_for_timeout(6_000)
    assert closed == [], ("the device page's WebSocket closed while idle: the web's Redis "
                          "reads time out (redis-py's 5 s default) under channels_redis's "
                          "5 s BZPOPMIN", closed)
    done = run(snippet)
    assert done.returncode == 0, done
    watch_it_arrive(page, "boiler-7", "/v1/devices/boiler-7/datas")
    shoot(page, "device-connect-mqtt-reported")
    assert DeviceMessage.objects.filter(device_identifier="boiler-7", direction="up",
                                        result="accepted").exists()
    device.refresh_from_db()
    assert device.last_seen is not None
    page.reload()  # what got stored: the page rendered from the database and time series
    assert page.inner_text('[data-testid="value-env.temperature"] .v') == "42.5"
    assert "/v1/devices/boiler-7/datas" in page.inner_text('[data-testid="message-log"]')
    connections = page.inner_text('[data-testid="recent-connections"]')
    assert "MQTT" in connections and "127.0.0.1" in connections, connections

    # HTTP: curl ------------------------------------------------------------------------
    secret, snippet = add_device(page, base, "thermo-h", "meter-9", "Meter 9", "http")
    words = shell_words(snippet)
    assert words == ["curl", "-s", "-u", f"meter-9:{secret}",
                     f"http://{EDGE_HOST}:{http_port}/v1/devices/meter-9/datas",
                     "-H", "Content-Type: application/json", "-d", words[-1]], snippet
    assert json.loads(words[-1]) == report("meter-9")
    page.click("text=Open the device page")
    page.wait_for_url(f"{base}/devices/meter-9/")
    page.wait_for_selector('[data-testid="live-state"][data-state="live"]', timeout=15_000)
    done = run(snippet)
    assert done.returncode == 0, done
    watch_it_arrive(page, "meter-9", "/v1/devices/meter-9/datas")
    shoot(page, "device-connect-http-reported")
    assert DeviceMessage.objects.filter(device_identifier="meter-9", result="accepted").exists()

    # The same device page in Simplified Chinese ----------------------------------------
    page.goto(f"{base}/devices/boiler-7/")
    set_language(page, "zh-hans")
    assert page.locator("html").get_attribute("lang") == "zh-hans"
    page.wait_for_selector("text=消息日志")
    assert page.inner_text('[data-testid="value-env.temperature"] .v') == "42.5"
    shoot(page, "device-connect-mqtt-reported")
    assert page.js_errors == []
