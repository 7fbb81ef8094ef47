"""Every change to ACL rules, registration secrets and envelope keys goes through here: the
transaction, then — after commit — the registry for the edge. Also the answer to a device
that registers itself (the `register` uplink event)."""

from __future__ import annotations

import logging
import secrets
import string
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from edge.codecs import thinglinks as tl
from edge.crypto import encrypt_secret, generate_secret
from webapp.access import registry
from webapp.access.models import AclRule, DeviceKeys, ProductRegistration, SelfRegistration
from webapp.core.errors import DomainError
from webapp.core.redis import get_redis, keys
from webapp.devices import actions as device_actions
from webapp.devices import downlink
from webapp.devices.choices import DeviceStatus
from webapp.devices.models import Device
from webapp.products.models import Product

log = logging.getLogger(__name__)

# How long a `register` event is remembered as answered (redeliveries come much sooner).
REGISTRATION_MEMORY = 3600


# -- ACL rules ------------------------------------------------------------------------------


def _publish_targets(*rules: AclRule) -> None:
    products = {r.product_id for r in rules if r.device_id is None}
    devices = {r.device_id for r in rules if r.device_id is not None}

    def publish() -> None:
        for product in Product.objects.filter(pk__in=products):
            registry.publish_product(product)
        for device in Device.objects.filter(pk__in=devices):
            registry.publish_device(device)

    transaction.on_commit(publish)


def _check_rule(rule: AclRule) -> None:
    device = rule.device
    if device is not None and device.product_id != rule.product_id:
        raise DomainError(_("device {device} is not a device of product {product}").format(
            device=device.identifier, product=rule.product.identifier),
            code="device_not_in_product")
    rule.full_clean()


@transaction.atomic
def create_rule(*, product: Product, topic: str, decision: str,
                action: str = "all", device: Device | None = None, priority: int = 0,
                enabled: bool = True, description: str = "") -> AclRule:
    """A product-wide rule, or with ``device`` one for a device of the product."""
    rule = AclRule(product=product, device=device, topic=topic, decision=decision,
                   action=action, priority=priority, enabled=enabled, description=description)
    _check_rule(rule)
    rule.save()
    _publish_targets(rule)
    return rule


@transaction.atomic
def update_rule(*, rule: AclRule, data: dict[str, Any]) -> AclRule:
    before = AclRule(product_id=rule.product_id, device_id=rule.device_id)
    for name, value in data.items():
        setattr(rule, name, value)
    _check_rule(rule)
    rule.save()
    _publish_targets(before, rule)
    return rule


@transaction.atomic
def delete_rule(*, rule: AclRule) -> None:
    gone = AclRule(product_id=rule.product_id, device_id=rule.device_id)
    rule.delete()
    _publish_targets(gone)


# -- dynamic registration -------------------------------------------------------------------


def _publish_product_later(product: Product) -> None:
    transaction.on_commit(lambda: registry.publish_product(product))


@transaction.atomic
def enable_registration(*, product: Product) -> tuple[ProductRegistration,
                                                                         str]:
    """Turn dynamic registration on with a new product secret; returns it with the plain
    secret, shown this once."""
    plain = generate_secret()
    registration, _created = ProductRegistration.objects.update_or_create(
        product=product, defaults={"enabled": True, "secret_encrypted": encrypt_secret(plain)})
    _publish_product_later(product)
    return registration, plain


@transaction.atomic
def disable_registration(*, registration: ProductRegistration) -> None:
    product = registration.product
    registration.delete()
    _publish_product_later(product)


def _answer(node: str, device: str, status: int, description: str, secret: str | None,
            mid: int | None, conn: str) -> None:
    """The answer goes to the registering connection alone (``conn``), never to the
    device's topic at large: the edge sends it to that connection only."""
    payload = tl.register_response(device, status, description, secret, mid)
    downlink.publish(node, downlink.topic(device, tl.REGISTER_RESPONSE), payload,
                     device=device, conn=conn)


@transaction.atomic
def _register(product_id: str, identifier: str, body: dict[str, Any]) -> tuple[int, str,
                                                                              str | None]:
    product = Product.objects.filter(identifier=product_id).first()
    registration = (ProductRegistration.objects.filter(product=product, enabled=True).first()
                    if product is not None else None)
    if product is None or registration is None:
        return 1, _("product {product} does not allow dynamic registration").format(
            product=product_id), None
    device = Device.objects.select_for_update().filter(identifier=identifier).first()
    if device is None:
        name = body.get("name")
        description = body.get("description")
        try:
            device, plain = device_actions.create_device(
                acting_user=None, product=product, identifier=identifier,
                name=name[:100] if isinstance(name, str) else "",
                description=description if isinstance(description, str) else "",
                department=product.department)
        except DomainError as exc:
            return 1, str(exc.detail), None
        SelfRegistration.objects.create(device=device, registered=timezone.now())
        return 0, "successful", plain
    # Registered by itself a moment ago but never connected: its answer may have been lost.
    # A device provisioned by an administrator, or registered long ago, keeps its secret.
    window = timedelta(seconds=settings.REGISTRATION_RETRY_WINDOW)
    if (device.product_id != product.pk or device.status != DeviceStatus.UNACTIVATED
            or not SelfRegistration.objects.filter(
                device=device, registered__gte=timezone.now() - window).exists()):
        return 1, _("device {device} is already registered").format(device=identifier), None
    return 0, "successful", device_actions.rotate_secret(device=device)


def register_device(event: dict[str, Any]) -> None:
    """Answer one `register` event (docs/bus.md): create the device, or give a device that
    registered itself within `REGISTRATION_RETRY_WINDOW` but never connected a new secret,
    and send the result to the registering connection (`conn`) on the node holding it.
    Idempotent: an event answered once is not answered again."""
    identifier = event.get("dev")
    product_id = event.get("prod")
    node = event.get("node")
    ts = event.get("ts")
    conn = event.get("conn")
    if not (isinstance(identifier, str) and isinstance(product_id, str) and isinstance(node, str)
            and isinstance(ts, int) and isinstance(conn, str) and conn
            and tl.valid_identifier(identifier)):
        log.warning("ignoring a malformed register event: %r", event)
        return
    marker = keys().registration_done(identifier, ts)
    r = get_redis()
    if r.exists(marker):
        return
    raw_body = event.get("body")
    body: dict[str, Any] = raw_body if isinstance(raw_body, dict) else {}
    mid = event.get("mid") if isinstance(event.get("mid"), int) else None
    status, description, secret = _register(product_id, identifier, body)
    _answer(node, identifier, status, description, secret, mid, conn)
    r.set(marker, "1", ex=REGISTRATION_MEMORY)
    log.info("registration of %s in %s: %s", identifier, product_id, description)


# -- envelope keys --------------------------------------------------------------------------


def _random_text(length: int) -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))


@transaction.atomic
def set_device_keys(*, device: Device, sign_key: str | None = None,
                    encrypt_key: str | None = None,
                    encrypt_vector: str | None = None) -> tuple[DeviceKeys, dict[str, str]]:
    """Give a device its envelope keys (random ones for those not given: a 32-character sign
    key, a 16-character key and IV, for SM4 or AES-128); returns the plain keys, shown this
    once."""
    plain = {
        "sign_key": sign_key or _random_text(32),
        "encrypt_key": encrypt_key or _random_text(16),
        "encrypt_vector": encrypt_vector or _random_text(16),
    }
    if len(plain["encrypt_vector"].encode()) != 16 or len(plain["encrypt_key"].encode()) not in (
            16, 24, 32):
        raise DomainError(_("the encryption key must be 16, 24 or 32 bytes and the IV 16 bytes"),
                          code="invalid_keys")
    device_keys, _created = DeviceKeys.objects.update_or_create(device=device, defaults={
        f"{name}_encrypted": encrypt_secret(value) for name, value in plain.items()})
    transaction.on_commit(lambda: registry.publish_device(device))
    return device_keys, plain


@transaction.atomic
def delete_device_keys(*, device_keys: DeviceKeys) -> None:
    device = device_keys.device
    device_keys.delete()
    transaction.on_commit(lambda: registry.publish_device(device))
