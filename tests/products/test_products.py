"""Products: templates, thing model import/export in our form and the ThingLinks product JSON,
and safe model changes against stored time-series data."""

from __future__ import annotations

import json
import time

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from webapp.products.models import Product
from webapp.telemetry.backends import Point, get_backend

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("commit_hooks")]

# The ThingLinks v1.4 product JSON as its export writes it (docs/devices.md, "Products").
THINGLINKS = {
    "productName": "Smart lamp", "productType": 1, "manufacturerId": "mqttsnet",
    "manufacturerName": "MqttsNet", "model": "LAMP-01", "dataFormat": "JSON",
    "deviceType": "default", "protocolType": "MQTT", "remark": "a lamp",
    "services": [{
        "serviceCode": "Light", "serviceName": "Light", "serviceType": "", "description": "",
        "properties": [
            {"propertyCode": "brightness", "propertyName": "Brightness", "datatype": "int",
             "unit": "%", "min": "0", "max": "100", "step": "1", "maxlength": None,
             "method": "RWE", "required": "1", "enumlist": None},
            {"propertyCode": "temperature", "propertyName": "Temperature",
             "datatype": "decimal", "unit": "C", "min": "-20.5", "max": "60", "step": "0.1",
             "maxlength": None, "method": "RE", "required": "0", "enumlist": None},
            {"propertyCode": "mode", "propertyName": "Mode", "datatype": "string",
             "maxlength": "16", "method": "RW", "required": "0",
             "enumlist": "[\"DAY\",\"NIGHT\"]"},
            {"propertyCode": "lastChange", "datatype": "DateTime", "maxlength": "32",
             "method": "R"},
            {"propertyCode": "config", "datatype": "jsonObject", "maxlength": "1024",
             "method": "R"},
        ],
        "commands": [{
            "commandCode": "setBrightness", "commandName": "Set brightness",
            "requests": [{"parameterCode": "brightness", "parameterName": "Brightness",
                          "datatype": "int", "min": "0", "max": "100", "required": "1"}],
            "responses": [{"parameterCode": "result", "datatype": "string",
                           "maxlength": "64"}]}],
    }],
}


def without_ids(value):
    if isinstance(value, dict):
        return {k: without_ids(v) for k, v in value.items() if k != "id"}
    if isinstance(value, list):
        return [without_ids(v) for v in value]
    return value


def thing_model(api, identifier):
    return without_ids(api.get(f"/api/v1/products/{identifier}/thing-model/").json()["services"])


def test_built_in_templates_start_products(api, redis_prefix):
    """A product made from a template gets its type and model; a product can become one."""
    templates = {t["identifier"]: t for t in api.get("/api/v1/product-templates/").json()[
        "results"]}
    assert {"thermometer", "smart-plug", "gateway"} <= set(templates)
    plug = api.post("/api/v1/products/", {"identifier": "plug", "name": "Plug",
                                          "template": "smart-plug"}, format="json")
    assert plug.status_code == 201, plug.json()
    assert plug.json()["services"][0]["code"] == "power"
    assert plug.json()["services"][0]["commands"][0]["code"] == "switch"
    gateway = api.post("/api/v1/products/", {"identifier": "gw", "name": "GW",
                                             "template": "gateway"}, format="json").json()
    assert gateway["product_type"] == "gateway"

    saved = api.post("/api/v1/products/plug/save-as-template/",
                     {"identifier": "my-plug", "name": "My plug"}, format="json")
    assert saved.status_code == 201, saved.json()
    copy = api.post("/api/v1/products/", {"identifier": "plug2", "name": "Plug 2",
                                          "template": "my-plug"}, format="json")
    assert copy.status_code == 201
    assert thing_model(api, "plug2") == thing_model(api, "plug")
    unknown = api.post("/api/v1/products/", {"identifier": "x", "name": "X",
                                             "template": "nope"}, format="json")
    assert unknown.status_code == 400 and "template" in unknown.json()["errors"]


def test_thinglinks_product_json_imports_unchanged(api, redis_client, redis_prefix):
    """The ThingLinks export (camelCase, numbers as strings) becomes a product."""
    response = api.post("/api/v1/products/import/?identifier=lamp", THINGLINKS, format="json")
    assert response.status_code == 201, response.json()
    product = response.json()
    assert product["identifier"] == "lamp" and product["name"] == "Smart lamp"
    assert product["manufacturer"] == "mqttsnet" and product["model"] == "LAMP-01"
    assert product["protocol"] == "mqtt" and product["description"] == "a lamp"
    service = product["services"][0]
    assert service["code"] == "Light"
    props = {p["code"]: p for p in service["properties"]}
    assert props["brightness"]["max"] == 100 and props["brightness"]["required"] is True
    assert props["brightness"]["access"] == "RWE"
    assert props["temperature"]["min"] == -20.5 and props["temperature"]["step"] == 0.1
    assert props["mode"]["enum_values"] == ["DAY", "NIGHT"]
    assert props["mode"]["max_length"] == 16
    assert props["lastChange"]["datatype"] == "datetime"
    assert props["config"]["datatype"] == "json"
    command = service["commands"][0]
    assert command["code"] == "setBrightness"
    assert command["requests"][0]["required"] is True
    assert command["responses"][0]["max_length"] == 64
    model = json.loads(redis_client.hget(f"{redis_prefix}prod:lamp", "model"))
    assert model["services"]["Light"]["commands"]["setBrightness"]["requests"][
        "brightness"]["max"] == 100


def test_thinglinks_export_round_trips(api, redis_prefix, thermo_payload):
    """Our export in the ThingLinks form re-imports to the same thing model."""
    thermo_payload.update(manufacturer="acme", model="T-1")
    api.post("/api/v1/products/", thermo_payload, format="json")
    exported = api.get("/api/v1/products/thermo/thing-model/?dialect=thinglinks").json()
    assert exported["productName"] == "Thermometer" and exported["productType"] == 1
    prop = exported["services"][0]["properties"][0]
    assert prop["propertyCode"] == "temperature"
    assert prop["min"] == "-40" and prop["max"] == "125" and prop["method"] == "RE"
    again = api.post("/api/v1/products/import/?identifier=thermo2", exported, format="json")
    assert again.status_code == 201, again.json()
    assert thing_model(api, "thermo2") == thing_model(api, "thermo")


def test_our_format_round_trips_as_a_file(api, redis_prefix, thermo_payload):
    """GET thing-model → POST import (a .json file) creates the same product."""
    api.post("/api/v1/products/", thermo_payload, format="json")
    exported = api.get("/api/v1/products/thermo/thing-model/").json()
    upload = SimpleUploadedFile("thermo.json", json.dumps(exported).encode())
    response = api.post("/api/v1/products/import/", {"file": upload, "identifier": "copy"},
                        format="multipart")
    assert response.status_code == 201, response.json()
    assert thing_model(api, "copy") == thing_model(api, "thermo")


def test_legacy_thinglinks_form(api, redis_prefix):
    """The legacy ThingLinks form (serviceId, properties named by `name`) is read too."""
    legacy = {"productName": "Old meter", "productType": "COMMON", "manufacturerId": "m",
              "model": "OLD-1", "protocolType": "MQTT", "dataFormat": "JSON",
              "services": [{"serviceId": "meter", "properties": [
                  {"name": "voltage", "datatype": "decimal", "min": "0", "max": "400",
                   "method": "RE", "required": "0"}]}]}
    response = api.post("/api/v1/products/import/", legacy, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["identifier"] == "OLD-1"
    assert response.json()["services"][0]["properties"][0]["code"] == "voltage"


def test_import_errors_are_clear(api, redis_prefix, thermo_payload):
    """Bad datatypes, invalid codes and duplicates are refused with where and why."""
    bad = json.loads(json.dumps(THINGLINKS))
    bad["services"][0]["properties"][0]["datatype"] = "quaternion"
    response = api.post("/api/v1/products/import/?identifier=x", bad, format="json")
    assert response.status_code == 400 and response.json()["code"] == "invalid_import"
    assert "services[0].properties[0].datatype" in response.json()["errors"]
    bad = json.loads(json.dumps(THINGLINKS))
    bad["services"][0]["properties"][0]["propertyCode"] = "bad code"
    response = api.post("/api/v1/products/import/?identifier=x", bad, format="json")
    assert response.status_code == 400 and "services" in response.json()["errors"]
    api.post("/api/v1/products/", thermo_payload, format="json")
    duplicate = api.post("/api/v1/products/import/", api.get(
        "/api/v1/products/thermo/thing-model/").json(), format="json")
    assert duplicate.status_code == 409 and duplicate.json()["code"] == "duplicate"
    not_json = api.post("/api/v1/products/import/", {
        "file": SimpleUploadedFile("x.json", b"{nope")}, format="multipart")
    assert not_json.status_code == 400 and not_json.json()["code"] == "invalid_import"


def store(product_identifier, service, values):
    product = Product.objects.get(identifier=product_identifier)
    backend = get_backend()
    backend.forget(product.identifier)
    backend.ensure_schema(product)
    ts = int(time.time() * 1000)
    backend.write([Point(product=product.identifier, service=service, device="dev-1", ts=ts,
                         received=ts, values=values)])


def put_model(api, services, migrate=False):
    suffix = "?migrate=true" if migrate else ""
    return api.patch(f"/api/v1/products/thermo/{suffix}", {"services": services},
                     format="json")


def test_model_changes_are_safe_for_stored_data(api, redis_prefix, thermo_payload):
    """Adding extends storage; removing or retyping a property with data is refused unless
    migrated, and then its data is dropped and the new type stored."""
    api.post("/api/v1/products/", thermo_payload, format="json")
    services = thermo_payload["services"]
    store("thermo", "env", {"temperature": 21.5})
    backend = get_backend()
    product = Product.objects.get(identifier="thermo")

    services[0]["properties"].append({"code": "pressure", "datatype": "int"})
    assert put_model(api, services).status_code == 200
    store("thermo", "env", {"pressure": 1013})
    assert backend.has_data(product, "env", "pressure")

    removed = [dict(services[0], properties=[p for p in services[0]["properties"]
                                              if p["code"] != "temperature"])]
    refused = put_model(api, removed)
    assert refused.status_code == 409, refused.json()
    body = refused.json()
    assert body["code"] == "model_change_refused" and "env.temperature" in body["detail"]
    assert body["changes"] == [{"service": "env", "property": "temperature",
                                "change": "removed", "from": "decimal", "to": None}]

    retyped = json.loads(json.dumps(services))
    retyped[0]["properties"][2]["datatype"] = "string"  # pressure: int → string
    assert put_model(api, retyped).json()["changes"][0]["change"] == "retyped"

    no_data = json.loads(json.dumps(services))
    no_data[0]["properties"] = [p for p in no_data[0]["properties"] if p["code"] != "humidity"]
    assert put_model(api, no_data).status_code == 200  # humidity never had data

    migrated = put_model(api, [dict(no_data[0], properties=[
        {**p, "datatype": "string"} if p["code"] == "pressure" else p
        for p in no_data[0]["properties"]])], migrate=True)
    assert migrated.status_code == 200, migrated.json()
    assert not backend.has_data(product, "env", "pressure")
    store("thermo", "env", {"pressure": "high"})
    assert backend.has_data(product, "env", "pressure")
    assert backend.has_data(product, "env", "temperature")  # untouched


def test_removing_a_service_with_data_is_refused(api, redis_prefix, thermo_payload):
    """A whole service with stored points cannot disappear without migrate."""
    api.post("/api/v1/products/", thermo_payload, format="json")
    store("thermo", "env", {"humidity": 40})
    refused = put_model(api, [{"code": "other", "properties": [
        {"code": "x", "datatype": "int"}]}])
    assert refused.status_code == 409
    assert refused.json()["changes"][0] == {"service": "env", "property": None,
                                            "change": "removed", "from": None, "to": None}
    assert put_model(api, [{"code": "other"}], migrate=True).status_code == 200
    assert not get_backend().has_data(Product.objects.get(identifier="thermo"), "env")


def test_import_update_follows_the_same_rules(api, redis_prefix, thermo_payload):
    """Re-importing with update=true replaces the model, refusing data loss unless migrate."""
    api.post("/api/v1/products/", thermo_payload, format="json")
    store("thermo", "env", {"temperature": 20.0})
    exported = api.get("/api/v1/products/thermo/thing-model/").json()
    exported["services"][0]["properties"] = [
        p for p in exported["services"][0]["properties"] if p["code"] != "temperature"]
    refused = api.post("/api/v1/products/import/?update=true", exported, format="json")
    assert refused.status_code == 409 and refused.json()["code"] == "model_change_refused"
    done = api.post("/api/v1/products/import/?update=true&migrate=true", exported,
                    format="json")
    assert done.status_code == 200, done.json()
    assert [p["code"] for p in done.json()["services"][0]["properties"]] == ["humidity"]


def test_admin_accepts_thinglinks_json_and_guards_data(client, admin_user, redis_prefix,
                                                       thermo_payload, api):
    """The admin's thing model field takes a ThingLinks JSON; a change that would lose data
    needs the migrate box."""
    api.post("/api/v1/products/", thermo_payload, format="json")
    store("thermo", "env", {"temperature": 1.0})
    client.force_login(admin_user)
    product = Product.objects.get(identifier="thermo")
    form = {"identifier": "thermo", "name": "Thermometer", "product_type": "common",
            "protocol": "mqtt", "data_format": "json", "device_type": "default",
            "status": "enabled", "thing_model": json.dumps(THINGLINKS),
            "services-TOTAL_FORMS": "0", "services-INITIAL_FORMS": "0"}
    refused = client.post(f"/admin/products/product/{product.pk}/change/", form)
    assert refused.status_code == 200 and b"Migrate stored data" in refused.content
    assert b"env" in refused.content
    done = client.post(f"/admin/products/product/{product.pk}/change/",
                       {**form, "migrate": "on"})
    assert done.status_code == 302
    assert [s.code for s in product.services.all()] == ["Light"]


@pytest.mark.parametrize("values, reason", [
    (["eco", ""], "empty"), (["eco", "eco"], "repeated"), (["eco", " eco "], "repeated"),
    ([{"a": 1}], "texts or numbers"), ([True, False], "texts or numbers"),
    ([str(n) for n in range(1001)], "at most"),
])
def test_an_enum_with_unusable_values_is_refused(api, thermo_payload, values, reason):
    payload = json.loads(json.dumps(thermo_payload))
    payload["services"][0]["properties"].append(
        {"code": "mode", "datatype": "enum", "enum_values": values})
    response = api.post("/api/v1/products/", payload, format="json")
    assert response.status_code == 400
    assert reason in json.dumps(response.json())
    assert not Product.objects.filter(identifier=payload["identifier"]).exists()
