from __future__ import annotations

from typing import Any

from django.utils.translation import gettext as _
from rest_framework import serializers

from webapp.devices.models import DeviceGroup
from webapp.ota import actions
from webapp.ota.choices import PackageType, TargetType
from webapp.ota.models import OtaCampaign, OtaPackage, OtaTask
from webapp.products.models import Product


class OtaPackageSerializer(serializers.ModelSerializer):
    product = serializers.SlugRelatedField(slug_field="identifier",
                                           queryset=Product.objects.all())
    file = serializers.FileField(write_only=True, help_text=_("The package (multipart upload)."))

    class Meta:
        model = OtaPackage
        fields = ("id", "product", "name", "package_type", "version", "file", "size",
                  "checksum", "md5", "description", "custom_info", "created")
        read_only_fields = ("id", "size", "checksum", "md5", "created")
        validators: list[Any] = []  # a duplicate version is a 409 `duplicate` from the action

    def get_fields(self) -> dict[str, Any]:
        fields = super().get_fields()
        if self.instance is not None and not isinstance(self.instance, list):
            for name in ("product", "package_type", "version", "file"):
                fields[name].read_only = True
        return fields


class OtaCampaignSerializer(serializers.ModelSerializer):
    package = serializers.PrimaryKeyRelatedField(queryset=OtaPackage.objects.all())
    group = serializers.PrimaryKeyRelatedField(queryset=DeviceGroup.objects.all(),
                                               required=False, allow_null=True)
    devices = serializers.ListField(child=serializers.CharField(max_length=64), required=False,
                                    write_only=True, help_text=_(
                                        "Device identifiers, for target_type `devices`."))
    start = serializers.BooleanField(required=False, default=True, write_only=True,
                                     help_text=_("Start at once (default) or stay a draft."))
    summary = serializers.SerializerMethodField()

    class Meta:
        model = OtaCampaign
        fields = ("id", "name", "package", "target_type", "group", "devices", "description",
                  "task_timeout", "start", "status", "summary", "created", "started",
                  "finished")
        read_only_fields = ("id", "status", "created", "started", "finished")

    def get_summary(self, campaign: OtaCampaign) -> dict[str, int]:
        return actions.summary(campaign)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs.get("target_type") == TargetType.GROUP and not attrs.get("group"):
            raise serializers.ValidationError({"group": _("a group campaign needs a group")})
        if attrs.get("target_type") == TargetType.DEVICES and not attrs.get("devices"):
            raise serializers.ValidationError({"devices": _("give the devices to upgrade")})
        return attrs


class OtaTaskSerializer(serializers.ModelSerializer):
    device: serializers.SlugRelatedField = serializers.SlugRelatedField(
        slug_field="identifier", read_only=True)

    class Meta:
        model = OtaTask
        fields = ("id", "device", "status", "progress", "from_version", "error_code",
                  "error_message", "attempts", "sent", "finished", "updated")
        read_only_fields = fields


class ReadVersionSerializer(serializers.Serializer):
    device = serializers.CharField(max_length=64)
    package_type = serializers.ChoiceField(choices=PackageType.choices,
                                           default=PackageType.FIRMWARE)
