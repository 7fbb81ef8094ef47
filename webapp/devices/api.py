from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from webapp.devices import actions
from webapp.devices.filtersets import DeviceFilterSet
from webapp.devices.models import Device
from webapp.devices.serializers import (
    CreatedDeviceSerializer,
    DeviceSerializer,
    TelemetryQuerySerializer,
)
from webapp.telemetry import queries
from webapp.telemetry.filtersets import DeviceMessageFilterSet
from webapp.telemetry.models import DeviceMessage
from webapp.telemetry.serializers import DeviceMessageSerializer


class DeviceViewSet(viewsets.ModelViewSet):
    """Devices: credentials, status, shadow, telemetry and message log."""

    serializer_class = DeviceSerializer
    filterset_class = DeviceFilterSet
    lookup_field = "identifier"
    lookup_value_regex = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"

    def get_queryset(self):
        return Device.objects.select_related("product", "gateway").order_by("identifier")

    @extend_schema(responses={201: CreatedDeviceSerializer})
    def create(self, request: Request, *args, **kwargs) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        device, secret = actions.create_device(
            acting_user=request.user, product=data.pop("product"),
            identifier=data.pop("identifier"), secret=data.pop("secret", None), **data)
        body = CreatedDeviceSerializer(device).data
        body["secret"] = secret
        return Response(body, status=status.HTTP_201_CREATED)

    def perform_update(self, serializer: Any) -> None:
        serializer.instance = actions.update_device(
            acting_user=self.request.user, device=serializer.instance,
            data=dict(serializer.validated_data))

    def perform_destroy(self, instance: Device) -> None:
        actions.delete_device(acting_user=self.request.user, device=instance)

    @extend_schema(request=None, responses={200: CreatedDeviceSerializer})
    @action(detail=True, methods=["post"], url_path="rotate-secret")
    def rotate_secret(self, request: Request, identifier: str | None = None) -> Response:
        """Give the device a new secret (shown once in this response)."""
        device = self.get_object()
        secret = actions.rotate_secret(acting_user=request.user, device=device)
        body = CreatedDeviceSerializer(device).data
        body["secret"] = secret
        return Response(body)

    @action(detail=True, methods=["get"])
    def shadow(self, request: Request, identifier: str | None = None) -> Response:
        """Desired, reported and delta state of the device, with its version."""
        return Response(queries.shadow(self.get_object()))

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
