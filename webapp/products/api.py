from __future__ import annotations

from typing import Any

from django.db.models import Count
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from webapp.core.viewsets import ScopedModelViewSet
from webapp.products import actions
from webapp.products.filtersets import ProductFilterSet
from webapp.products.models import Product
from webapp.products.serializers import ProductSerializer, ServiceSerializer
from webapp.products.thingmodel import export_services


class ProductViewSet(ScopedModelViewSet):
    """Products and their thing models (services with properties, commands and events)."""

    serializer_class = ProductSerializer
    filterset_class = ProductFilterSet
    lookup_field = "identifier"
    lookup_value_regex = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"

    def get_queryset(self):
        return Product.objects.annotate(device_count=Count("devices")).order_by(
            "identifier").prefetch_related("services__properties",
                                           "services__commands__parameters",
                                           "services__events__parameters")

    def perform_create(self, serializer: Any) -> None:
        serializer.instance = actions.create_product(
            acting_user=self.request.user, data=dict(serializer.validated_data))

    def perform_update(self, serializer: Any) -> None:
        serializer.instance = actions.update_product(
            acting_user=self.request.user, product=serializer.instance,
            data=dict(serializer.validated_data))

    def perform_destroy(self, instance: Product) -> None:
        actions.delete_product(acting_user=self.request.user, product=instance)

    @extend_schema(responses=ServiceSerializer(many=True))
    @action(detail=True, methods=["get"], url_path="thing-model")
    def thing_model(self, request: Request, identifier: str | None = None) -> Response:
        """Export the thing model in the form `POST /api/v1/products/` accepts."""
        product = self.get_object()
        body: dict[str, Any] = {
            "identifier": product.identifier, "name": product.name,
            "product_type": product.product_type, "protocol": product.protocol,
            "services": export_services(product),
        }
        return Response(body, status=status.HTTP_200_OK)
