from __future__ import annotations

from typing import Any

from django.utils.translation import gettext as _
from rest_framework import serializers

from webapp.access.models import AclRule, DeviceKeys, ProductRegistration
from webapp.devices.models import Device
from webapp.products.models import Product


class AclRuleSerializer(serializers.ModelSerializer):
    product = serializers.SlugRelatedField(slug_field="identifier",
                                           queryset=Product.objects.all())
    device = serializers.SlugRelatedField(slug_field="identifier", queryset=Device.objects.all(),
                                          required=False, allow_null=True)

    class Meta:
        model = AclRule
        fields = ("id", "product", "device", "action", "topic", "decision", "priority",
                  "enabled", "description", "created", "updated")
        read_only_fields = ("id", "created", "updated")


class ProductRegistrationSerializer(serializers.ModelSerializer):
    product = serializers.SlugRelatedField(slug_field="identifier",
                                           queryset=Product.objects.all())
    secret = serializers.SerializerMethodField(help_text=_(
        "The product secret: in the answer to creation and rotation only."))

    class Meta:
        model = ProductRegistration
        fields = ("id", "product", "enabled", "secret", "created", "updated")
        read_only_fields = ("id", "enabled", "created", "updated")

    def get_secret(self, obj: Any) -> str | None:
        return self.context.get("secret")

    def get_fields(self) -> dict[str, Any]:
        fields = super().get_fields()
        if self.instance is not None and not isinstance(self.instance, list):
            fields["product"].read_only = True
        return fields


class DeviceKeysSerializer(serializers.ModelSerializer):
    device = serializers.SlugRelatedField(slug_field="identifier", queryset=Device.objects.all())
    sign_key = serializers.CharField(write_only=True, required=False, max_length=128,
                                     help_text=_("Empty: a random one is generated."))
    encrypt_key = serializers.CharField(write_only=True, required=False, max_length=32)
    encrypt_vector = serializers.CharField(write_only=True, required=False, max_length=16)
    keys = serializers.SerializerMethodField(help_text=_(
        "The plain keys: in the answer to creation only."))

    class Meta:
        model = DeviceKeys
        fields = ("id", "device", "sign_key", "encrypt_key", "encrypt_vector", "keys",
                  "created", "updated")
        read_only_fields = ("id", "created", "updated")

    def get_keys(self, obj: Any) -> dict[str, str] | None:
        return self.context.get("keys")
