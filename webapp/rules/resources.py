"""Exports (django-import-export): alarms and rule traces as CSV/XLSX from the admin.

Rules are not imported this way: a rule goes through `actions.create_rule`, which validates
it and encrypts its secrets; use the API to copy rules between platforms."""

from import_export import fields, resources

from webapp.rules.models import Alarm, RuleTrace


class AlarmResource(resources.ModelResource):
    device = fields.Field(attribute="device__identifier", column_name="device")
    product = fields.Field(attribute="product__identifier", column_name="product")
    rule = fields.Field(attribute="rule__name", column_name="rule")
    assignee = fields.Field(attribute="assignee__username", column_name="assignee")

    class Meta:
        model = Alarm
        fields = ("id", "name", "rule", "device", "product", "severity", "status", "message",
                  "count", "first_seen", "last_seen", "assignee", "acknowledged_at",
                  "cleared_at")
        export_order = fields


class RuleTraceResource(resources.ModelResource):
    rule = fields.Field(attribute="rule__name", column_name="rule")

    class Meta:
        model = RuleTrace
        fields = ("id", "rule", "kind", "device", "ts", "ok", "message", "conditions",
                  "results", "created")
        export_order = fields
