"""Every change to products and thing models goes through here (STYLE.md: writes go through
actions): the transaction, then — after commit — the registry for the edge and the time-series
schema."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from webapp.core.errors import Conflict
from webapp.core.types import Actor, recorded_user
from webapp.devices import registry
from webapp.products.choices import ParameterDirection
from webapp.products.models import (
    Command,
    CommandParameter,
    Event,
    EventParameter,
    Product,
    Property,
    Service,
)

_TYPED_KEYS = ("code", "name", "datatype", "unit", "min", "max", "step", "max_length",
               "enum_values", "required", "description")


def _typed(data: dict[str, Any]) -> dict[str, Any]:
    return {key: data[key] for key in _TYPED_KEYS if key in data and data[key] is not None}


def _after_model_change(product: Product) -> None:
    from webapp.telemetry.backends import get_backend

    def publish() -> None:
        fresh = Product.objects.get(pk=product.pk)
        get_backend().ensure_schema(fresh)
        registry.publish_product(fresh)

    transaction.on_commit(publish)


def _create_services(product: Product, services: list[dict[str, Any]]) -> None:
    for order, svc in enumerate(services):
        service = Service.objects.create(product=product, code=svc["code"],
                                         name=svc.get("name", ""),
                                         description=svc.get("description", ""), order=order)
        Property.objects.bulk_create(
            Property(service=service, order=i, access=prop.get("access") or "RE", **_typed(prop))
            for i, prop in enumerate(svc.get("properties") or [])
        )
        for cmd in svc.get("commands") or []:
            command = Command.objects.create(service=service, code=cmd["code"],
                                             name=cmd.get("name", ""),
                                             description=cmd.get("description", ""))
            CommandParameter.objects.bulk_create(
                [CommandParameter(command=command, direction=ParameterDirection.REQUEST,
                                  order=i, **_typed(p))
                 for i, p in enumerate(cmd.get("requests") or [])]
                + [CommandParameter(command=command, direction=ParameterDirection.RESPONSE,
                                    order=i, **_typed(p))
                   for i, p in enumerate(cmd.get("responses") or [])]
            )
        for ev in svc.get("events") or []:
            event = Event.objects.create(service=service, code=ev["code"],
                                         name=ev.get("name", ""),
                                         description=ev.get("description", ""))
            EventParameter.objects.bulk_create(
                EventParameter(event=event, order=i, **_typed(p))
                for i, p in enumerate(ev.get("params") or [])
            )


@transaction.atomic
def create_product(*, acting_user: Actor, data: dict[str, Any]) -> Product:
    """Create a product with its thing model (`services`), in the API form of CONTRACT §4."""
    services = data.pop("services", None) or []
    if Product.objects.filter(identifier=data["identifier"]).exists():
        raise Conflict(f"product {data['identifier']!r} already exists", code="duplicate")
    product = Product.objects.create(created_by=recorded_user(acting_user), **data)
    _create_services(product, services)
    _after_model_change(product)
    return product


@transaction.atomic
def update_product(*, acting_user: Actor, product: Product,
                   data: dict[str, Any]) -> Product:
    """Change product fields and, when `services` is given, replace the thing model.

    Replacing keeps existing storage: the time-series schema only ever gains columns here.
    """
    services = data.pop("services", None)
    for key, value in data.items():
        setattr(product, key, value)
    product.save()
    if services is not None:
        product.services.all().delete()
        _create_services(product, services)
    _after_model_change(product)
    return product


@transaction.atomic
def delete_product(*, acting_user: Actor, product: Product) -> None:
    if product.devices.exists():
        raise Conflict("the product still has devices", code="product_in_use")
    identifier = product.identifier
    product.delete()
    transaction.on_commit(lambda: registry.unpublish_product(identifier))


def republish(product: Product) -> None:
    """Publish a product after an edit made outside the API (the admin's inlines)."""
    _after_model_change(product)
