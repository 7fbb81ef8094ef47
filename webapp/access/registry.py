"""What this app publishes for the edge (docs/bus.md): ACL rules and the registration secret
in the product hash, ACL rules and envelope keys in the device hash (through the field
providers of `webapp.devices.registry`), and `tl:app:{key id}` for API keys allowed to
connect as MQTT application clients."""

from __future__ import annotations

import json
from typing import Any

from django.db.models.signals import post_delete, post_save

from webapp.core.redis import get_redis, keys
from webapp.devices import registry as devices_registry
from webapp.devices.models import Device
from webapp.products.models import Product

APP_PERMISSION = "access.mqtt_application"


def _rules_json(rules: Any) -> str:
    return json.dumps([rule.as_registry() for rule in rules], separators=(",", ":"))


def product_fields(product: Product) -> dict[str, str]:
    from webapp.access.models import AclRule, ProductRegistration

    registration = ProductRegistration.objects.filter(product=product, enabled=True).first()
    rules = AclRule.objects.filter(product=product, device__isnull=True, enabled=True)
    return {
        "secret": registration.secret_encrypted if registration is not None else "",
        "acl": _rules_json(rules),
    }


def device_fields(device: Device) -> dict[str, str]:
    from webapp.access.models import AclRule, DeviceKeys

    fields: dict[str, str] = {}
    rules = list(AclRule.objects.filter(device=device, enabled=True))
    if rules:
        fields["acl"] = _rules_json(rules)
    envelope = DeviceKeys.objects.filter(device=device).first()
    if envelope is not None:
        for name in ("sign_key", "encrypt_key", "encrypt_vector"):
            token = getattr(envelope, f"{name}_encrypted")
            if token:
                fields[name] = token
    return fields


def _device_fields_bulk(devices: list[Device]) -> dict[int, dict[str, str]]:
    """`device_fields` of many devices in two queries (bulk import, start-up)."""
    from webapp.access.models import AclRule, DeviceKeys

    out: dict[int, dict[str, str]] = {device.pk: {} for device in devices}
    rules: dict[int | None, list[Any]] = {}
    for rule in AclRule.objects.filter(device__in=devices, enabled=True):
        rules.setdefault(rule.device_id, []).append(rule)
    for pk, device_rules in rules.items():
        if pk is not None:  # always: the query names devices
            out[pk]["acl"] = _rules_json(device_rules)
    for envelope in DeviceKeys.objects.filter(device__in=devices):
        for name in ("sign_key", "encrypt_key", "encrypt_vector"):
            token = getattr(envelope, f"{name}_encrypted")
            if token:
                out[envelope.device_id][name] = token
    return out


device_fields.bulk = _device_fields_bulk  # type: ignore[attr-defined]


def publish_product(product: Product) -> None:
    devices_registry.publish_product(product)


def publish_device(device: Device) -> None:
    devices_registry.publish_device(
        Device.objects.select_related("product", "gateway").get(pk=device.pk))


# -- application clients ------------------------------------------------------------------


def publish_app_key(api_key: Any) -> None:
    """``tl:app:{prefix}`` for an active key whose user may connect MQTT application
    clients; removed otherwise."""
    k = keys()
    r = get_redis()
    user = api_key.user
    if not (api_key.is_active and user.is_active and user.has_perm(APP_PERMISSION)):
        unpublish_app_key(api_key.prefix)
        return
    fields = {"key_hash": api_key.key_hash, "user": user.get_username()}
    if api_key.expires is not None:
        fields["expires"] = str(int(api_key.expires.timestamp() * 1000))
    pipe = r.pipeline()
    pipe.delete(k.app(api_key.prefix))
    pipe.hset(k.app(api_key.prefix), mapping=fields)
    pipe.publish(k.registry_channel, f"app:{api_key.prefix}")
    pipe.execute()


def unpublish_app_key(prefix: str) -> None:
    k = keys()
    r = get_redis()
    pipe = r.pipeline()
    pipe.delete(k.app(prefix))
    pipe.publish(k.registry_channel, f"app:{prefix}")
    pipe.execute()


def republish_app_keys() -> int:
    from webapp.system.models import ApiKey

    count = 0
    for api_key in ApiKey.objects.select_related("user"):
        publish_app_key(api_key)
        count += 1
    return count


def _api_key_saved(sender: Any, instance: Any, **kwargs: Any) -> None:
    from django.db import transaction

    transaction.on_commit(lambda: publish_app_key(instance))


def _api_key_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    from django.db import transaction

    prefix = instance.prefix
    transaction.on_commit(lambda: unpublish_app_key(prefix))


def connect() -> None:
    """Called once from the app config: join the devices registry and follow API keys."""
    from webapp.system.models import ApiKey

    if product_fields not in devices_registry.product_field_providers:
        devices_registry.product_field_providers.append(product_fields)
    if device_fields not in devices_registry.device_field_providers:
        devices_registry.device_field_providers.append(device_fields)
    post_save.connect(_api_key_saved, sender=ApiKey, dispatch_uid="access.api_key_saved")
    post_delete.connect(_api_key_deleted, sender=ApiKey, dispatch_uid="access.api_key_deleted")
