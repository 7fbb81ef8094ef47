from __future__ import annotations

from typing import Any

from django.utils.translation import gettext as _
from rest_framework import serializers

from webapp.devices.choices import NodeType
from webapp.devices.models import Device, DeviceCommand, DeviceConnection, DeviceGroup
from webapp.products.models import IDENTIFIER_RE, Product


class DeviceSerializer(serializers.ModelSerializer):
    identifier = serializers.RegexField(IDENTIFIER_RE, max_length=64)
    product = serializers.SlugRelatedField(slug_field="identifier",
                                           queryset=Product.objects.all())
    gateway: serializers.SlugRelatedField = serializers.SlugRelatedField(
        slug_field="identifier", queryset=Device.objects.filter(node_type=NodeType.GATEWAY),
        required=False, allow_null=True, help_text=_(
            "The gateway of a sub-device (its identifier); null for a direct device."))
    groups = serializers.PrimaryKeyRelatedField(
        many=True, queryset=DeviceGroup.objects.all(), required=False)
    secret = serializers.CharField(write_only=True, required=False, min_length=8,
                                   max_length=128, help_text=_(
                                       "Optional: your own secret; generated when omitted. "
                                       "Shown only in the response of create and rotate."))

    class Meta:
        model = Device
        fields = ("id", "identifier", "name", "product", "status", "connect_status",
                  "last_seen", "node_type", "gateway", "fw_version", "sw_version", "tags",
                  "groups", "department", "latitude", "longitude", "address", "description",
                  "secret", "created", "updated")
        read_only_fields = ("id", "connect_status", "last_seen", "node_type", "created",
                            "updated")

    def validate_identifier(self, value: str) -> str:
        if self.instance is not None and value != self.instance.identifier:
            raise serializers.ValidationError(_("the identifier of a device cannot change"))
        return value

    def validate_product(self, value: Product) -> Product:
        if self.instance is not None and value != self.instance.product:
            raise serializers.ValidationError(_("a device cannot move to another product"))
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if self.instance is not None and "secret" in attrs:
            raise serializers.ValidationError(
                {"secret": _("use the rotate-secret action to change a secret")})
        return attrs


class CreatedDeviceSerializer(DeviceSerializer):
    """The response of create and rotate: the only time the plain secret is shown."""

    secret = serializers.CharField(read_only=True)


class TelemetryQuerySerializer(serializers.Serializer):
    service = serializers.CharField()
    property = serializers.CharField(required=False, help_text=_(
        "One property, or several separated by commas; all of the service when omitted."))
    start = serializers.DateTimeField(required=False)
    end = serializers.DateTimeField(required=False)
    interval = serializers.RegexField(r"^(\d+(ms|s|m|h|d)|1w|1M)$", required=False)
    tz = serializers.CharField(required=False, max_length=64, help_text=_(
        "IANA time zone (e.g. Asia/Shanghai) of the calendar intervals 1d, 1w and 1M; "
        "TIME_ZONE when omitted."))
    agg = serializers.ChoiceField(choices=["avg", "min", "max", "sum", "count", "first",
                                           "last"], required=False, default="avg")
    limit = serializers.IntegerField(required=False, min_value=1, max_value=10000,
                                     default=1000)
    cursor = serializers.IntegerField(required=False)
    order = serializers.ChoiceField(choices=["asc", "desc"], required=False, default="asc")
    fill = serializers.ChoiceField(choices=["none", "null", "previous", "value"],
                                   required=False, default="none", help_text=_(
                                       "Intervals without data: left out (none), null, the "
                                       "previous interval's value, or fill_value."))
    fill_value = serializers.FloatField(required=False)


class CommandRequestSerializer(serializers.Serializer):
    """`POST /api/v1/devices/{identifier}/commands/` (docs/devices.md, "Commands")."""

    service = serializers.CharField(max_length=50)
    command = serializers.CharField(max_length=50)
    params = serializers.DictField(required=False, default=dict)
    timeout = serializers.IntegerField(required=False, min_value=1, max_value=300, help_text=_(
        "Seconds to wait for the device's response once sent (default 30)."))
    ttl = serializers.IntegerField(required=False, min_value=0, help_text=_(
        "Seconds the command waits for an offline device (default DEVICE_COMMAND_TTL)."))
    sync = serializers.BooleanField(required=False, default=False, help_text=_(
        "Wait up to `timeout` seconds for the response and return the final state."))


class DeviceCommandSerializer(serializers.ModelSerializer):
    device: serializers.SlugRelatedField = serializers.SlugRelatedField(
        slug_field="identifier", read_only=True)

    class Meta:
        model = DeviceCommand
        fields = ("id", "device", "service", "command", "params", "status", "timeout",
                  "expires", "deadline", "response", "err_code", "error", "source", "created",
                  "sent", "completed")
        read_only_fields = fields


class DeviceConnectionSerializer(serializers.ModelSerializer):
    """One connect (``online``) or disconnect (``offline``) of the device."""

    class Meta:
        model = DeviceConnection
        fields = ("event", "at", "reason", "address", "node", "transport")
        read_only_fields = fields


class ShadowWriteSerializer(serializers.Serializer):
    """`PUT` / `PATCH /api/v1/devices/{identifier}/shadow/`."""

    desired = serializers.JSONField(help_text=_(
        '{"service": {"property": value}}: writable properties (access RW or RWE) only.'))
    version = serializers.IntegerField(required=False, min_value=0, help_text=_(
        "The version you read; a stale one is refused with 409 version_conflict."))


class ShadowSerializer(serializers.Serializer):
    device = serializers.CharField()
    desired = serializers.JSONField()
    reported = serializers.JSONField(help_text=_(
        '{"service": {"property": {"value": …, "ts": "…"}}}'))
    delta = serializers.JSONField()
    version = serializers.IntegerField()


class DeviceGroupSerializer(serializers.ModelSerializer):
    device_count = serializers.IntegerField(read_only=True, required=False)

    class Meta:
        model = DeviceGroup
        fields = ("id", "name", "description", "department", "device_count", "created")
        read_only_fields = ("id", "created")


class GroupMembersSerializer(serializers.Serializer):
    """`POST /api/v1/device-groups/{id}/devices/`: device identifiers to add and remove."""

    add = serializers.ListField(child=serializers.CharField(max_length=64), required=False,
                                default=list)
    remove = serializers.ListField(child=serializers.CharField(max_length=64), required=False,
                                   default=list)


class DeviceImportSerializer(serializers.Serializer):
    """`POST /api/v1/devices/import/` (multipart)."""

    file = serializers.FileField(help_text=_(
        "CSV (UTF-8) or XLSX with the columns of the export; `identifier` and `product` are "
        "required, `secret` is optional for new devices."))
    file_format = serializers.ChoiceField(choices=["csv", "xlsx"], required=False, help_text=_(
        "Taken from the file name when omitted."))
    dry_run = serializers.BooleanField(required=False, default=False, help_text=_(
        "Check every row and report, without saving anything."))


class DeviceImportResultSerializer(serializers.Serializer):
    dry_run = serializers.BooleanField()
    totals = serializers.DictField(child=serializers.IntegerField())
    secrets = serializers.DictField(allow_null=True, help_text=_(
        '{"url", "count", "expires_in"}: download the generated secrets once, then they are '
        "gone."))
