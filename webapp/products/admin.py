from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin
from django.forms.fields import InvalidJSONInput
from django.forms.models import BaseInlineFormSet
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _
from rest_framework.exceptions import ValidationError

from webapp.products import actions, codecs, followers
from webapp.products.models import (
    Command,
    CommandParameter,
    Event,
    EventParameter,
    Product,
    ProductTemplate,
    Property,
    Service,
)
from webapp.products.serializers import ServiceSerializer
from webapp.products.thinglinks import ThingLinksFormatError, from_thinglinks, is_thinglinks
from webapp.products.thingmodel import export_services, model_of_services, thing_model
from webapp.products.visibility import visible_templates
from webapp.system.admin_scope import ScopedAdminMixin, ScopedRelatedFieldListFilter


class IndentedJSONField(forms.JSONField):
    """A JSON box that shows its value indented, for people to read and edit."""

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, InvalidJSONInput):
            return value
        return json.dumps(value, ensure_ascii=False, indent=2, cls=self.encoder)


class ProductForm(forms.ModelForm):
    template = forms.ModelChoiceField(
        label=_("Start from template"), required=False,
        queryset=ProductTemplate.objects.filter(status="enabled"),
        help_text=_("New products only: the template's model is used when the thing model "
                    "below is empty."))
    thing_model = IndentedJSONField(
        label=_("Thing model (JSON)"), required=False,
        help_text=_("The `services` list of the API form, or a whole ThingLinks product JSON. "
                    "Leave empty to edit services below one by one; when given, it replaces "
                    "the whole model."),
        widget=forms.Textarea(attrs={"rows": 12, "cols": 100, "style": "font-family:monospace"}),
    )
    migrate = forms.BooleanField(
        label=_("Migrate stored data"), required=False,
        help_text=_("Allow removing or retyping properties that have stored data: their "
                    "stored values are dropped."))

    class Meta:
        model = Product
        fields = "__all__"
        widgets = {name: forms.Textarea(attrs={"rows": 12, "cols": 100,
                                               "style": "font-family:monospace"})
                   for name in ("codec", "codec_samples")}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            # This form's own initial: the declared field is shared by every form class the
            # admin builds, so an initial set on it showed the product last opened on the
            # next add page.
            self.initial.setdefault("thing_model", export_services(self.instance))

    def clean_thing_model(self) -> list[dict[str, Any]] | None:
        value = self.cleaned_data.get("thing_model")
        if value in (None, "", []):
            return None
        if isinstance(value, dict) and is_thinglinks(value):
            try:
                value = from_thinglinks(value, self.instance.identifier or None)["services"]
            except ThingLinksFormatError as exc:
                raise forms.ValidationError(str(exc)) from exc
        serializer = ServiceSerializer(data=value, many=True)
        try:
            serializer.is_valid(raise_exception=True)
        except ValidationError as exc:
            raise forms.ValidationError(json.dumps(exc.detail, default=str)) from exc
        return serializer.validated_data

    def clean_codec_samples(self) -> Any:
        """No samples (an empty or missing field) is an empty list, as the API stores it."""
        return self.cleaned_data.get("codec_samples") or []

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        self._check_codec(cleaned)
        services = cleaned.get("thing_model")
        if self.instance.pk and services is not None and not cleaned.get("migrate"):
            blocked = _blocked_changes(self.instance, actions.model_changes(self.instance,
                                                                           services))
            if blocked:
                raise forms.ValidationError(_(
                    "Stored data depends on what this change removes or retypes: {changes}. "
                    "Keep them, or tick \"Migrate stored data\" to drop that data.").format(
                        changes=", ".join(blocked)))
        return cleaned


    def _check_codec(self, cleaned: dict[str, Any]) -> None:
        """The codec fits the protocol and its sample frames decode as they expect under
        the model being saved (the JSON one given, else the product's current one)."""
        if any(name in self.errors for name in ("protocol", "codec", "codec_samples",
                                                "thing_model")):
            return
        samples = cleaned.get("codec_samples") or []
        try:
            codec = codecs.check(cleaned.get("protocol", ""), cleaned.get("codec"), samples)
        except codecs.CodecInvalid as exc:
            self.add_error(exc.field if exc.field in self.fields else None, exc.reason)
            return
        if codec is None or not samples:
            return
        services = cleaned.get("thing_model")
        if services is not None:
            model = model_of_services(services)
        elif self.instance.pk:
            model = thing_model(Product.objects.get(pk=self.instance.pk))
        else:  # a new product: the model of its template, if any
            template = cleaned.get("template")
            model = model_of_services(template.services if template is not None else [])
        failures = codecs.failing_samples(codec, model, samples)
        if failures:
            self.add_error("codec_samples", "; ".join(
                f"{f['sample']}: {f['reason']}" for f in failures))


def _blocked_changes(product: Product, changes: list[actions.ModelChange]) -> list[str]:
    storage = followers.storage()
    return [c.service if c.prop is None else f"{c.service}.{c.prop}"
            for c in changes if storage.has_data(product, c.service, c.prop)]


class ServiceInline(admin.TabularInline):
    model = Service
    extra = 0
    fields = ("code", "name", "description", "order", "edit")
    readonly_fields = ("edit",)
    show_change_link = True

    @admin.display(description=_("properties, commands, events"))
    def edit(self, obj: Service) -> str:
        if not obj.pk:
            return "-"
        return format_html("{} / {} / {}", obj.properties.count(), obj.commands.count(),
                           obj.events.count())


@admin.register(Product)
class ProductAdmin(ScopedAdminMixin, admin.ModelAdmin):
    form = ProductForm
    list_display = ("identifier", "name", "product_type", "protocol", "status", "manufacturer",
                    "created")
    list_filter = ("product_type", "protocol", "status")
    search_fields = ("identifier", "name", "manufacturer", "model")
    inlines = [ServiceInline]
    readonly_fields = ("created_by", "created", "updated")

    def get_fields(self, request, obj=None):
        fields = list(super().get_fields(request, obj))
        if obj is not None and "template" in fields:
            fields.remove("template")
        return fields

    def save_model(self, request, obj, form, change):
        services = form.cleaned_data.get("thing_model")
        fields = {f.name: form.cleaned_data[f.name] for f in Product._meta.fields
                  if f.name in form.cleaned_data}
        if change:
            saved = actions.update_product(product=obj,
                                           data={**fields, "services": services}
                                           if services is not None else fields,
                                           migrate=form.cleaned_data.get("migrate", False))
        else:
            data = {**fields, "services": services or []}
            if form.cleaned_data.get("template") is not None:
                data["template"] = form.cleaned_data["template"]
            saved = actions.create_product(acting_user=request.user, data=data)
        obj.pk = saved.pk
        obj._state = saved._state
        form.instance = saved

    def save_related(self, request, form, formsets, change):
        if form.cleaned_data.get("thing_model") is None:
            super().save_related(request, form, formsets, change)
        else:
            # The JSON replaced the whole model; the service rows shown are stale.
            form.save_m2m()
            for formset in formsets:
                formset.new_objects = formset.changed_objects = formset.deleted_objects = []
        actions.republish(form.instance)


class GuardedPropertyFormSet(BaseInlineFormSet):
    """Removing a property, or changing its code or type, is refused while its data is stored
    (use the product's thing model JSON with "Migrate stored data" for that)."""

    def clean(self) -> None:
        super().clean()
        service = self.instance
        if not service.pk:
            return
        storage = followers.storage()
        for form in self.forms:
            prop = form.instance
            if not prop.pk:
                continue
            original = Property.objects.filter(pk=prop.pk).values("code", "datatype").first()
            if original is None:
                continue
            deleted = self.can_delete and self._should_delete_form(form)  # type: ignore[attr-defined]
            changed = {"code", "datatype"} & set(form.changed_data)
            if (deleted or changed) and storage.has_data(service.product, service.code,
                                                         original["code"]):
                raise forms.ValidationError(_(
                    "{code} has stored data: it cannot be removed, renamed or retyped here. "
                    "Use the product's thing model with \"Migrate stored data\".").format(
                        code=original["code"]))
        self._check_samples(service)

    def _check_samples(self, service: Service) -> None:
        """The product's codec samples must still pass with the properties as edited."""
        product = service.product
        if not product.codec or not product.codec_samples:
            return
        properties = [form.cleaned_data for form in self.forms
                      if getattr(form, "cleaned_data", None)
                      and not (self.can_delete and self._should_delete_form(form))]  # type: ignore[attr-defined]
        services = [{**s, "code": service.code, "properties": properties}
                    if s["id"] == service.pk else s for s in export_services(product)]
        try:
            codec = codecs.load(product.codec)
        except codecs.CodecInvalid:
            return  # the product's own form reports it
        failures = codecs.failing_samples(codec, model_of_services(services),
                                          product.codec_samples)
        if failures:
            raise forms.ValidationError(_("The codec's sample frames would fail: {failures}")
                                        .format(failures="; ".join(
                                            f"{f['sample']}: {f['reason']}"
                                            for f in failures)))


class PropertyInline(admin.TabularInline):
    model = Property
    formset = GuardedPropertyFormSet
    extra = 1
    fields = ("code", "name", "datatype", "unit", "min", "max", "step", "max_length",
              "enum_values", "access", "required")


class CommandInline(admin.TabularInline):
    model = Command
    extra = 0
    fields = ("code", "name", "description")
    show_change_link = True


class EventInline(admin.TabularInline):
    model = Event
    extra = 0
    fields = ("code", "name", "description")
    show_change_link = True


@admin.register(Service)
class ServiceAdmin(ScopedAdminMixin, admin.ModelAdmin):
    list_display = ("code", "name", "product")
    list_filter = (("product", ScopedRelatedFieldListFilter),)
    search_fields = ("code", "name", "product__identifier")
    inlines = [PropertyInline, CommandInline, EventInline]

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        actions.republish(form.instance.product)


class CommandParameterInline(admin.TabularInline):
    model = CommandParameter
    extra = 1
    fields = ("direction", "code", "name", "datatype", "unit", "min", "max", "max_length",
              "enum_values", "required")


@admin.register(Command)
class CommandAdmin(ScopedAdminMixin, admin.ModelAdmin):
    list_display = ("code", "name", "service")
    search_fields = ("code", "name")
    inlines = [CommandParameterInline]

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        actions.republish(form.instance.service.product)


class EventParameterInline(admin.TabularInline):
    model = EventParameter
    extra = 1
    fields = ("code", "name", "datatype", "unit", "min", "max", "max_length", "enum_values",
              "required")


@admin.register(Event)
class EventAdmin(ScopedAdminMixin, admin.ModelAdmin):
    list_display = ("code", "name", "service")
    search_fields = ("code", "name")
    inlines = [EventParameterInline]

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        actions.republish(form.instance.service.product)


class ProductTemplateForm(forms.ModelForm):
    class Meta:
        model = ProductTemplate
        fields = "__all__"

    def clean_services(self) -> list[dict[str, Any]]:
        serializer = ServiceSerializer(data=self.cleaned_data.get("services") or [], many=True)
        try:
            serializer.is_valid(raise_exception=True)
        except ValidationError as exc:
            raise forms.ValidationError(json.dumps(exc.detail, default=str)) from exc
        return json.loads(json.dumps(serializer.validated_data))

    def clean_codec_samples(self) -> Any:
        return self.cleaned_data.get("codec_samples") or []

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if not any(name in self.errors for name in ("protocol", "codec", "codec_samples")):
            try:
                codecs.check(cleaned.get("protocol", ""), cleaned.get("codec"),
                             cleaned.get("codec_samples") or [])
            except codecs.CodecInvalid as exc:
                self.add_error(exc.field if exc.field in self.fields else None, exc.reason)
        return cleaned


@admin.register(ProductTemplate)
class ProductTemplateAdmin(ScopedAdminMixin, admin.ModelAdmin):
    """Shared templates (built in, or without a department) are listed to everyone and
    written by superusers only; a department's, within the data scope
    (`actions.check_template_write`)."""

    form = ProductTemplateForm
    list_display = ("identifier", "name", "product_type", "status", "built_in", "department")
    list_filter = ("product_type", "status", "built_in")
    search_fields = ("identifier", "name")
    readonly_fields = ("built_in", "created")

    def get_queryset(self, request):
        return visible_templates(admin.ModelAdmin.get_queryset(self, request),
                                         request.user)

    def _writable(self, request, obj) -> bool:
        if obj is None:
            return True
        try:
            actions.check_template_write(request.user, obj, obj.department)
        except actions.DomainError:
            return False
        return True

    def has_change_permission(self, request, obj=None):
        return super().has_change_permission(request, obj) and self._writable(request, obj)

    def has_delete_permission(self, request, obj=None):
        return super().has_delete_permission(request, obj) and self._writable(request, obj)

    def get_form(self, request, obj=None, **kwargs):
        form = super().get_form(request, obj, **kwargs)
        acting_user = request.user

        class CheckedForm(form):  # type: ignore[misc, valid-type]
            def clean(self):
                data = super().clean()
                saved = self.instance if self.instance.pk else None
                department = data.get("department") if "department" in data else (
                    saved.department if saved is not None else None)
                try:
                    actions.check_template_write(acting_user, saved, department)
                except actions.DomainError as exc:
                    raise forms.ValidationError(str(exc.detail)) from exc
                return data

        return CheckedForm

    def delete_queryset(self, request, queryset):
        from django.core.exceptions import PermissionDenied

        for template in queryset:
            try:
                actions.delete_template(acting_user=request.user, template=template)
            except actions.DomainError as exc:
                raise PermissionDenied(str(exc.detail)) from exc

    def save_model(self, request, obj, form, change):
        data = {f: form.cleaned_data[f] for f in ("identifier", "name", "description",
                                                  "product_type", "protocol", "data_format",
                                                  "services", "codec", "codec_samples",
                                                  "status", "department")
                if f in form.cleaned_data}
        if change:
            actions.update_template(acting_user=request.user, template=obj, data=data)
            return
        saved = actions.create_template(acting_user=request.user, data=data)
        obj.pk = saved.pk
        obj._state = saved._state

    def delete_model(self, request, obj):
        actions.delete_template(acting_user=request.user, template=obj)
