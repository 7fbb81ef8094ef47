"""The thing model in its three forms: SQL rows, the API/JSON form (docs/devices.md) and the
compact form the edge validates with (docs/bus.md)."""

from __future__ import annotations

from typing import Any

from edge.thingmodel import ThingModel
from webapp.products.choices import ParameterDirection
from webapp.products.models import Product, TypedField

_FIELD_KEYS = ("code", "name", "datatype", "unit", "min", "max", "step", "max_length",
               "required", "description")


def field_json(field: TypedField) -> dict[str, Any]:
    data = {"id": field.pk, **{key: getattr(field, key) for key in _FIELD_KEYS}}
    data["enum_values"] = field.enum_values or []
    return data


def _prefetched(product: Product) -> list:
    if "services" in getattr(product, "_prefetched_objects_cache", {}):
        return list(product.services.all())  # a list view prefetched the whole model
    return list(product.services.prefetch_related(
        "properties", "commands__parameters", "events__parameters"))


def export_services(product: Product) -> list[dict[str, Any]]:
    """The `services` list of the API form, as `POST /api/v1/products/` accepts it."""
    services = []
    for service in _prefetched(product):
        services.append({
            "id": service.pk, "code": service.code, "name": service.name,
            "description": service.description,
            "properties": [
                {**field_json(p), "access": p.access} for p in service.properties.all()
            ],
            "commands": [
                {
                    "id": c.pk, "code": c.code, "name": c.name, "description": c.description,
                    "requests": [field_json(p) for p in c.parameters.all()
                                 if p.direction == ParameterDirection.REQUEST],
                    "responses": [field_json(p) for p in c.parameters.all()
                                  if p.direction == ParameterDirection.RESPONSE],
                }
                for c in service.commands.all()
            ],
            "events": [
                {"id": e.pk, "code": e.code, "name": e.name, "description": e.description,
                 "params": [field_json(p) for p in e.parameters.all()]}
                for e in service.events.all()
            ],
        })
    return services


def compact_model(product: Product) -> dict[str, Any]:
    """The form `edge.thingmodel.ThingModel.from_json` reads."""
    services: dict[str, Any] = {}
    for service in _prefetched(product):
        services[service.code] = {
            "properties": {p.code: p.spec() for p in service.properties.all()},
            "commands": {
                c.code: {
                    "requests": {p.code: p.spec() for p in c.parameters.all()
                                 if p.direction == ParameterDirection.REQUEST},
                    "responses": {p.code: p.spec() for p in c.parameters.all()
                                  if p.direction == ParameterDirection.RESPONSE},
                }
                for c in service.commands.all()
            },
            "events": {
                e.code: {"params": {p.code: p.spec() for p in e.parameters.all()}}
                for e in service.events.all()
            },
        }
    return {"services": services}


def _spec(field: dict[str, Any]) -> dict[str, Any]:
    spec = {key: field.get(key) for key in ("datatype", "min", "max", "step", "max_length",
                                            "unit")}
    return {**spec, "enum": field.get("enum_values") or None,
            "required": bool(field.get("required")), "access": field.get("access") or "RE"}


def model_of_services(services: list[dict[str, Any]]) -> ThingModel:
    """The validating model of a `services` list in the API form (a model not saved yet)."""
    return ThingModel.from_json({"services": {
        svc["code"]: {
            "properties": {p["code"]: _spec(p) for p in svc.get("properties") or []},
            "commands": {
                c["code"]: {"requests": {p["code"]: _spec(p) for p in c.get("requests") or []},
                            "responses": {p["code"]: _spec(p)
                                          for p in c.get("responses") or []}}
                for c in svc.get("commands") or []
            },
            "events": {e["code"]: {"params": {p["code"]: _spec(p)
                                              for p in e.get("params") or []}}
                       for e in svc.get("events") or []},
        }
        for svc in services
    }})


def thing_model(product: Product) -> ThingModel:
    """The validating model of a product, the same one the edge uses."""
    return ThingModel.from_json(compact_model(product))
