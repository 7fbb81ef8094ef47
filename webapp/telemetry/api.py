"""Telemetry across devices: series of several devices, latest values, CSV export; and the
products' retention policies."""

from __future__ import annotations

from typing import Any

from django.http import StreamingHttpResponse
from django.utils.translation import gettext as _
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from webapp.core.errors import NotFound
from webapp.devices import api as devices_api
from webapp.devices.models import Device
from webapp.devices.serializers import TelemetryQuerySerializer
from webapp.products.models import Product
from webapp.system import scope
from webapp.system.viewsets import ScopedModelViewSet, ScopedViewSetMixin
from webapp.telemetry import actions, queries
from webapp.telemetry.filtersets import DeviceMessageFilterSet, RetentionPolicyFilterSet
from webapp.telemetry.models import DeviceMessage, RetentionPolicy
from webapp.telemetry.serializers import (
    DeviceMessageSerializer,
    ExportQuerySerializer,
    LatestQuerySerializer,
    RetentionPolicySerializer,
    SeriesQuerySerializer,
)


# The devices API (`webapp.devices.api`) with each device's telemetry and message log: it is
# registered here because the device app sits below telemetry and cannot import it. (The
# docstring is the parent's: the API schema describes the endpoints with it.)
class DeviceViewSet(devices_api.DeviceViewSet):
    """Devices: credentials, status, shadow, telemetry and message log."""

    @extend_schema(parameters=[TelemetryQuerySerializer])
    @action(detail=True, methods=["get"])
    def telemetry(self, request: Request, identifier: str | None = None) -> Response:
        """Raw points of a time range, or aggregates by interval (`interval` + `agg`)."""
        params = TelemetryQuerySerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        return Response(queries.telemetry(self.get_object(), params.validated_data))

    @extend_schema(responses=DeviceMessageSerializer(many=True), parameters=[
        OpenApiParameter("start", str), OpenApiParameter("end", str),
        OpenApiParameter("result", str), OpenApiParameter("direction", str)])
    @action(detail=True, methods=["get"])
    def messages(self, request: Request, identifier: str | None = None) -> Response:
        """The device's message log: raw messages up and down, with their result."""
        device = self.get_object()
        queryset = DeviceMessageFilterSet(
            request.query_params,
            DeviceMessage.objects.filter(device_identifier=device.identifier)).qs
        page = self.paginate_queryset(queryset)
        return self.get_paginated_response(DeviceMessageSerializer(page, many=True).data)


class TelemetryViewSet(ScopedViewSetMixin, viewsets.GenericViewSet):
    """Time series of several devices at once (`devices=a,b`); reading them needs the
    permission to view devices, and reaches only the devices of the caller's data scope."""

    queryset = Device.objects.select_related("product")
    pagination_class = None

    def get_queryset(self):
        return Device.objects.select_related("product")

    def _devices(self, text: str) -> list[Device]:
        wanted = list(dict.fromkeys(i for i in text.split(",") if i))
        found = {d.identifier: d for d in self.get_queryset().filter(identifier__in=wanted)}
        missing = [i for i in wanted if i not in found]
        if missing:
            raise NotFound(_("Device {identifier} not found.").format(identifier=missing[0]))
        return [found[i] for i in wanted]

    @extend_schema(parameters=[SeriesQuerySerializer], responses=OpenApiTypes.OBJECT)
    def list(self, request: Request) -> Response:
        """Raw points (cursor `next`) or aggregates by interval of several devices."""
        params = SeriesQuerySerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        return Response(queries.telemetry(self._devices(data["devices"]), data))

    @extend_schema(parameters=[LatestQuerySerializer], responses=OpenApiTypes.OBJECT)
    @action(detail=False, methods=["get"])
    def latest(self, request: Request) -> Response:
        """The latest value of every property of each device, with its time."""
        params = LatestQuerySerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        return Response(queries.latest(self._devices(data["devices"]), data.get("service")))

    @extend_schema(parameters=[ExportQuerySerializer], responses={(200, "text/csv"): str})
    @action(detail=False, methods=["get"])
    def export(self, request: Request) -> StreamingHttpResponse:
        """A range of raw points as CSV, streamed (any size, constant memory)."""
        params = ExportQuerySerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        lines = queries.export_csv(self._devices(data["devices"]), data)
        first = next(lines)  # errors (unknown service...) surface before streaming starts
        response = StreamingHttpResponse(_chain(first, lines), content_type="text/csv")
        response["Content-Disposition"] = f'attachment; filename="{data["service"]}.csv"'
        return response


def _chain(first: str, rest: Any) -> Any:
    yield first
    yield from rest


class RetentionPolicyViewSet(ScopedModelViewSet):
    """How long each product keeps raw points and rollups (run by Celery beat)."""

    serializer_class = RetentionPolicySerializer
    filterset_class = RetentionPolicyFilterSet

    def get_queryset(self):
        return RetentionPolicy.objects.select_related("product").order_by("product__identifier")

    def _product(self, product: Product) -> Product:
        if not scope.restrict(Product.objects.all(), self.request.user).filter(
                pk=product.pk).exists():
            raise NotFound(_("Product not found."))
        return product

    def perform_create(self, serializer: Any) -> None:
        data = dict(serializer.validated_data)
        serializer.instance = actions.set_retention_policy(
            product=self._product(data.pop("product")), data=data)

    def perform_update(self, serializer: Any) -> None:
        data = dict(serializer.validated_data)
        data.pop("product", None)
        serializer.instance = actions.set_retention_policy(
            product=serializer.instance.product, data=data)

    def perform_destroy(self, instance: RetentionPolicy) -> None:
        actions.delete_retention_policy(policy=instance)


# (prefix, viewset, basename) for the API router (config/api.py).
ROUTES = [
    ("devices", DeviceViewSet, "device"),
    ("telemetry", TelemetryViewSet, "telemetry"),
    ("retention-policies", RetentionPolicyViewSet, "retention-policy"),
]
