from django.contrib import admin

from webapp.telemetry.models import DeviceMessage


@admin.register(DeviceMessage)
class DeviceMessageAdmin(admin.ModelAdmin):
    list_display = ("ts", "device_identifier", "direction", "topic", "result", "reason")
    list_filter = ("direction", "result")
    search_fields = ("device_identifier", "topic", "reason")
    date_hierarchy = "ts"
    readonly_fields = [f.name for f in DeviceMessage._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
