"""Publishing device credentials and product models to Redis for the edge (docs/bus.md).

Called after commit by the actions, and in full by `manage.py sync_registry` on start, so that
a CONNECT at the edge never waits on the SQL database.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from webapp.core.redis import get_redis, keys
from webapp.devices.models import Device
from webapp.products.models import Product
from webapp.products.thingmodel import compact_model

# Fields other apps add to the hashes (webapp.access: ACL rules, envelope keys, the
# registration secret), one provider per app: {field: value} for one device or product.
# A device provider may also have a `bulk` attribute, `bulk(devices) -> {pk: fields}`, used
# when many devices are published at once (bulk import, start-up) to avoid a query per device.
device_field_providers: list[Callable[[Device], dict[str, str]]] = []
product_field_providers: list[Callable[[Product], dict[str, str]]] = []
# What other apps publish again when everything is (webapp.access: the API keys of
# application clients).
republishers: list[Callable[[], object]] = []


def _own_fields(device: Device) -> dict[str, str]:
    return {
        "product": device.product.identifier,
        "secret": device.secret_encrypted,
        "status": device.status,
        "node_type": device.node_type,
        "gateway": device.gateway.identifier if device.gateway is not None else "",
    }


def _device_fields(device: Device) -> dict[str, str]:
    fields = _own_fields(device)
    for provider in device_field_providers:
        fields.update(provider(device))
    return fields


def _many_device_fields(devices: list[Device]) -> dict[int, dict[str, str]]:
    """The hash fields of many devices, asking each provider once per batch when it can."""
    out = {device.pk: _own_fields(device) for device in devices}
    for provider in device_field_providers:
        bulk = getattr(provider, "bulk", None)
        if bulk is not None:
            for pk, fields in bulk(devices).items():
                out[pk].update(fields)
        else:
            for device in devices:
                out[device.pk].update(provider(device))
    return out


def publish_device(device: Device) -> None:
    k = keys()
    r = get_redis()
    pipe = r.pipeline()
    pipe.delete(k.device(device.identifier))
    pipe.hset(k.device(device.identifier), mapping=_device_fields(device))
    pipe.publish(k.registry_channel, f"dev:{device.identifier}")
    pipe.execute()


def publish_devices(identifiers: list[str], batch: int = 2000) -> int:
    """Publish many devices in pipelines (bulk import); returns how many were published."""
    k = keys()
    r = get_redis()
    published = 0
    for start in range(0, len(identifiers), batch):
        chunk = identifiers[start:start + batch]
        pipe = r.pipeline(transaction=False)
        devices = list(Device.objects.select_related("product", "gateway").filter(
            identifier__in=chunk))
        fields = _many_device_fields(devices)
        for device in devices:
            pipe.delete(k.device(device.identifier))
            pipe.hset(k.device(device.identifier), mapping=fields[device.pk])
            pipe.publish(k.registry_channel, f"dev:{device.identifier}")
            published += 1
        pipe.execute()
    return published


def unpublish_device(identifier: str) -> None:
    k = keys()
    r = get_redis()
    pipe = r.pipeline()
    pipe.delete(k.device(identifier), k.latest(identifier))
    pipe.publish(k.registry_channel, f"dev:{identifier}")
    pipe.execute()


def publish_product(product: Product) -> None:
    k = keys()
    r = get_redis()
    fields = {
        "model": json.dumps(compact_model(product), separators=(",", ":")),
        "type": product.product_type,
        "status": product.status,
        # The transport its devices use, and for raw TCP and UDP its binary codec (empty:
        # the default JSON codec); the edge re-checks connected devices when either changes.
        "protocol": product.protocol,
        "codec": json.dumps(product.codec, separators=(",", ":")) if product.codec else "",
    }
    for provider in product_field_providers:
        fields.update(provider(product))
    pipe = r.pipeline()
    pipe.hset(k.product(product.identifier), mapping=fields)
    pipe.publish(k.registry_channel, f"prod:{product.identifier}")
    pipe.execute()


def unpublish_product(identifier: str) -> None:
    k = keys()
    r = get_redis()
    r.delete(k.product(identifier))
    r.publish(k.registry_channel, f"prod:{identifier}")


def republish_all(batch: int = 1000) -> tuple[int, int]:
    """Publish every product and device; returns (products, devices)."""
    k = keys()
    r = get_redis()
    products = 0
    for product in Product.objects.all():
        publish_product(product)
        products += 1
    devices = 0
    chunk: list[Device] = []

    def flush() -> None:
        pipe = r.pipeline(transaction=False)
        fields = _many_device_fields(chunk)
        for device in chunk:
            pipe.delete(k.device(device.identifier))
            pipe.hset(k.device(device.identifier), mapping=fields[device.pk])
        pipe.execute()
        chunk.clear()

    for device in Device.objects.select_related("product", "gateway").iterator(chunk_size=batch):
        chunk.append(device)
        devices += 1
        if len(chunk) >= batch:
            flush()
    flush()
    for republish in republishers:
        republish()
    r.publish(k.registry_channel, "all")
    return products, devices
