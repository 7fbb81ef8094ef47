from django.utils.translation import gettext_lazy as _
from rest_framework import serializers

from webapp.devices.serializers import TelemetryQuerySerializer
from webapp.products.models import Product
from webapp.telemetry.choices import RollupInterval
from webapp.telemetry.models import DeviceMessage, RetentionPolicy


class DeviceMessageSerializer(serializers.ModelSerializer):
    class Meta:
        model = DeviceMessage
        fields = ("id", "device_identifier", "ts", "direction", "topic", "payload", "result",
                  "reason")


DEVICE_LIST_RE = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}(,[A-Za-z0-9][A-Za-z0-9_.-]{0,63})*$"


class SeriesQuerySerializer(TelemetryQuerySerializer):
    """The device telemetry query for several devices of one product."""

    devices = serializers.RegexField(DEVICE_LIST_RE, help_text=_(
        "Device identifiers separated by commas (one product)."))


class LatestQuerySerializer(serializers.Serializer):
    devices = serializers.RegexField(DEVICE_LIST_RE, help_text=_(
        "Device identifiers separated by commas."))
    service = serializers.CharField(required=False)


class ExportQuerySerializer(serializers.Serializer):
    devices = serializers.RegexField(DEVICE_LIST_RE)
    service = serializers.CharField()
    property = serializers.CharField(required=False)
    start = serializers.DateTimeField(required=False)
    end = serializers.DateTimeField(required=False)


class RetentionPolicySerializer(serializers.ModelSerializer):
    product = serializers.SlugRelatedField(slug_field="identifier",
                                           queryset=Product.objects.all())
    rollups = serializers.ListField(child=serializers.ChoiceField(RollupInterval.choices),
                                    required=False)

    class Meta:
        model = RetentionPolicy
        fields = ("id", "product", "raw_days", "rollups", "rollup_days", "updated")
        read_only_fields = ("id", "updated")
