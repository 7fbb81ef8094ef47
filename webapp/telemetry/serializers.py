from rest_framework import serializers

from webapp.telemetry.models import DeviceMessage


class DeviceMessageSerializer(serializers.ModelSerializer):
    class Meta:
        model = DeviceMessage
        fields = ("id", "device_identifier", "ts", "direction", "topic", "payload", "result",
                  "reason")
