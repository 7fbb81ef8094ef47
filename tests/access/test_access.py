"""Device access: ACL rules, registration secrets, envelope keys and application keys reach
the registry the edge reads; devices that register themselves are created and answered."""

from __future__ import annotations

import hashlib
import json

import pytest

from edge.acl import parse_rules
from edge.codecs import thinglinks as tl
from edge.crypto import decrypt_secret

pytestmark = pytest.mark.django_db


@pytest.fixture
def thermo(api, thermo_payload, redis_prefix, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        assert api.post("/api/v1/products/", thermo_payload, format="json").status_code == 201
        response = api.post("/api/v1/devices/", {"product": "thermo", "identifier": "t-1"},
                            format="json")
    assert response.status_code == 201
    return response.json()


def test_acl_rules_are_published(api, thermo, redis_client, redis_prefix,
                                 django_capture_on_commit_callbacks):
    """Product-wide rules land in tl:prod:*, device rules in tl:dev:*, in the edge's format;
    a device of another product or an invalid filter is refused."""
    with django_capture_on_commit_callbacks(execute=True):
        product_rule = api.post("/api/v1/acl-rules/", {
            "product": "thermo", "action": "sub", "topic": "broadcast/#",
            "decision": "allow", "priority": 3}, format="json")
        device_rule = api.post("/api/v1/acl-rules/", {
            "product": "thermo", "device": "t-1", "topic": "out/${device}",
            "decision": "deny"}, format="json")
    assert product_rule.status_code == 201 and device_rule.status_code == 201
    product_acl = parse_rules(redis_client.hget(f"{redis_prefix}prod:thermo", "acl"))
    device_acl = parse_rules(redis_client.hget(f"{redis_prefix}dev:t-1", "acl"))
    assert [(r.action, r.topic, r.allow, r.priority) for r in product_acl] == [
        ("sub", "broadcast/#", True, 3)]
    assert [(r.action, r.topic, r.allow) for r in device_acl] == [("all", "out/${device}", False)]
    assert api.post("/api/v1/acl-rules/", {"product": "thermo", "topic": "a/#/b",
                                           "decision": "allow"}, format="json").status_code == 400
    with django_capture_on_commit_callbacks(execute=True):
        rule_id = device_rule.json()["id"]
        assert api.delete(f"/api/v1/acl-rules/{rule_id}/").status_code == 204
    assert redis_client.hget(f"{redis_prefix}dev:t-1", "acl") is None


def test_device_rule_must_belong_to_the_product(api, thermo, thermo_payload,
                                                django_capture_on_commit_callbacks):
    """A device-level rule names a device of the rule's product."""
    with django_capture_on_commit_callbacks(execute=True):
        api.post("/api/v1/products/", {**thermo_payload, "identifier": "other"}, format="json")
    response = api.post("/api/v1/acl-rules/", {"product": "other", "device": "t-1",
                                               "topic": "x", "decision": "allow"}, format="json")
    assert response.status_code == 400 and response.json()["code"] == "device_not_in_product"


def test_registration_secret_shown_once_and_published(api, thermo, redis_client, redis_prefix,
                                                      django_capture_on_commit_callbacks):
    """Turning registration on returns the product secret once and publishes it encrypted;
    rotating changes it; deleting turns registration off."""
    with django_capture_on_commit_callbacks(execute=True):
        created = api.post("/api/v1/product-registrations/", {"product": "thermo"},
                           format="json")
    assert created.status_code == 201
    secret = created.json()["secret"]
    token = redis_client.hget(f"{redis_prefix}prod:thermo", "secret").decode()
    assert decrypt_secret(token) == secret and secret not in token
    registration = created.json()["id"]
    assert api.get(f"/api/v1/product-registrations/{registration}/").json()["secret"] is None
    assert api.post("/api/v1/product-registrations/", {"product": "thermo"},
                    format="json").status_code == 409
    with django_capture_on_commit_callbacks(execute=True):
        rotated = api.post(f"/api/v1/product-registrations/{registration}/rotate/").json()
    assert rotated["secret"] != secret
    with django_capture_on_commit_callbacks(execute=True):
        assert api.delete(f"/api/v1/product-registrations/{registration}/").status_code == 204
    assert redis_client.hget(f"{redis_prefix}prod:thermo", "secret") == b""


def test_device_keys_are_generated_and_published(api, thermo, redis_client, redis_prefix,
                                                 django_capture_on_commit_callbacks):
    """Envelope keys are generated (or given), shown once, and published encrypted."""
    with django_capture_on_commit_callbacks(execute=True):
        created = api.post("/api/v1/device-keys/", {"device": "t-1", "sign_key": "my-sign"},
                           format="json")
    assert created.status_code == 201
    plain = created.json()["keys"]
    assert plain["sign_key"] == "my-sign" and len(plain["encrypt_key"]) == 16
    stored = redis_client.hgetall(f"{redis_prefix}dev:t-1")
    for name in ("sign_key", "encrypt_key", "encrypt_vector"):
        assert decrypt_secret(stored[name.encode()].decode()) == plain[name]
    assert api.get(f"/api/v1/device-keys/{created.json()['id']}/").json()["keys"] is None
    assert api.post("/api/v1/device-keys/", {"device": "t-1", "encrypt_vector": "short"},
                    format="json").status_code == 400


def _down(redis_client, redis_prefix, node="n1"):
    return [
        (fields[b"topic"].decode(), json.loads(fields[b"payload"]))
        for _id, fields in redis_client.xrange(f"{redis_prefix}down:{node}")
    ]


def test_registration_event_creates_and_answers(api, thermo, redis_client, redis_prefix,
                                                django_capture_on_commit_callbacks):
    """A register event creates the device in its product and answers it with the secret
    through the node's downlink; the same event again is not answered twice; an activated
    device cannot register; registration off is refused."""
    from webapp.access.actions import register_device
    from webapp.devices.models import Device

    event = {"t": "register", "dev": "r-1", "prod": "thermo", "body": {"name": "Kitchen"},
             "mid": 9, "ts": 1700000000000, "node": "n1", "addr": "10.0.0.1:5", "conn": "c1"}
    register_device(event)
    assert _down(redis_client, redis_prefix)[0][1]["statusCode"] == 1  # registration off
    with django_capture_on_commit_callbacks(execute=True):
        api.post("/api/v1/product-registrations/", {"product": "thermo"}, format="json")
        register_device({**event, "ts": event["ts"] + 1})
    topic, answer = _down(redis_client, redis_prefix)[-1]
    assert topic == "/v1/devices/r-1/registerResponse"
    assert (answer["statusCode"], answer["mid"]) == (0, 9)
    device = Device.objects.get(identifier="r-1")
    assert device.name == "Kitchen" and device.product.identifier == "thermo"
    assert decrypt_secret(device.secret_encrypted) == answer["data"]["secret"]
    stored = redis_client.hget(f"{redis_prefix}dev:r-1", "secret").decode()
    assert decrypt_secret(stored) == answer["data"]["secret"]
    register_device({**event, "ts": event["ts"] + 1})
    assert len(_down(redis_client, redis_prefix)) == 2  # the same event: answered once
    with django_capture_on_commit_callbacks(execute=True):
        register_device({**event, "ts": event["ts"] + 2})  # unactivated: a new secret
    again = _down(redis_client, redis_prefix)[-1][1]
    assert again["statusCode"] == 0 and again["data"]["secret"] != answer["data"]["secret"]
    Device.objects.filter(identifier="r-1").update(status="activated")
    register_device({**event, "ts": event["ts"] + 3})
    assert _down(redis_client, redis_prefix)[-1][1]["statusCode"] == 1


def test_registration_response_shape_matches_the_edge(redis_prefix):
    """webapp's answer is the edge's register_response (one shape for devices)."""
    assert json.loads(tl.register_response("d", 0, "successful", "s", 3)) == {
        "statusCode": 0, "statusDesc": "successful", "mid": 3,
        "data": {"deviceIdentification": "d", "secret": "s"}}


def test_application_keys_published_for_permitted_users(admin_user, redis_client, redis_prefix,
                                                        django_user_model,
                                                        django_capture_on_commit_callbacks):
    """An API key of a user with access.mqtt_application is published with its hash; a key
    of another user is not; revoking removes it."""
    from django.contrib.auth.models import Permission

    from webapp.system import actions as system_actions

    with django_capture_on_commit_callbacks(execute=True):
        allowed, key = system_actions.create_api_key(acting_user=admin_user, user=admin_user,
                                                     name="mqtt")
    stored = redis_client.hgetall(f"{redis_prefix}app:{allowed.prefix}")
    assert stored[b"key_hash"].decode() == hashlib.sha256(key.encode()).hexdigest()
    plain_user = django_user_model.objects.create_user("plain", password="pw-plain-123")
    with django_capture_on_commit_callbacks(execute=True):
        other, _ = system_actions.create_api_key(acting_user=plain_user, user=plain_user,
                                                 name="x")
    assert not redis_client.exists(f"{redis_prefix}app:{other.prefix}")
    plain_user.user_permissions.add(Permission.objects.get(codename="mqtt_application"))
    plain_user = django_user_model.objects.get(pk=plain_user.pk)
    other.user = plain_user
    with django_capture_on_commit_callbacks(execute=True):
        other.save()
    assert redis_client.exists(f"{redis_prefix}app:{other.prefix}")
    with django_capture_on_commit_callbacks(execute=True):
        system_actions.revoke_api_key(api_key=allowed)
    assert not redis_client.exists(f"{redis_prefix}app:{allowed.prefix}")
