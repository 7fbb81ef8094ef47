from __future__ import annotations

from django.contrib import admin, messages
from django.utils.translation import gettext_lazy as _

from webapp.core.admin import ScopedAdminMixin
from webapp.devices import actions
from webapp.devices.choices import DeviceStatus
from webapp.devices.models import Device, DeviceShadow


class ShadowInline(admin.StackedInline):
    model = DeviceShadow
    can_delete = False
    readonly_fields = ("reported", "version", "updated")
    fields = ("desired", "reported", "version", "updated")


@admin.register(Device)
class DeviceAdmin(ScopedAdminMixin, admin.ModelAdmin):
    list_display = ("identifier", "name", "product", "status", "connect_status", "last_seen",
                    "node_type")
    list_filter = ("connect_status", "status", "node_type", "product")
    search_fields = ("identifier", "name", "description")
    readonly_fields = ("connect_status", "last_seen", "node_type", "gateway", "created",
                       "updated")
    list_select_related = ("product",)
    actions = ("rotate_secrets", "lock", "unlock")

    def get_inlines(self, request, obj):
        return [ShadowInline] if obj is not None else []

    def save_model(self, request, obj, form, change):
        if change:
            actions.update_device(acting_user=request.user, device=obj, data={})
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
        actions.delete_device(acting_user=request.user, device=obj)

    @admin.action(description=_("Rotate the secret of the selected devices"))
    def rotate_secrets(self, request, queryset):
        for device in queryset:
            secret = actions.rotate_secret(acting_user=request.user, device=device)
            messages.warning(request, _("New secret of {identifier}: {secret}").format(
                identifier=device.identifier, secret=secret))

    @admin.action(description=_("Lock the selected devices (refuse connections)"))
    def lock(self, request, queryset):
        for device in queryset:
            actions.set_device_status(acting_user=request.user, device=device,
                                      status=DeviceStatus.LOCKED)

    @admin.action(description=_("Unlock the selected devices"))
    def unlock(self, request, queryset):
        for device in queryset:
            actions.set_device_status(acting_user=request.user, device=device,
                                      status=DeviceStatus.ACTIVATED)
