"""Products in the console: a new product with its thing model, editing a product's thing model,
and its export (our JSON, ThingLinks JSON) and import (see docs/console.md, "Products and the
thing-model editor").

The thing model travels as JSON in the form's `model` field (the `services` list of the API
form, docs/devices.md). The editor (static/console/thingmodel.js) checks it as it is typed,
but the server validates it again with the API's serializers and saves it through
`webapp.products.actions`; every refusal comes back with the place it belongs to (a path such
as `services.0.properties.2.min`). Without JavaScript the model is a JSON text area.
"""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, pgettext, pgettext_lazy

from webapp.console import access
from webapp.console.access import console_view
from webapp.console.views.device_new import departments_for
from webapp.console.views.products import thing_model_rows
from webapp.core.errors import DomainError
from webapp.products import actions
from webapp.products.choices import AccessMode, DataFormat, Datatype, ProductType, Protocol
from webapp.products.models import CODE_RE, IDENTIFIER_RE, Product, ProductTemplate
from webapp.products.serializers import RESERVED_PROPERTY_CODES, ProductSerializer
from webapp.products.thinglinks import (
    ThingLinksFormatError,
    from_thinglinks,
    is_thinglinks,
    to_thinglinks,
)
from webapp.products.thingmodel import export_services
from webapp.products.visibility import visible_templates
from webapp.system.models import Department

# A thing model sent by the console: at most this many bytes of JSON and this many elements
# (services, properties, commands, events and their parameters); larger ones are refused
# before they are validated.
MODEL_MAX_BYTES = 1 * 2**20
MODEL_MAX_ELEMENTS = 2000


class ModelRefused(ValueError):
    """The `model` field cannot be read; `errors` by path."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__(errors)
        self.errors = errors


def templates_for(user: Any) -> QuerySet[ProductTemplate]:
    from webapp.products.choices import ProductStatus

    return visible_templates(ProductTemplate.objects.filter(status=ProductStatus.ENABLED),
                             user).order_by("name")


class NewProductForm(forms.Form):
    identifier = forms.RegexField(label=gettext_lazy("Identifier"), regex=IDENTIFIER_RE,
                                  max_length=64, error_messages={"invalid": gettext_lazy(
                                      "Letters, digits, '.', '_' and '-', starting with a "
                                      "letter or a digit (at most 64).")})
    # "Name" alone is translated by django-celery-beat's catalogue (a task's name)
    name = forms.CharField(label=pgettext_lazy("product", "Name"), max_length=100)
    department = forms.ModelChoiceField(label=gettext_lazy("Department"),
                                        queryset=Department.objects.none(), required=False)
    product_type = forms.ChoiceField(label=gettext_lazy("Type"), choices=ProductType.choices,
                                     initial=ProductType.COMMON)
    protocol = forms.ChoiceField(label=gettext_lazy("Protocol"), choices=Protocol.choices,
                                 initial=Protocol.MQTT)
    data_format = forms.ChoiceField(label=gettext_lazy("Data format"),
                                    choices=DataFormat.choices, initial=DataFormat.JSON)
    description = forms.CharField(label=gettext_lazy("Description"), required=False,
                                  widget=forms.Textarea(attrs={"rows": 2}))
    template = forms.ModelChoiceField(
        label=gettext_lazy("Template"), queryset=ProductTemplate.objects.none(), required=False,
        to_field_name="identifier", help_text=gettext_lazy(
            "Optional: start from a template; its thing model is used when the editor "
            "below is left empty."))

    def __init__(self, user: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        fields: Any = self.fields
        fields["department"].queryset = departments_for(user)
        fields["template"].queryset = templates_for(user)
        if not self.is_bound:
            self.initial.setdefault("department", getattr(user, "department_id", None))


# the model field ------------------------------------------------------------------------


def _count_elements(services: list[Any]) -> int:
    count = 0
    for svc in services:
        count += 1
        if not isinstance(svc, dict):
            continue
        for key in ("properties", "commands", "events"):
            items = svc.get(key)
            if not isinstance(items, list):
                continue
            count += len(items)
            for item in items:
                if isinstance(item, dict):
                    for sub in ("requests", "responses", "params"):
                        if isinstance(item.get(sub), list):
                            count += len(item[sub])
    return count


def read_model(text: str) -> list[dict[str, Any]]:
    """The `services` list of the `model` field's JSON (a list, or an object with
    `services`), refused with reasons when it is too large or not such JSON."""
    if len(text.encode()) > MODEL_MAX_BYTES:
        raise ModelRefused({"model": [_("The thing model is larger than {n} KiB.").format(
            n=MODEL_MAX_BYTES // 1024)]})
    if not text.strip():
        return []
    try:
        data = json.loads(text)
    except RecursionError:
        raise ModelRefused({"model": [_("The thing model is nested too deeply.")]}) from None
    except ValueError as exc:
        raise ModelRefused({"model": [_("The thing model is not JSON: {error}").format(
            error=exc)]}) from None
    if isinstance(data, dict):
        data = data.get("services", [])
    if not isinstance(data, list):
        raise ModelRefused({"model": [_("The thing model is a list of services.")]})
    if _count_elements(data) > MODEL_MAX_ELEMENTS:
        raise ModelRefused({"model": [_(
            "The thing model has more than {n} elements (services, properties, commands, "
            "events and parameters).").format(n=MODEL_MAX_ELEMENTS)]})
    return data


def flatten_errors(errors: Any, prefix: str = "") -> dict[str, list[str]]:
    """DRF's nested errors as {path: [messages]}; `non_field_errors` belong to the element."""
    flat: dict[str, list[str]] = {}

    def walk(value: Any, where: str) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                if key == "non_field_errors":
                    walk(inner, where)
                else:
                    walk(inner, f"{where}.{key}" if where else str(key))
        elif isinstance(value, list):
            if all(isinstance(v, str) for v in value):
                if value:
                    flat.setdefault(where or "model", []).extend(str(v) for v in value)
            else:
                for i, inner in enumerate(value):
                    walk(inner, f"{where}.{i}" if where else str(i))
        elif value:
            flat.setdefault(where or "model", []).append(str(value))

    walk(errors, prefix)
    return flat


def _cleaned(value: Any) -> Any:
    """The model without ids (an export's `id`s are not ours to keep)."""
    if isinstance(value, dict):
        return {k: _cleaned(v) for k, v in value.items() if k != "id"}
    if isinstance(value, list):
        return [_cleaned(v) for v in value]
    return value


# pages ----------------------------------------------------------------------------------


def _editor_context(request: HttpRequest, services: list[Any], errors: dict[str, list[str]],
                    ) -> dict[str, Any]:
    return {
        "model_json": json.dumps(services, ensure_ascii=False, indent=1),
        "model_data": services,
        "model_errors": errors,
        "model_error_list": sorted(errors.items()),
        "editor_config": {
            "datatypes": [[v, str(label)] for v, label in Datatype.choices],
            "access": [[v, str(label)] for v, label in AccessMode.choices],
            "code_re": CODE_RE,
            "reserved": sorted(RESERVED_PROPERTY_CODES),
            "max_elements": MODEL_MAX_ELEMENTS,
            "text": _editor_texts(),
        },
        "readable": thing_model_rows(_readable(services)),
    }


def _readable(services: list[Any]) -> list[dict[str, Any]]:
    """The model as the product page shows it (tolerant of what an invalid model lacks)."""
    def fields(items: Any, with_access: bool = False) -> list[dict[str, Any]]:
        out = []
        for p in items if isinstance(items, list) else []:
            if not isinstance(p, dict):
                continue
            datatype = p.get("datatype") if p.get("datatype") in Datatype.values else "string"
            item: dict[str, Any] = {
                    "code": str(p.get("code", "")), "name": str(p.get("name") or ""),
                    "datatype": datatype, "unit": p.get("unit") or "",
                    "min": _number(p.get("min")), "max": _number(p.get("max")),
                    "step": _number(p.get("step")),
                    "max_length": p.get("max_length") if isinstance(p.get("max_length"), int)
                    else None,
                    "enum_values": p.get("enum_values") if isinstance(p.get("enum_values"),
                                                                       list) else [],
                    "required": bool(p.get("required")),
                    "description": str(p.get("description") or "")}
            if with_access:
                item["access"] = p.get("access") if p.get("access") in AccessMode.values \
                    else AccessMode.RE
            out.append(item)
        return out

    rows = []
    for svc in services:
        if not isinstance(svc, dict):
            continue
        rows.append({
            "code": str(svc.get("code", "")), "name": str(svc.get("name") or ""),
            "description": str(svc.get("description") or ""),
            "properties": fields(svc.get("properties"), with_access=True),
            "commands": [{"code": str(c.get("code", "")), "name": str(c.get("name") or ""),
                          "description": str(c.get("description") or ""),
                          "requests": fields(c.get("requests")),
                          "responses": fields(c.get("responses"))}
                         for c in svc.get("commands") or [] if isinstance(c, dict)],
            "events": [{"code": str(e.get("code", "")), "name": str(e.get("name") or ""),
                        "description": str(e.get("description") or ""),
                        "params": fields(e.get("params"))}
                       for e in svc.get("events") or [] if isinstance(e, dict)],
        })
    return rows


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _editor_texts() -> dict[str, str]:
    """What the editor's script shows, translated here (no JavaScript catalogue)."""
    return {
        "service": _("Service"), "add_service": _("Add service"),
        "properties": _("Properties"), "commands": _("Commands"), "events": _("Events"),
        "add_property": _("Add property"), "add_command": _("Add command"),
        "add_event": _("Add event"), "requests": _("Request parameters"),
        "responses": _("Response parameters"), "params": _("Event fields"),
        "add_parameter": _("Add parameter"), "add_field": _("Add field"),
        "code": _("Code"), "name": pgettext("product", "Name"), "datatype": _("Datatype"),
        "unit": _("Unit"), "min": _("Minimum"), "max": _("Maximum"), "step": _("Step"),
        "max_length": _("Max length"), "enum_values": _("Enum values"),
        "add_value": _("Add value"), "access": _("Access"), "required": _("Required"),
        "description": _("Description"), "move_up": _("Move up"),
        "move_down": _("Move down"), "remove": _("Remove"), "empty": _("None yet."),
        "no_services": _("No services yet: add one to start the thing model."),
        "err_code": _("Use 1-50 letters, digits or '_', starting with a letter."),
        "err_reserved": _("{code} is a reserved name"),
        "err_duplicate": _("Another element here has the code {code} (codes are "
                           "case-insensitive)."),
        "err_number": _("Not a number."),
        "err_integer": _("Give a whole number from 1 to 65535."),
        "err_min_max": _("min is greater than max"),
        "err_enum": _("an enum needs its values"),
        "err_enum_value": _("An enum value must not be empty."),
        "err_enum_duplicate": _("This value is listed twice."),
        "err_too_long": _("At most {n} characters."),
        "err_too_many": _("The thing model has more than {n} elements."),
        "errors_summary": _("{n} problem(s) in the thing model: fix them before saving."),
    }


def _new_page(request: HttpRequest, form: NewProductForm, services: list[Any],
              errors: dict[str, list[str]], status: int = 200) -> HttpResponse:
    return TemplateResponse(request, "console/products/new.html", {
        "form": form, **_editor_context(request, services, errors)}, status=status)


def _imported(request: HttpRequest) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """The product JSON of the uploaded file (ours or ThingLinks) in our API form, and the
    problems found reading and validating it (an empty model when it cannot be read)."""
    upload = request.FILES.get("import_file")
    if upload is None:
        return {}, {"import_file": [_("Choose a .json file to import.")]}
    if upload.size is not None and upload.size > MODEL_MAX_BYTES:
        return {}, {"import_file": [_("The file is larger than {n} KiB.").format(
            n=MODEL_MAX_BYTES // 1024)]}
    try:
        payload = json.loads(upload.read().decode("utf-8-sig"))
    except RecursionError:
        return {}, {"import_file": [_("The thing model is nested too deeply.")]}
    except (UnicodeDecodeError, ValueError) as exc:
        return {}, {"import_file": [_("the file is not JSON: {error}").format(error=exc)]}
    if isinstance(payload, list):
        payload = {"services": payload}
    if not isinstance(payload, dict):
        return {}, {"import_file": [_("a product JSON is an object")]}
    if is_thinglinks(payload):
        try:
            data = from_thinglinks(payload)
        except ThingLinksFormatError as exc:
            return {}, {"import_file": [f"{exc.path}: {exc.reason}"]}
    else:
        data = dict(payload)
    services = data.get("services")
    if not isinstance(services, list):
        return {}, {"import_file": [_("The file has no list of services.")]}
    try:
        services = read_model(json.dumps(services))
    except ModelRefused as exc:
        return {}, {"import_file": exc.errors["model"]}
    data["services"] = _cleaned(services)
    return data, validate_services(data["services"])


def _posted_model(request: HttpRequest, product: Product | None = None) -> list[Any]:
    """The model the form carried (an import that could not be read keeps it in the editor);
    the product's when that is unreadable too."""
    try:
        return _cleaned(read_model(request.POST.get("model", "")))
    except ModelRefused:
        return _cleaned(export_services(product)) if product is not None else []


def validate_services(services: list[Any], product: Product | None = None
                      ) -> dict[str, list[str]]:
    """The problems of a model by path: the API's rules (enum values included: empty,
    repeated, not texts or numbers)."""
    serializer = ProductSerializer(instance=product, data={"services": services}, partial=True)
    return {} if serializer.is_valid() else flatten_errors(serializer.errors)


@console_view("products.view_product", "products.add_product")
def product_new(request: HttpRequest) -> HttpResponse:
    user: Any = request.user
    if request.method != "POST":
        return _new_page(request, NewProductForm(user), [], {})
    post = request.POST.copy()
    if request.POST.get("action") == "import":
        data, errors = _imported(request)
        for key in ("identifier", "name", "protocol", "product_type", "data_format",
                    "description"):
            if not post.get(key) and isinstance(data.get(key), str):
                post[key] = data[key]
        services = data.get("services") if "services" in data else _posted_model(request)
        return _new_page(request, NewProductForm(user, initial=post.dict()), services or [],
                         errors, status=200 if not errors else 400)
    form = NewProductForm(user, post)
    try:
        services = read_model(post.get("model", ""))
    except ModelRefused as exc:
        form.is_valid()
        return _new_page(request, form, [], exc.errors, status=400)
    if not form.is_valid():
        return _new_page(request, form, services, {}, status=400)
    cleaned = form.cleaned_data
    template = cleaned.get("template")
    payload: dict[str, Any] = {
        "identifier": cleaned["identifier"], "name": cleaned["name"],
        "product_type": cleaned["product_type"], "protocol": cleaned["protocol"],
        "data_format": cleaned["data_format"], "description": cleaned["description"],
        "services": _cleaned(services),
    }
    if template is not None:
        payload["template"] = template.identifier
    department = cleaned.get("department") or getattr(user, "department", None)
    payload["department"] = department.pk if department is not None else None
    serializer = ProductSerializer(data=payload, context={"request": request})
    errors = validate_services(payload["services"])
    if not serializer.is_valid() or errors:
        errors = {**flatten_errors(serializer.errors), **errors}
        for name in list(errors):
            if name in form.fields:
                for message in errors.pop(name):
                    form.add_error(name, message)
        return _new_page(request, form, services, errors, status=400)
    validated = dict(serializer.validated_data)
    if not services:
        validated.pop("services", None)  # a template's model fills an empty one
    try:
        product = actions.create_product(acting_user=user, data=validated)
    except DomainError as exc:
        field = "identifier" if exc.code == "duplicate" else None
        errors = flatten_errors(exc.extra.get("errors") or {})
        if field or not errors:
            form.add_error(field, str(exc))
        return _new_page(request, form, services, errors, status=400)
    return redirect("console:product", identifier=product.identifier)


def _product(request: HttpRequest, identifier: str) -> Product:
    user: Any = request.user
    return get_object_or_404(access.products_for(user).select_related("department"),
                             identifier=identifier)


def _model_page(request: HttpRequest, product: Product, services: list[Any],
                errors: dict[str, list[str]], refused: Any = None, status: int = 200
                ) -> HttpResponse:
    user: Any = request.user
    return TemplateResponse(request, "console/products/model.html", {
        "product": product, "refused": refused,
        "device_total": access.devices_for(user).filter(product=product).count(),
        "can_add": user.has_perm("products.add_product"),
        **_editor_context(request, services, errors)}, status=status)


@console_view("products.view_product", "products.change_product")
def product_model(request: HttpRequest, identifier: str) -> HttpResponse:
    product = _product(request, identifier)
    if request.method != "POST":
        return _model_page(request, product, _cleaned(export_services(product)), {})
    if request.POST.get("action") == "import":
        data, errors = _imported(request)
        services = data["services"] if "services" in data else _posted_model(request, product)
        return _model_page(request, product, services or [], errors,
                           status=400 if errors else 200)
    try:
        services = _cleaned(read_model(request.POST.get("model", "")))
    except ModelRefused as exc:
        return _model_page(request, product, _cleaned(export_services(product)), exc.errors,
                           status=400)
    errors = validate_services(services, product)
    if errors:
        return _model_page(request, product, services, errors, status=400)
    serializer = ProductSerializer(instance=product, data={"services": services}, partial=True)
    serializer.is_valid()
    try:
        actions.update_product(product=product, data={"services": serializer.validated_data[
            "services"]}, migrate=request.POST.get("migrate") == "1")
    except DomainError as exc:
        return _model_page(request, product, services,
                           flatten_errors(exc.extra.get("errors") or {}),
                           refused={"reason": str(exc), "code": exc.code,
                                    "changes": exc.extra.get("changes") or [],
                                    "samples": exc.extra.get("samples") or []},
                           status=409 if exc.code == "model_change_refused" else 400)
    from django.contrib import messages

    messages.success(request, _("The thing model is saved."))
    return redirect("console:product", identifier=product.identifier)


def platform_json(product: Product) -> dict[str, Any]:
    """The product JSON `GET /api/v1/products/{identifier}/thing-model/` answers."""
    return {
        "identifier": product.identifier, "name": product.name,
        "product_type": product.product_type, "protocol": product.protocol,
        "data_format": product.data_format, "manufacturer": product.manufacturer,
        "model": product.model, "device_type": product.device_type,
        "description": product.description, "status": product.status,
        "services": export_services(product), "codec": product.codec,
        "codec_samples": product.codec_samples,
    }


@console_view("products.view_product")
def product_export(request: HttpRequest, identifier: str) -> HttpResponse:
    """The product and its model as a .json download: ours, or ThingLinks with
    `?dialect=thinglinks`."""
    product = _product(request, identifier)
    if request.GET.get("dialect") == "thinglinks":
        body = to_thinglinks(product, export_services(product))
        name = f"{product.identifier}.thinglinks.json"
    else:
        body = platform_json(product)
        name = f"{product.identifier}.json"
    response = JsonResponse(body, json_dumps_params={"ensure_ascii": False, "indent": 2})
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


def model_url(product: Product) -> str:
    return reverse("console:product-model", args=[product.identifier])


urlpatterns = [
    path("products/new/", product_new, name="product-new"),
    path("products/<str:identifier>/model/", product_model, name="product-model"),
    path("products/<str:identifier>/export/", product_export, name="product-export"),
]
