"""Every change to products and thing models goes through here: the transaction, then — after
commit — the time-series schema and the registry for the edge (`webapp.products.followers`)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from webapp.core.errors import Conflict, DomainError, NotFound
from webapp.core.types import Actor
from webapp.products import codecs, followers
from webapp.products.choices import ParameterDirection
from webapp.products.models import (
    RESERVED_PRODUCT_IDENTIFIERS,
    Command,
    CommandParameter,
    Event,
    EventParameter,
    Product,
    ProductTemplate,
    Property,
    Service,
    reserved_identifier_problem,
)
from webapp.products.thingmodel import thing_model
from webapp.system import scope
from webapp.system.actors import recorded_user

_TYPED_KEYS = ("code", "name", "datatype", "unit", "min", "max", "step", "max_length",
               "enum_values", "required", "description")


def _typed(data: dict[str, Any]) -> dict[str, Any]:
    return {key: data[key] for key in _TYPED_KEYS if key in data and data[key] is not None}


def _after_model_change(product: Product, drops: list[ModelChange] | None = None) -> None:
    """After commit: drop the storage of removed or retyped properties (an explicit
    migration), extend the time-series schema, publish the model to the edge."""
    def publish() -> None:
        fresh = Product.objects.get(pk=product.pk)
        storage = followers.storage()
        for change in drops or []:
            storage.drop_storage(fresh, change.service,
                                 None if change.prop is None else [change.prop])
        storage.ensure_schema(fresh)
        followers.changed(fresh)

    transaction.on_commit(publish)


@dataclass(frozen=True)
class ModelChange:
    """A change of the thing model that existing storage cannot simply follow."""

    service: str
    prop: str | None  # None: the whole service
    change: str  # removed | retyped
    before: str | None = None
    after: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"service": self.service, "property": self.prop, "change": self.change,
                "from": self.before, "to": self.after}


def model_changes(product: Product, services: list[dict[str, Any]]) -> list[ModelChange]:
    """The removals and type changes replacing the model with ``services`` would make."""
    current = {s.code: {p.code: p.datatype for p in s.properties.all()}
               for s in product.services.prefetch_related("properties")}
    wanted = {s["code"]: {p["code"]: p["datatype"] for p in s.get("properties") or []}
              for s in services}
    changes: list[ModelChange] = []
    for service, props in current.items():
        if service not in wanted:
            changes.append(ModelChange(service, None, "removed"))
            continue
        for code, datatype in props.items():
            after = wanted[service].get(code)
            if after is None:
                changes.append(ModelChange(service, code, "removed", datatype))
            elif after != datatype:
                changes.append(ModelChange(service, code, "retyped", datatype, after))
    return changes


def _check_model_change(product: Product, services: list[dict[str, Any]],
                        migrate: bool) -> list[ModelChange]:
    """Refuse removing or retyping what stored data depends on, unless ``migrate``."""
    changes = model_changes(product, services)
    if not changes or migrate:
        return changes
    storage = followers.storage()
    blocked = [c for c in changes if storage.has_data(product, c.service, c.prop)]
    if blocked:
        first = blocked[0]
        what = first.service if first.prop is None else f"{first.service}.{first.prop}"
        raise Conflict(
            _("{what} has stored data and would be {change}; keep it, or repeat with "
              "migrate=true to drop its data").format(what=what, change=first.change),
            code="model_change_refused", extra={"changes": [c.as_dict() for c in blocked]})
    return changes


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


def _from_template(data: dict[str, Any]) -> dict[str, Any]:
    template = data.pop("template", None)
    if template is None:
        return data
    if isinstance(template, str):
        found = ProductTemplate.objects.filter(identifier=template).first()
        if found is None:
            raise NotFound(_("unknown template {identifier}").format(identifier=template),
                           code="unknown_template")
        template = found
    for key in ("product_type", "protocol", "data_format"):
        data.setdefault(key, getattr(template, key))
    if data.get("codec") is None and template.codec:
        data["codec"] = copy.deepcopy(template.codec)
        data.setdefault("codec_samples", copy.deepcopy(template.codec_samples))
    if not data.get("services"):
        data["services"] = copy.deepcopy(template.services)
    if not data.get("description"):
        data["description"] = template.description
    return data


@transaction.atomic
def create_product(*, acting_user: Actor, data: dict[str, Any]) -> Product:
    """Create a product with its thing model (`services`), in the API form (docs/devices.md).

    ``template`` (a template or its identifier) fills the type, protocol, data format and
    model that ``data`` does not give.
    """
    data = _from_template(dict(data))
    services = data.pop("services", None) or []
    if Product.objects.filter(identifier=data["identifier"]).exists():
        raise Conflict(_("product {identifier!r} already exists").format(
            identifier=data["identifier"]), code="duplicate")
    reserved = reserved_identifier_problem(data["identifier"], RESERVED_PRODUCT_IDENTIFIERS)
    if reserved:
        raise DomainError(reserved, code="reserved_identifier")
    # `created_by` is the acting user, whatever a form sent along (the admin's does).
    product = Product.objects.create(**{**data, "created_by": recorded_user(acting_user),
                                        "codec_version": 1 if data.get("codec") else 0})
    _create_services(product, services)
    _check_codec(product)
    _after_model_change(product)
    return product


@transaction.atomic
def update_product(*, product: Product, data: dict[str, Any],
                   migrate: bool = False) -> Product:
    """Change product fields and, when `services` is given, replace the thing model.

    Adding properties or services extends storage. Removing or retyping a property (or
    removing a service) whose data is stored is refused with 409 `model_change_refused`,
    unless ``migrate``: then the stored values of what changed are dropped.
    """
    data = dict(data)
    services = data.pop("services", None)
    drops = _check_model_change(product, services, migrate) if services is not None else []
    # Compared with the stored row: an admin form has already put its values on ``product``.
    stored = Product.objects.filter(pk=product.pk).values("codec", "codec_samples").first()
    if stored is not None and any(key in data and data[key] != stored[key]
                                  for key in ("codec", "codec_samples")):
        product.codec_version += 1
    for key, value in data.items():
        setattr(product, key, value)
    product.save()
    if services is not None:
        product.services.all().delete()
        _create_services(product, services)
    _check_codec(product)
    _after_model_change(product, drops)
    return product


def _check_codec(product: Product) -> None:
    """Refuse (and so roll back) a product whose codec does not fit its protocol, or whose
    sample frames no longer decode to what they expect under its codec and thing model;
    run after every change of either (docs/devices.md "Codecs")."""
    try:
        codec = codecs.check(product.protocol, product.codec, product.codec_samples)
    except codecs.CodecInvalid as exc:
        raise DomainError(exc.reason, code="invalid_codec",
                          extra={"errors": {exc.field: [exc.reason]}}) from None
    if codec is None or not product.codec_samples:
        return
    # A fresh read: the product a view fetched holds its old model in its prefetch cache.
    model = thing_model(Product.objects.get(pk=product.pk))
    failures = codecs.failing_samples(codec, model, product.codec_samples)
    if failures:
        first = failures[0]
        raise DomainError(
            _("the sample frame {sample!r} fails: {reason}").format(**first),
            code="codec_sample_failed", extra={"samples": failures})


@transaction.atomic
def delete_product(*, product: Product) -> None:
    if product.devices.exists():
        raise Conflict("the product still has devices", code="product_in_use")
    identifier = product.identifier
    product.delete()
    transaction.on_commit(lambda: followers.deleted(identifier))


def republish(product: Product) -> None:
    """Publish a product after an edit made outside the API (the admin's inlines)."""
    _after_model_change(product)


# import ---------------------------------------------------------------------------------


def import_product(*, acting_user: Actor, payload: Any, identifier: str | None = None,
                   update: bool = False, migrate: bool = False) -> tuple[Product, bool]:
    """Create (or, with ``update``, replace the model of) a product from a product JSON in our
    form (`GET …/thing-model/`) or the ThingLinks form. Returns the product and whether it
    was created. Invalid input raises `DomainError` with the problems by path."""
    from webapp.products.serializers import ProductSerializer
    from webapp.products.thinglinks import ThingLinksFormatError, from_thinglinks, is_thinglinks

    if not isinstance(payload, dict):
        raise DomainError(_("a product JSON is an object"), code="invalid_import")
    if is_thinglinks(payload):
        try:
            data = from_thinglinks(payload, identifier)
        except ThingLinksFormatError as exc:
            raise DomainError(exc.reason, code="invalid_import",
                              extra={"errors": {exc.path: [exc.reason]}}) from None
    else:
        data = {k: v for k, v in payload.items() if k not in ("id", "created", "updated",
                                                              "device_count", "department")}
        if identifier:
            data["identifier"] = identifier
    existing = Product.objects.filter(identifier=data.get("identifier")).first()
    if existing is not None and acting_user is not None and not scope.restrict(
            Product.objects.filter(pk=existing.pk), acting_user).exists():
        # Identifiers are global (they name the devices' topics), so a taken one cannot be
        # hidden; another department's product is answered as a taken identifier, never
        # updated, whatever `update` says.
        raise Conflict(_("product {identifier!r} already exists").format(
            identifier=existing.identifier), code="duplicate")
    if existing is not None and not update:
        raise Conflict(_("product {identifier!r} already exists; import with update=true to "
                         "replace its model").format(identifier=existing.identifier),
                       code="duplicate")
    serializer = ProductSerializer(instance=existing, data=data)
    if not serializer.is_valid():
        raise DomainError(_("the product JSON is not a valid thing model"),
                          code="invalid_import", extra={"errors": serializer.errors})
    validated = dict(serializer.validated_data)
    validated.setdefault("services", [])
    if existing is not None:
        return update_product(product=existing, data=validated,
                              migrate=migrate), False
    # A new product belongs to the importer's department, as one created through the API.
    validated.setdefault("department", getattr(recorded_user(acting_user), "department", None))
    return create_product(acting_user=acting_user, data=validated), True


# templates ------------------------------------------------------------------------------


class TemplateShared(DomainError):
    code = "template_shared"
    http_status = 403
    default_detail = gettext_lazy("Built-in templates and templates without a department are "
                                  "shared by every department: only superusers change or "
                                  "delete them.")


def check_template_write(acting_user: Actor, template: ProductTemplate | None,
                         department: Any = None) -> None:
    """Built-in and shared templates (no department) are written by superusers only; a
    department's, by users whose data scope reaches it (`department`: the one it gets)."""
    user = recorded_user(acting_user)
    if user is None or user.is_superuser:
        return
    if template is not None and template.pk:
        if template.built_in or template.department_id is None:
            raise TemplateShared()
        if not scope.can_assign(user, template.department):
            raise NotFound(_("Not found."))
    if department is None:
        raise TemplateShared()
    if not scope.can_assign(user, department):
        raise DomainError(_("You cannot give a template to a department outside your data "
                            "scope."), code="department_out_of_scope")


def _template_department(acting_user: Actor, data: dict[str, Any],
                         current: Any = None) -> Any:
    """The department a written template gets: the one given, else its current one, else
    the actor's (a superuser without a department makes a shared template)."""
    if "department" in data:
        return data["department"]
    if current is not None:
        return current
    user = recorded_user(acting_user)
    return getattr(user, "department", None)


@transaction.atomic
def create_template(*, acting_user: Actor, data: dict[str, Any]) -> ProductTemplate:
    department = _template_department(acting_user, data)
    check_template_write(acting_user, None, department)
    if ProductTemplate.objects.filter(identifier=data["identifier"]).exists():
        raise Conflict(_("template {identifier!r} already exists").format(
            identifier=data["identifier"]), code="duplicate")
    return ProductTemplate.objects.create(**{**data, "department": department})


@transaction.atomic
def update_template(*, acting_user: Actor, template: ProductTemplate,
                    data: dict[str, Any]) -> ProductTemplate:
    before = ProductTemplate.objects.filter(pk=template.pk).first() or template
    check_template_write(acting_user, before,
                         _template_department(acting_user, data, before.department))
    for key, value in data.items():
        setattr(template, key, value)
    template.save()
    return template


@transaction.atomic
def delete_template(*, acting_user: Actor, template: ProductTemplate) -> None:
    check_template_write(acting_user, template, template.department)
    template.delete()


def save_as_template(*, acting_user: Actor, product: Product, identifier: str,
                     name: str) -> ProductTemplate:
    """A template from a product's current thing model."""
    from webapp.products.thingmodel import export_services

    services = [_without_ids(s) for s in export_services(product)]
    return create_template(acting_user=acting_user, data={
        "department": product.department,
        "identifier": identifier, "name": name, "description": product.description,
        "product_type": product.product_type, "protocol": product.protocol,
        "data_format": product.data_format, "services": services,
        "codec": product.codec, "codec_samples": product.codec_samples})


def _without_ids(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_ids(v) for k, v in value.items() if k != "id"}
    if isinstance(value, list):
        return [_without_ids(v) for v in value]
    return value
