from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _
from rest_framework.exceptions import ValidationError

from webapp.core.admin import ScopedAdminMixin
from webapp.products import actions
from webapp.products.models import (
    Command,
    CommandParameter,
    Event,
    EventParameter,
    Product,
    Property,
    Service,
)
from webapp.products.serializers import ServiceSerializer
from webapp.products.thingmodel import export_services


class ProductForm(forms.ModelForm):
    thing_model = forms.JSONField(
        label=_("Thing model (JSON)"), required=False,
        help_text=_("The `services` list of the API form. Leave empty to edit services below "
                    "one by one; when given, it replaces the whole model."),
        widget=forms.Textarea(attrs={"rows": 12, "cols": 100, "style": "font-family:monospace"}),
    )

    class Meta:
        model = Product
        fields = "__all__"

    def clean_thing_model(self) -> list[dict[str, Any]] | None:
        value = self.cleaned_data.get("thing_model")
        if value in (None, "", []):
            return None
        serializer = ServiceSerializer(data=value, many=True)
        try:
            serializer.is_valid(raise_exception=True)
        except ValidationError as exc:
            raise forms.ValidationError(json.dumps(exc.detail, default=str)) from exc
        return serializer.validated_data


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
    readonly_fields = ("created", "updated")

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change, **kwargs)
        if obj is not None:
            form.base_fields["thing_model"].initial = json.dumps(export_services(obj), indent=2)
        return form

    def save_model(self, request, obj, form, change):
        services = form.cleaned_data.get("thing_model")
        fields = {f.name: form.cleaned_data[f.name] for f in Product._meta.fields
                  if f.name in form.cleaned_data}
        if change:
            saved = actions.update_product(acting_user=request.user, product=obj,
                                           data={**fields, "services": services}
                                           if services is not None else fields)
        else:
            saved = actions.create_product(acting_user=request.user,
                                           data={**fields, "services": services or []})
        obj.pk = saved.pk
        obj._state = saved._state
        form.instance = saved

    def save_related(self, request, form, formsets, change):
        if form.cleaned_data.get("thing_model") is None:
            super().save_related(request, form, formsets, change)
        actions.republish(form.instance)


class PropertyInline(admin.TabularInline):
    model = Property
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
    list_filter = ("product",)
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
