"""The REST API of products and devices (docs/api.md), against the real Redis registry."""

import json

import pytest

from edge.crypto import decrypt_secret

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("commit_hooks")]


def test_token_is_required(client, redis_prefix):
    """Without a token the API answers 401 with a stable code."""
    response = client.get("/api/v1/products/")
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"


def test_bad_credentials_are_refused(client, admin_user):
    """A wrong password gets no token."""
    response = client.post("/api/v1/auth/token/", {"username": "root", "password": "nope"},
                           content_type="application/json")
    assert response.status_code == 401


def test_create_product_with_thing_model(api, redis_client, redis_prefix, thermo_payload):
    """POST /products/ creates the model, returns it with ids and publishes it to the edge."""
    response = api.post("/api/v1/products/", thermo_payload, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["identifier"] == "thermo"
    service = body["services"][0]
    assert service["code"] == "env" and isinstance(service["id"], int)
    assert [p["code"] for p in service["properties"]] == ["temperature", "humidity"]
    assert service["commands"][0]["requests"][0]["code"] == "seconds"
    assert service["events"][0]["params"][0]["code"] == "level"

    published = redis_client.hgetall(f"{redis_prefix}prod:thermo")
    model = json.loads(published[b"model"])
    assert model["services"]["env"]["properties"]["temperature"]["max"] == 125

    exported = api.get("/api/v1/products/thermo/thing-model/").json()
    assert exported["services"][0]["properties"][0]["unit"] == "C"


def test_duplicate_and_invalid_products(api, redis_prefix, thermo_payload):
    """Duplicates get 409 `duplicate`; a bad model gets 400 with the field errors."""
    assert api.post("/api/v1/products/", thermo_payload, format="json").status_code == 201
    again = api.post("/api/v1/products/", thermo_payload, format="json")
    assert again.status_code in (400, 409)
    thermo_payload["identifier"] = "other"
    thermo_payload["services"][0]["properties"].append({"code": "ts", "datatype": "int"})
    bad = api.post("/api/v1/products/", thermo_payload, format="json")
    assert bad.status_code == 400
    assert bad.json()["code"] == "invalid"
    assert "reserved" in json.dumps(bad.json()["errors"])


def test_create_device_shows_secret_once(api, redis_client, redis_prefix, thermo_payload):
    """The secret is in the create response only; Redis and SQL hold it encrypted."""
    api.post("/api/v1/products/", thermo_payload, format="json")
    response = api.post("/api/v1/devices/", {"product": "thermo", "identifier": "dev-001",
                                             "name": "first"}, format="json")
    assert response.status_code == 201, response.json()
    secret = response.json()["secret"]
    assert len(secret) >= 16

    detail = api.get("/api/v1/devices/dev-001/").json()
    assert "secret" not in detail
    assert detail["connect_status"] == "unconnected"
    assert detail["last_seen"] is None

    stored = redis_client.hgetall(f"{redis_prefix}dev:dev-001")
    assert stored[b"product"] == b"thermo"
    assert secret.encode() not in stored[b"secret"]
    assert decrypt_secret(stored[b"secret"].decode()) == secret

    from webapp.devices.models import Device

    assert secret not in Device.objects.get(identifier="dev-001").secret_encrypted

    rotated = api.post("/api/v1/devices/dev-001/rotate-secret/").json()["secret"]
    assert rotated != secret
    assert decrypt_secret(redis_client.hget(f"{redis_prefix}dev:dev-001", "secret").decode()) \
        == rotated


def test_device_for_unknown_product(api, redis_prefix):
    """A device of a product that does not exist is refused with the reason."""
    response = api.post("/api/v1/devices/", {"product": "nope", "identifier": "d1"},
                        format="json")
    assert response.status_code == 400
    assert "product" in response.json()["errors"]


def test_telemetry_and_shadow_of_a_new_device(api, redis_prefix, thermo_payload):
    """A device without data has an empty series and an empty shadow."""
    api.post("/api/v1/products/", thermo_payload, format="json")
    api.post("/api/v1/devices/", {"product": "thermo", "identifier": "dev-002"}, format="json")
    series = api.get("/api/v1/devices/dev-002/telemetry/?service=env&property=temperature")
    assert series.status_code == 200, series.json()
    assert series.json()["results"] == []
    shadow = api.get("/api/v1/devices/dev-002/shadow/").json()
    assert shadow["reported"] == {} and shadow["version"] == 0
    unknown = api.get("/api/v1/devices/dev-002/telemetry/?service=env&property=nope")
    assert unknown.status_code == 400
    assert unknown.json()["code"] == "unknown_property"
