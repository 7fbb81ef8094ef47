"""Device access REST API: ACL rules, product registration secrets, device envelope keys."""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext as _
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from webapp.access import actions
from webapp.access.filtersets import (
    AclRuleFilterSet,
    DeviceKeysFilterSet,
    ProductRegistrationFilterSet,
)
from webapp.access.models import AclRule, DeviceKeys, ProductRegistration
from webapp.access.serializers import (
    AclRuleSerializer,
    DeviceKeysSerializer,
    ProductRegistrationSerializer,
)
from webapp.core.errors import Conflict
from webapp.core.export import ExportMixin
from webapp.system.viewsets import ScopedModelViewSet, ScopedViewSetMixin


class AclRuleViewSet(ScopedModelViewSet):
    """ACL rules: topics outside a device's own namespace, per product or per device."""

    serializer_class = AclRuleSerializer
    filterset_class = AclRuleFilterSet

    def get_queryset(self):
        return AclRule.objects.select_related("product", "device").order_by(
            "product__identifier", "-priority", "id")

    def perform_create(self, serializer: Any) -> None:
        serializer.instance = actions.create_rule(**serializer.validated_data)

    def perform_update(self, serializer: Any) -> None:
        serializer.instance = actions.update_rule(
            rule=serializer.instance,
            data=dict(serializer.validated_data))

    def perform_destroy(self, instance: AclRule) -> None:
        actions.delete_rule(rule=instance)


class ProductRegistrationViewSet(ScopedViewSetMixin, ExportMixin, mixins.CreateModelMixin,
                                 mixins.ListModelMixin, mixins.RetrieveModelMixin,
                                 mixins.DestroyModelMixin, viewsets.GenericViewSet):
    """Dynamic registration of a product's devices: creating it (or rotating it) returns the
    product secret once; deleting it turns registration off."""

    serializer_class = ProductRegistrationSerializer
    filterset_class = ProductRegistrationFilterSet
    action_permissions = {"rotate": ["access.change_productregistration"]}

    def get_queryset(self):
        return ProductRegistration.objects.select_related("product").order_by("product")

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        product = serializer.validated_data["product"]
        if ProductRegistration.objects.filter(product=product).exists():
            raise Conflict(_("registration is already on for {product}; rotate its secret "
                             "instead").format(product=product.identifier), code="duplicate")
        registration, plain = actions.enable_registration(product=product)
        body = self.get_serializer(registration, context={**self.get_serializer_context(),
                                                          "secret": plain}).data
        return Response(body, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses=ProductRegistrationSerializer)
    @action(detail=True, methods=["post"])
    def rotate(self, request: Request, pk: Any = None) -> Response:
        """A new product secret (the old one stops working at once)."""
        registration, plain = actions.enable_registration(
            product=self.get_object().product)
        return Response(self.get_serializer(registration, context={
            **self.get_serializer_context(), "secret": plain}).data)

    def perform_destroy(self, instance: ProductRegistration) -> None:
        actions.disable_registration(registration=instance)


class DeviceKeysViewSet(ScopedViewSetMixin, ExportMixin, mixins.CreateModelMixin,
                        mixins.ListModelMixin, mixins.RetrieveModelMixin,
                        mixins.DestroyModelMixin, viewsets.GenericViewSet):
    """The envelope keys of a device (dataSign, SM4/AES bodies): set or generated on
    creation, shown once; posting again for the device replaces them."""

    serializer_class = DeviceKeysSerializer
    filterset_class = DeviceKeysFilterSet

    def get_queryset(self):
        return DeviceKeys.objects.select_related("device").order_by("device")

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        device_keys, plain = actions.set_device_keys(**data)
        body = self.get_serializer(device_keys, context={**self.get_serializer_context(),
                                                         "keys": plain}).data
        return Response(body, status=status.HTTP_201_CREATED)

    def perform_destroy(self, instance: DeviceKeys) -> None:
        actions.delete_device_keys(device_keys=instance)


# (prefix, viewset, basename) for the API router (config/api.py).
ROUTES = [
    ("acl-rules", AclRuleViewSet, "acl-rule"),
    ("product-registrations", ProductRegistrationViewSet, "product-registration"),
    ("device-keys", DeviceKeysViewSet, "device-keys"),
]
