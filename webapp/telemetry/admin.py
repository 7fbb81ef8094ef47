from django.contrib import admin

from webapp.devices.models import Device
from webapp.system import scope
from webapp.system.admin_scope import ScopedAdminMixin
from webapp.telemetry import actions
from webapp.telemetry.models import DeviceMessage, RetentionPolicy


@admin.register(DeviceMessage)
class DeviceMessageAdmin(admin.ModelAdmin):
    """The message log of the devices in the user's data scope (a message names its device
    by identifier, so the scope is applied here rather than by `ScopedAdminMixin`)."""

    list_display = ("ts", "device_identifier", "direction", "topic", "result", "reason")
    list_filter = ("direction", "result")
    search_fields = ("device_identifier", "topic", "reason")
    date_hierarchy = "ts"
    readonly_fields = [f.name for f in DeviceMessage._meta.fields]

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        if scope.user_scope(request.user).everything:
            return queryset
        return queryset.filter(device_identifier__in=scope.restrict(
            Device.objects.all(), request.user).values("identifier"))

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(RetentionPolicy)
class RetentionPolicyAdmin(ScopedAdminMixin, admin.ModelAdmin):
    list_display = ("product", "raw_days", "rollups", "rollup_days", "updated")
    search_fields = ("product__identifier", "product__name")
    autocomplete_fields = ("product",)

    def save_model(self, request, obj, form, change):
        policy = actions.set_retention_policy(
            product=obj.product, data={
                "raw_days": obj.raw_days, "rollups": obj.rollups,
                "rollup_days": obj.rollup_days})
        obj.pk = policy.pk

    def delete_model(self, request, obj):
        actions.delete_retention_policy(policy=obj)
