"""M3: dynamic registration neither hands out nor leaks other devices' secrets. The exploits,
with a product secret taken from one unit's firmware: sit subscribed to the registerResponse
of an identifier about to be installed and capture its secret (the answer was published to
every subscriber); or register over a device an administrator provisioned and take it over
(any unactivated device got a new secret)."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from edge.crypto import decrypt_secret
from tests.support.waiting import wait_for
from tests.system.conftest import Org, make_product
from webapp.access import actions as access_actions
from webapp.access.actions import register_device
from webapp.access.models import SelfRegistration
from webapp.devices import actions as device_actions
from webapp.devices.models import Device
from webapp.products.models import Product
from webapp.system import actions as system_actions

ANSWER = "/v1/devices/{}/registerResponse"


@pytest.fixture
def product_secret(transactional_db, redis_prefix):
    product = make_product("thermo", Org().a)
    _registration, secret = access_actions.enable_registration(product=product)
    return secret


def answer_registrations(edge, done: set) -> int:
    """What webapp's ingest does with each new `register` event of the edge's uplink."""
    answered = 0
    for event in edge.events():
        key = (event.get("dev"), event.get("ts"), event.get("conn"))
        if event.get("t") == "register" and key not in done:
            done.add(key)
            register_device(event)
            answered += 1
    return answered


def test_the_answer_reaches_the_registering_connection_only(edge, mqtt_clients,
                                                            product_secret, admin_user):
    """An application client subscribed to `#` (its user sees everything) and a second
    registration connection of the same identifier, opened after the request, hear nothing;
    the device that asked gets its secret."""
    api_key, key = system_actions.create_api_key(acting_user=admin_user, user=admin_user,
                                                 name="spy")
    spy = mqtt_clients("spy-app")
    assert spy.connect(f"app:{api_key.prefix}", key) == 0
    assert spy.subscribe("#") == [1]

    newcomer = mqtt_clients("newcomer")
    assert newcomer.connect("thermo&new-1", product_secret) == 0
    assert newcomer.subscribe(ANSWER.format("new-1")) == [1]
    newcomer.publish("/v1/devices/new-1/register", {"name": "Hall"})
    done: set = set()
    assert wait_for(lambda: answer_registrations(edge, done))
    reply = newcomer.next_message()
    assert reply.topic == ANSWER.format("new-1")
    secret = json.loads(reply.payload)["data"]["secret"]
    assert decrypt_secret(Device.objects.get(identifier="new-1").secret_encrypted) == secret
    assert [m for m in spy.quiet() if m.topic.endswith("registerResponse")] == []

    # The same identifier again (within the retry window): the older registration
    # connection is taken over; an answer meant for the first request reaches nobody.
    first = mqtt_clients("first")
    assert first.connect("thermo&new-2", product_secret) == 0
    assert first.subscribe(ANSWER.format("new-2")) == [1]
    first.publish("/v1/devices/new-2/register", {})
    wait_for(lambda: any(e.get("dev") == "new-2" for e in edge.events()))
    thief = mqtt_clients("thief")
    assert thief.connect("thermo&new-2", product_secret) == 0
    assert first.disconnected() == 0x8E  # session taken over
    assert thief.subscribe(ANSWER.format("new-2")) == [1]
    assert wait_for(lambda: answer_registrations(edge, done))
    assert thief.quiet() == []
    assert [m for m in spy.quiet() if m.topic.endswith("registerResponse")] == []


def test_a_provisioned_device_cannot_be_registered_over(transactional_db, redis_prefix,
                                                        product_secret, redis_client):
    """An unactivated device an administrator created keeps its secret: the answer is a
    refusal. A device that registered itself may ask again only within the window."""
    product = Product.objects.get(identifier="thermo")
    staged, staged_secret = device_actions.create_device(acting_user=None, product=product,
                                                         identifier="staged")
    event = {"t": "register", "dev": "staged", "prod": "thermo", "body": {}, "mid": 1,
             "ts": 1, "node": "n1", "addr": "10.0.0.9:1", "conn": "c1"}
    register_device(event)
    staged.refresh_from_db()
    assert decrypt_secret(staged.secret_encrypted) == staged_secret
    (_id, fields), = redis_client.xrange(f"{redis_prefix}down:n1")
    assert fields[b"conn"] == b"c1"
    assert b'"statusCode":1' in fields[b"payload"] and staged_secret.encode() not in fields[
        b"payload"]

    register_device({**event, "dev": "fresh", "ts": 2})
    fresh = Device.objects.get(identifier="fresh")
    first = decrypt_secret(fresh.secret_encrypted)
    register_device({**event, "dev": "fresh", "ts": 3})  # its answer was lost: a new one
    fresh.refresh_from_db()
    second = decrypt_secret(fresh.secret_encrypted)
    assert second != first
    SelfRegistration.objects.filter(device=fresh).update(
        registered=timezone.now() - timedelta(minutes=11))
    register_device({**event, "dev": "fresh", "ts": 4})  # too late
    fresh.refresh_from_db()
    assert decrypt_secret(fresh.secret_encrypted) == second
