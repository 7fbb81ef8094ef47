from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from webapp.core import uploads
from webapp.core.errors import DomainError
from webapp.devices.models import Device
from webapp.ota import actions
from webapp.ota.choices import CampaignStatus
from webapp.ota.models import OtaCampaign, OtaPackage, OtaTask
from webapp.system import scope
from webapp.system.admin_scope import ScopedAdminMixin, ScopedRelatedFieldListFilter


class PackageForm(forms.ModelForm):
    class Meta:
        model = OtaPackage
        fields = "__all__"

    def clean_file(self) -> Any:
        upload = self.cleaned_data.get("file")
        if upload is not None and "file" in self.changed_data:
            try:
                uploads.check_size(upload.size, actions.max_package_bytes(), "OTA_MAX_BYTES")
            except DomainError as exc:
                raise forms.ValidationError(str(exc.detail)) from None
        return upload


@admin.register(OtaPackage)
class OtaPackageAdmin(ScopedAdminMixin, admin.ModelAdmin):
    form = PackageForm
    list_display = ("name", "product", "package_type", "version", "size", "created")
    list_filter = ("package_type", ("product", ScopedRelatedFieldListFilter))
    search_fields = ("name", "version", "product__identifier")
    readonly_fields = ("size", "checksum", "md5", "created")

    def get_readonly_fields(self, request, obj=None):
        fixed = ("product", "package_type", "version", "file") if obj is not None else ()
        return (*self.readonly_fields, *fixed)

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)
            return
        data = form.cleaned_data
        saved = actions.create_package(
            acting_user=request.user, product=data["product"], name=data["name"],
            version=data["version"], package_type=data["package_type"], upload=data["file"],
            description=data.get("description", ""), custom_info=data.get("custom_info"))
        obj.pk = saved.pk
        obj._state = saved._state

    def delete_model(self, request, obj):
        actions.delete_package(package=obj)


class TaskInline(admin.TabularInline):
    model = OtaTask
    extra = 0
    can_delete = False
    max_num = 0
    fields = ("device", "status", "progress", "from_version", "error_code", "error_message",
              "sent", "finished", "updated")
    readonly_fields = fields


class CampaignForm(forms.ModelForm):
    device_list = forms.CharField(
        label=_("devices"), required=False, widget=forms.Textarea(attrs={"rows": 3}),
        help_text=_("For a device-list campaign: identifiers separated by commas or lines."))
    start_now = forms.BooleanField(label=_("start now"), required=False, initial=True)

    class Meta:
        model = OtaCampaign
        fields = ("name", "package", "target_type", "group", "description", "task_timeout")

    user = None  # set by the admin: the targets are limited to the user's data scope
    targets: list[Device] = []

    def clean(self):
        data = super().clean() or {}
        if data.get("package") is None or not data.get("target_type"):
            return data
        identifiers = [i.strip() for i in (data.get("device_list") or "").replace("\n", ",")
                       .split(",") if i.strip()]
        try:
            self.targets = actions.resolve_targets(
                data["package"], data["target_type"], group=data.get("group"),
                identifiers=identifiers,
                visible=scope.restrict(Device.objects.all(), self.user))
        except DomainError as exc:
            raise forms.ValidationError(str(exc.detail)) from exc
        if not self.targets:
            raise forms.ValidationError(_("the campaign has no device to upgrade"))
        return data


@admin.register(OtaCampaign)
class OtaCampaignAdmin(ScopedAdminMixin, admin.ModelAdmin):
    list_display = ("name", "package", "target_type", "status", "progress", "created")
    list_filter = ("status", "target_type")
    search_fields = ("name",)
    inlines = [TaskInline]
    actions = ("start", "cancel")

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = type("ScopedCampaignForm", (CampaignForm,), {"user": request.user})
        return super().get_form(request, obj, change, **kwargs)

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ()
        return ("name", "package", "target_type", "group", "status", "progress", "created",
                "started", "finished")

    def get_fields(self, request, obj=None):
        if obj is None:
            return ("name", "package", "target_type", "group", "device_list", "description",
                    "task_timeout", "start_now")
        return ("name", "package", "target_type", "group", "status", "progress",
                "description", "task_timeout", "created", "started", "finished")

    @admin.display(description=_("progress"))
    def progress(self, obj: OtaCampaign) -> str:
        counts = actions.summary(obj)
        return format_html(
            "{} ✓ · {} ✗ · {} … · {} ⏳ / {}", counts["succeeded"], counts["failed"],
            counts["in_progress"], counts["pending"], counts["total"])

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)
            return
        data = form.cleaned_data
        saved = actions.create_campaign(
            acting_user=request.user, package=data["package"], name=data["name"],
            target_type=data["target_type"], devices=form.targets, group=data.get("group"),
            description=data.get("description", ""), task_timeout=data["task_timeout"],
            start=data.get("start_now", False))
        obj.pk = saved.pk
        obj._state = saved._state

    @admin.action(description=_("Start the selected draft campaigns"))
    def start(self, request, queryset):
        for campaign in queryset.filter(status=CampaignStatus.DRAFT):
            actions.start_campaign(campaign=campaign)
        messages.info(request, _("Started."))

    @admin.action(description=_("Cancel the selected campaigns"))
    def cancel(self, request, queryset):
        for campaign in queryset.filter(status__in=(CampaignStatus.DRAFT,
                                                    CampaignStatus.RUNNING)):
            actions.cancel_campaign(campaign=campaign)
        messages.info(request, _("Cancelled."))
