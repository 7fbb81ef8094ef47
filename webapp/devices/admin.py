from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.http import Http404, HttpResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _
from import_export.admin import ImportExportModelAdmin

from webapp.core import spreadsheet
from webapp.core.admin import BoundedImportMixin
from webapp.devices import actions, secrets_once
from webapp.devices.actions.shadow import validate_desired
from webapp.devices.choices import CommandSource, CommandStatus, DeviceStatus
from webapp.devices.models import (
    Device,
    DeviceCommand,
    DeviceConnection,
    DeviceGroup,
    DeviceShadow,
)
from webapp.devices.resources import DeviceResource
from webapp.products.thingmodel import thing_model
from webapp.system.admin_scope import (
    ScopedAdminMixin,
    ScopedChoicesMixin,
    ScopedRelatedFieldListFilter,
)


class ShadowForm(forms.ModelForm):
    class Meta:
        model = DeviceShadow
        fields = ("desired",)

    def clean_desired(self) -> Any:
        desired = self.cleaned_data.get("desired") or {}
        device = self.instance.device
        problems = validate_desired(device, desired, allow_null=False)
        if problems:
            raise forms.ValidationError([p.reason for p in problems])
        return desired


class ShadowInline(admin.StackedInline):
    """Desired state is set through the shadow action (validated, versioned, the device gets
    the delta); reported state is read-only."""

    model = DeviceShadow
    form = ShadowForm
    can_delete = False
    readonly_fields = ("reported", "version", "updated")
    fields = ("desired", "reported", "version", "updated")


class CommandHistoryInline(admin.TabularInline):
    """The device's latest commands (the full history is under Device commands)."""

    model = DeviceCommand
    extra = 0
    max_num = 0
    can_delete = False
    ordering = ("-created",)
    fields = ("created", "service", "command", "params", "status", "response", "completed")
    readonly_fields = fields
    show_change_link = True
    verbose_name_plural = _("latest commands")

    def get_queryset(self, request):
        recent = DeviceCommand.objects.order_by("-created").values_list("pk", flat=True)
        return super().get_queryset(request).filter(pk__in=list(recent[:200]))


class ConnectionHistoryInline(admin.TabularInline):
    """The device's latest connects and disconnects, read-only (kept
    `CONNECTION_HISTORY_DAYS`; all of them in the API's ``connections``)."""

    model = DeviceConnection
    extra = 0
    max_num = 0
    can_delete = False
    ordering = ("-at", "-id")
    fields = ("at", "event", "reason", "transport", "address", "node")
    readonly_fields = fields
    verbose_name_plural = _("latest connections")

    def get_queryset(self, request):
        device = request.resolver_match.kwargs.get("object_id") if request.resolver_match \
            else None
        if not str(device or "").isdigit():
            device = None
        recent = DeviceConnection.objects.filter(device_id=device).order_by(
            "-at", "-id").values_list("pk", flat=True)
        return super().get_queryset(request).filter(pk__in=list(recent[:50]))


@admin.register(Device)
class DeviceAdmin(ScopedChoicesMixin, BoundedImportMixin, ImportExportModelAdmin):
    list_display = ("identifier", "name", "product", "status", "connect_status", "last_seen",
                    "node_type", "gateway")
    # Products and groups in the sidebar and the group choices stop at the data scope.
    list_filter = ("connect_status", "status", "node_type",
                   ("product", ScopedRelatedFieldListFilter),
                   ("groups", ScopedRelatedFieldListFilter))
    search_fields = ("identifier", "name", "description")
    readonly_fields = ("connect_status", "last_seen", "node_type", "created_by", "created",
                       "updated")
    list_select_related = ("product", "gateway")
    filter_horizontal = ("groups",)
    raw_id_fields = ("gateway",)
    actions = ("rotate_secrets", "lock", "unlock")
    resource_classes = [DeviceResource]
    formats = [spreadsheet.CSV, spreadsheet.XLSX]  # cells escaped against formulas

    def get_inlines(self, request, obj):
        return ([ShadowInline, CommandHistoryInline, ConnectionHistoryInline] if obj is not None
                else [])

    def save_formset(self, request, form, formset, change):
        if formset.model is not DeviceShadow:
            super().save_formset(request, form, formset, change)
            return
        for shadow_form in formset.forms:
            if "desired" in shadow_form.changed_data:
                actions.set_desired(device=form.instance,
                                    desired=shadow_form.cleaned_data["desired"])
        formset.new_objects = formset.changed_objects = formset.deleted_objects = []

    # bulk import: one transaction, secrets downloadable once --------------------------

    def has_import_permission(self, request):
        # django-import-export lets anyone who sees the list import; rows that update a
        # device also need the change permission (DeviceResource).
        return request.user.has_perm("devices.add_device")

    def process_dataset(self, dataset, form, request, **kwargs):
        outcome = actions.import_devices(acting_user=request.user, dataset=dataset,
                                         retain_instances=True)
        result = outcome.result
        result.secrets_token = outcome.secrets_token
        result.secrets_count = outcome.secrets_count
        return result

    def process_result(self, result, request):
        response = super().process_result(result, request)
        token = getattr(result, "secrets_token", None)
        if token:
            url = reverse("admin:devices_device_import_secrets", kwargs={"token": token})
            messages.warning(request, format_html(
                _('{count} new devices got a secret. <a href="{url}">Download the secrets '
                  "(CSV)</a> now: the link works once and expires in {minutes} minutes."),
                count=result.secrets_count, url=url,
                minutes=secrets_once.IMPORT_SECRETS_TTL // 60))
        return response

    def get_urls(self):
        return [
            path("import-secrets/<str:token>/",
                 self.admin_site.admin_view(self.import_secrets_view),
                 name="devices_device_import_secrets"),
            *super().get_urls(),
        ]

    def import_secrets_view(self, request, token: str) -> HttpResponse:
        if not self.has_add_permission(request):
            raise Http404
        text = secrets_once.take(token, request.user.pk)
        if text is None:
            raise Http404(_("These secrets were already downloaded or have expired."))
        response = HttpResponse(text, content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = 'attachment; filename="device-secrets.csv"'
        response["Cache-Control"] = "no-store"
        return response

    def save_model(self, request, obj, form, change):
        if change:
            actions.update_device(device=obj, data={})
            return
        fields = {k: v for k, v in form.cleaned_data.items()
                  if k not in ("identifier", "product")}
        device, secret = actions.create_device(
            acting_user=request.user, product=form.cleaned_data["product"],
            identifier=form.cleaned_data["identifier"], **fields)
        obj.pk = device.pk
        obj._state = device._state
        obj.secret_encrypted = device.secret_encrypted
        messages.warning(request, _(
            "The secret of device {identifier} is {secret} — copy it now: it is stored "
            "encrypted and will not be shown again.").format(
                identifier=device.identifier, secret=secret))

    def delete_model(self, request, obj):
        actions.delete_device(device=obj)

    @admin.action(description=_("Rotate the secret of the selected devices"))
    def rotate_secrets(self, request, queryset):
        for device in queryset:
            secret = actions.rotate_secret(device=device)
            messages.warning(request, _("New secret of {identifier}: {secret}").format(
                identifier=device.identifier, secret=secret))

    @admin.action(description=_("Lock the selected devices (refuse connections)"))
    def lock(self, request, queryset):
        for device in queryset:
            actions.set_device_status(device=device,
                                      status=DeviceStatus.LOCKED)

    @admin.action(description=_("Unlock the selected devices"))
    def unlock(self, request, queryset):
        for device in queryset:
            actions.set_device_status(device=device,
                                      status=DeviceStatus.ACTIVATED)


@admin.register(DeviceGroup)
class DeviceGroupAdmin(ScopedAdminMixin, admin.ModelAdmin):
    list_display = ("name", "description", "department", "created")
    search_fields = ("name", "description")

    def save_model(self, request, obj, form, change):
        data = {f: form.cleaned_data[f] for f in ("name", "description", "department")
                if f in form.cleaned_data}
        if change:
            actions.update_group(group=obj, data=data)
        else:
            saved = actions.create_group(data=data)
            obj.pk = saved.pk
            obj._state = saved._state

    def delete_model(self, request, obj):
        actions.delete_group(group=obj)


class SendCommandForm(forms.ModelForm):
    params_json = forms.JSONField(label=_("parameters (JSON object)"), required=False,
                                  initial=dict)
    ttl = forms.IntegerField(label=_("TTL (s)"), required=False, min_value=0, help_text=_(
        "How long the command waits for an offline device."))

    class Meta:
        model = DeviceCommand
        fields = ("device", "service", "command", "timeout")

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        device = cleaned.get("device")
        if device is not None and cleaned.get("service") and cleaned.get("command"):
            _values, problems = thing_model(device.product).validate_command_params(
                cleaned["service"], cleaned["command"], cleaned.get("params_json") or {})
            for problem in problems:
                self.add_error(None, problem.reason)
        return cleaned


@admin.register(DeviceCommand)
class DeviceCommandAdmin(ScopedAdminMixin, admin.ModelAdmin):
    """Command history of the devices in the user's data scope; "add" sends a command to one
    of them (checked against the model)."""

    list_display = ("id", "device", "service", "command", "status", "source", "created",
                    "completed")
    list_filter = ("status", "source", "service")
    search_fields = ("device__identifier", "command")
    list_select_related = ("device",)
    raw_id_fields = ("device",)
    date_hierarchy = "created"
    actions = ("cancel",)

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = SendCommandForm
        return super().get_form(request, obj, change, **kwargs)

    def get_fields(self, request, obj=None):
        if obj is None:
            return ("device", "service", "command", "params_json", "timeout", "ttl")
        return ("device", "service", "command", "params", "status", "timeout", "expires",
                "deadline", "sent", "completed", "err_code", "response", "error", "source",
                "created_by", "created")

    def get_readonly_fields(self, request, obj=None):
        return self.get_fields(request, obj) if obj is not None else ()

    def has_change_permission(self, request, obj=None):
        return obj is None and super().has_change_permission(request, obj)

    def save_model(self, request, obj, form, change):
        record = actions.send_command(
            acting_user=request.user, device=form.cleaned_data["device"],
            service=form.cleaned_data["service"], command=form.cleaned_data["command"],
            params=form.cleaned_data.get("params_json") or {},
            timeout=form.cleaned_data.get("timeout"), ttl=form.cleaned_data.get("ttl"),
            source=CommandSource.ADMIN)
        obj.pk = record.pk
        obj._state = record._state

    @admin.action(description=_("Cancel the selected pending commands"))
    def cancel(self, request, queryset):
        done = 0
        for record in queryset.filter(status=CommandStatus.PENDING):
            actions.cancel_command(record=record)
            done += 1
        messages.info(request, _("{count} commands cancelled.").format(count=done))
