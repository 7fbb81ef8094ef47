"""The admin's codec fields: the codec and its samples are JSON text areas checked like the
API checks them (the codec's path and reason, the protocol, failing samples) before saving."""

from __future__ import annotations

import json

import pytest

from tests.products.test_codecs import example_product
from webapp.products.builtin_templates import example_codec
from webapp.products.models import Product

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("commit_hooks")]


def change_form(product: Product, **fields: str) -> dict[str, str]:
    form = {"identifier": product.identifier, "name": product.name,
            "product_type": product.product_type, "protocol": product.protocol,
            "data_format": product.data_format, "device_type": product.device_type,
            "status": product.status, "codec": json.dumps(product.codec),
            "codec_samples": json.dumps(product.codec_samples),
            "services-TOTAL_FORMS": "0", "services-INITIAL_FORMS": "0"}
    return {**form, **fields}


def errors(response, field: str) -> list[str]:
    return list(response.context["adminform"].form.errors.get(field, []))


def test_admin_checks_the_codec_and_its_samples(client, admin_user, redis_prefix):
    product = example_product("th")
    client.force_login(admin_user)
    url = f"/admin/products/product/{product.pk}/change/"

    renamed = client.post(url, change_form(product, name="Renamed"))
    assert renamed.status_code == 302
    product.refresh_from_db()
    assert (product.name, product.codec_version) == ("Renamed", 1)

    broken = example_codec("th-sensor-tcp")
    broken["framing"]["type"] = "ring"
    refused = client.post(url, change_form(product, codec=json.dumps(broken)))
    assert refused.status_code == 200
    assert errors(refused, "codec") == [
        "framing.type: must be one of delimiter, fixed, length, datagram, not 'ring'"]

    refused = client.post(url, change_form(product, protocol="mqtt"))
    assert "only tcp and udp products" in errors(refused, "codec")[0]

    samples = [{**product.codec_samples[0], "expect": {"humidity": 50}}]
    refused = client.post(url, change_form(product, codec_samples=json.dumps(samples)))
    assert errors(refused, "codec_samples") == [
        "report 25.3 C 45 %: humidity decodes to 45.0, not 50"]

    model = json.dumps([{"code": "env", "properties": [
        {"code": "temperature", "datatype": "int"}]}])
    refused = client.post(url, change_form(product, thing_model=model))
    assert "the thing model refuses temperature" in errors(refused, "codec_samples")[0]
    product.refresh_from_db()
    assert product.codec_version == 1

    cleared = client.post(url, change_form(product, codec="", codec_samples="[]"))
    assert cleared.status_code == 302
    product.refresh_from_db()
    assert (product.codec, product.codec_samples, product.codec_version) == (None, [], 2)


def test_admin_template_codec_is_checked_and_saved(client, admin_user, redis_prefix):
    client.force_login(admin_user)
    form = {"identifier": "tpl-meter", "name": "Meter", "product_type": "common",
            "protocol": "tcp", "data_format": "binary", "services": "[]",
            "status": "enabled", "codec": json.dumps(example_codec("meter-udp")),
            "codec_samples": "[]"}
    refused = client.post("/admin/products/producttemplate/add/", form)
    assert refused.status_code == 200
    assert "the codec is for udp" in errors(refused, "codec")[0]
    saved = client.post("/admin/products/producttemplate/add/", {**form, "protocol": "udp"})
    assert saved.status_code == 302, saved.content[:2000]
    from webapp.products.models import ProductTemplate

    assert ProductTemplate.objects.get(identifier="tpl-meter").codec == example_codec(
        "meter-udp")


def test_admin_property_edits_keep_the_samples_passing(client, admin_user, redis_prefix):
    """Editing a service's properties inline re-runs the samples with the edited model."""
    product = example_product("th")
    service = product.services.get(code="env")
    client.force_login(admin_user)
    props = list(service.properties.all())
    form = {"product": str(product.pk), "code": "env", "name": "Environment",
            "description": "", "order": "0",
            "properties-TOTAL_FORMS": str(len(props)),
            "properties-INITIAL_FORMS": str(len(props)),
            "commands-TOTAL_FORMS": "0", "commands-INITIAL_FORMS": "0",
            "events-TOTAL_FORMS": "0", "events-INITIAL_FORMS": "0"}
    for i, prop in enumerate(props):
        form.update({f"properties-{i}-{key}": "" if value is None else str(value)
                     for key, value in (("id", prop.pk), ("service", service.pk),
                                        ("code", prop.code), ("name", prop.name),
                                        ("datatype", prop.datatype), ("unit", prop.unit),
                                        ("min", prop.min), ("max", prop.max),
                                        ("step", prop.step), ("max_length", prop.max_length),
                                        ("access", prop.access))})
        form[f"properties-{i}-enum_values"] = "[]"
    url = f"/admin/products/service/{service.pk}/change/"
    refused = client.post(url, {**form, "properties-1-max": "40"})
    assert refused.status_code == 200
    assert "report 25.3 C 45 %: the thing model refuses humidity" in refused.content.decode()
    assert service.properties.get(code="humidity").max == 100
    saved = client.post(url, {**form, "properties-1-max": "90"})
    assert saved.status_code == 302
    assert service.properties.get(code="humidity").max == 90
