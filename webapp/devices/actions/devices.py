"""Device lifecycle and credentials."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.db import transaction
from django.db.models import Q

from edge.crypto import encrypt_secret, generate_secret
from webapp.core.errors import Conflict, DomainError
from webapp.core.types import Actor, recorded_user
from webapp.devices import registry
from webapp.devices.choices import ConnectStatus, DeviceStatus, NodeType
from webapp.devices.models import Device, DeviceShadow
from webapp.products.models import Product


def _publish_after_commit(device: Device) -> None:
    transaction.on_commit(lambda: registry.publish_device(
        Device.objects.select_related("product", "gateway").get(pk=device.pk)))


@transaction.atomic
def create_device(*, acting_user: Actor, product: Product, identifier: str,
                  secret: str | None = None, **fields: Any) -> tuple[Device, str]:
    """Create a device; returns it with its plain secret, which is never retrievable again."""
    if Device.objects.filter(identifier=identifier).exists():
        raise Conflict(f"device {identifier!r} already exists", code="duplicate")
    if secret is not None and len(secret) < 8:
        raise DomainError("a device secret has at least 8 characters", code="weak_secret")
    plain = secret or generate_secret()
    device = Device.objects.create(
        product=product, identifier=identifier, secret_encrypted=encrypt_secret(plain),
        created_by=recorded_user(acting_user),
        node_type=NodeType.GATEWAY if product.product_type == "gateway" else NodeType.DIRECT,
        **fields,
    )
    DeviceShadow.objects.create(device=device)
    _publish_after_commit(device)
    return device, plain


@transaction.atomic
def update_device(*, acting_user: Actor, device: Device, data: dict[str, Any]) -> Device:
    for key, value in data.items():
        setattr(device, key, value)
    device.save()
    _publish_after_commit(device)
    return device


@transaction.atomic
def rotate_secret(*, acting_user: Actor, device: Device) -> str:
    """Give the device a new secret; the old one stops working at once."""
    plain = generate_secret()
    device.secret_encrypted = encrypt_secret(plain)
    device.save(update_fields=["secret_encrypted", "updated"])
    _publish_after_commit(device)
    return plain


@transaction.atomic
def set_device_status(*, acting_user: Actor, device: Device, status: str) -> Device:
    """Lock or unlock a device (a locked device is refused at CONNECT)."""
    device.status = status
    device.save(update_fields=["status", "updated"])
    _publish_after_commit(device)
    return device


@transaction.atomic
def delete_device(*, acting_user: Actor, device: Device) -> None:
    identifier = device.identifier
    device.delete()
    transaction.on_commit(lambda: registry.unpublish_device(identifier))


def record_connect_status(identifier: str, status: str, ts_ms: int) -> bool:
    """Apply an online/offline event from the edge, last writer wins on the event time.

    Events may arrive out of order (several edge workers, redelivery after a crash): an event
    older than the last one applied is ignored. The first connection activates the device.
    A gateway going offline takes its sub-devices offline. Returns whether anything changed.
    """
    moment = datetime.fromtimestamp(ts_ms / 1000, tz=UTC)
    fields: dict[str, Any] = {"connect_status": status, "last_status_ts": ts_ms,
                              "last_seen": moment}
    with transaction.atomic():
        changed = Device.objects.filter(identifier=identifier, last_status_ts__lt=ts_ms).update(
            **fields)
        activated = bool(changed) and status == ConnectStatus.ONLINE and bool(
            Device.objects.filter(identifier=identifier,
                                  status=DeviceStatus.UNACTIVATED).update(
                status=DeviceStatus.ACTIVATED))
        if changed and status == ConnectStatus.OFFLINE:
            Device.objects.filter(Q(gateway__identifier=identifier),
                                  connect_status=ConnectStatus.ONLINE).update(
                connect_status=ConnectStatus.OFFLINE, last_status_ts=ts_ms)
    if activated:
        device = Device.objects.select_related("product", "gateway").filter(
            identifier=identifier).first()
        if device is not None:
            registry.publish_device(device)
    return bool(changed)
