"""Device lifecycle and credentials."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.db import transaction
from django.db.models import Case, DateTimeField, F, Q, Value, When
from django.utils.translation import gettext as _

from edge.crypto import encrypt_secret, generate_secret
from webapp.core.errors import Conflict, DomainError
from webapp.core.types import Actor
from webapp.devices import registry
from webapp.devices.choices import ConnectStatus, DeviceStatus, NodeType
from webapp.devices.models import Device, DeviceShadow
from webapp.products.models import (
    RESERVED_DEVICE_IDENTIFIERS,
    Product,
    reserved_identifier_problem,
)
from webapp.system.actors import recorded_user


def _publish_after_commit(device: Device) -> None:
    transaction.on_commit(lambda: registry.publish_device(
        Device.objects.select_related("product", "gateway").get(pk=device.pk)))


def node_type_for(product: Product, gateway: Device | None) -> str:
    if gateway is not None:
        return NodeType.SUB
    return NodeType.GATEWAY if product.product_type == "gateway" else NodeType.DIRECT


def _check_gateway(device: Device | None, gateway: Device | None) -> None:
    if gateway is None:
        return
    if gateway.node_type != NodeType.GATEWAY:
        raise DomainError(_("{identifier} is not a gateway").format(
            identifier=gateway.identifier), code="not_a_gateway")
    if device is not None and device.pk == gateway.pk:
        raise DomainError(_("a device cannot be its own gateway"), code="not_a_gateway")
    if device is not None and device.node_type == NodeType.GATEWAY:
        raise DomainError(_("a gateway cannot be a sub-device"), code="not_a_gateway")


@transaction.atomic
def create_device(*, acting_user: Actor, product: Product, identifier: str,
                  secret: str | None = None, **fields: Any) -> tuple[Device, str]:
    """Create a device; returns it with its plain secret, which is never retrievable again.

    ``gateway`` makes it a sub-device of that gateway; ``groups`` puts it in device groups.
    """
    if Device.objects.filter(identifier=identifier).exists():
        raise Conflict(_("device {identifier!r} already exists").format(identifier=identifier),
                       code="duplicate")
    reserved = reserved_identifier_problem(identifier, RESERVED_DEVICE_IDENTIFIERS)
    if reserved:
        raise DomainError(reserved, code="reserved_identifier")
    if secret is not None and len(secret) < 8:
        raise DomainError(_("a device secret has at least 8 characters"), code="weak_secret")
    groups = fields.pop("groups", None)
    gateway = fields.get("gateway")
    if gateway is not None and product.product_type == "gateway":
        raise DomainError(_("a gateway cannot be a sub-device"), code="not_a_gateway")
    _check_gateway(None, gateway)
    fields.setdefault("node_type", node_type_for(product, gateway))
    plain = secret or generate_secret()
    # `created_by` is the acting user, whatever a form sent along (the admin's does).
    device = Device.objects.create(**{
        **fields, "product": product, "identifier": identifier,
        "secret_encrypted": encrypt_secret(plain), "created_by": recorded_user(acting_user)})
    if groups:
        device.groups.set(groups)
    DeviceShadow.objects.create(device=device)
    _publish_after_commit(device)
    return device, plain


@transaction.atomic
def update_device(*, device: Device, data: dict[str, Any]) -> Device:
    """Change device fields (``groups`` replaces its groups, ``gateway`` moves it under a
    gateway or, with None, makes it a direct device again)."""
    data = dict(data)
    groups = data.pop("groups", None)
    if "gateway" in data:
        _check_gateway(device, data["gateway"])
        data["node_type"] = node_type_for(device.product, data["gateway"])
    for key, value in data.items():
        setattr(device, key, value)
    device.save()
    if groups is not None:
        device.groups.set(groups)
    _publish_after_commit(device)
    return device


@transaction.atomic
def rotate_secret(*, device: Device) -> str:
    """Give the device a new secret; the old one stops working at once."""
    plain = generate_secret()
    device.secret_encrypted = encrypt_secret(plain)
    device.save(update_fields=["secret_encrypted", "updated"])
    _publish_after_commit(device)
    return plain


@transaction.atomic
def set_device_status(*, device: Device, status: str) -> Device:
    """Lock or unlock a device (a locked device is refused at CONNECT)."""
    device.status = status
    device.save(update_fields=["status", "updated"])
    _publish_after_commit(device)
    return device


@transaction.atomic
def delete_device(*, device: Device) -> None:
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
    # "Last seen" also moves on the device's messages: an event never takes it back.
    fields: dict[str, Any] = {"connect_status": status, "last_status_ts": ts_ms,
                              "last_seen": Case(When(last_seen__gt=moment, then=F("last_seen")),
                                                default=Value(moment),
                                                output_field=DateTimeField())}
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
