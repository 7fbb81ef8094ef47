from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from webapp.core.viewsets import ScopedModelViewSet, ScopedViewSetMixin
from webapp.devices import actions
from webapp.devices.filtersets import DeviceCommandFilterSet, DeviceFilterSet
from webapp.devices.models import Device, DeviceCommand
from webapp.devices.serializers import (
    CommandRequestSerializer,
    CreatedDeviceSerializer,
    DeviceCommandSerializer,
    DeviceSerializer,
    ShadowSerializer,
    ShadowWriteSerializer,
    TelemetryQuerySerializer,
)
from webapp.telemetry import queries
from webapp.telemetry.filtersets import DeviceMessageFilterSet
from webapp.telemetry.models import DeviceMessage
from webapp.telemetry.serializers import DeviceMessageSerializer


class DeviceViewSet(ScopedModelViewSet):
    """Devices: credentials, status, shadow, telemetry and message log."""

    serializer_class = DeviceSerializer
    filterset_class = DeviceFilterSet
    lookup_field = "identifier"
    lookup_value_regex = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
    action_permissions = {
        "commands": ["devices.view_device", "devices.view_devicecommand"],
        "send_command": ["devices.view_device", "devices.add_devicecommand"],
        "rotate_secret": ["devices.change_device"],
    }

    def get_queryset(self):
        return Device.objects.select_related("product", "gateway").prefetch_related(
            "groups").order_by("identifier")

    def filter_queryset(self, queryset: Any) -> Any:
        # The device filters are for the list; a detail action's own query parameters
        # (`?status=` of the command history, …) must not filter the device away.
        return super().filter_queryset(queryset) if self.action == "list" else queryset

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

    @extend_schema(responses=ShadowSerializer)
    @action(detail=True, methods=["get"])
    def shadow(self, request: Request, identifier: str | None = None) -> Response:
        """Desired, reported and delta state of the device, with its version."""
        return Response(_shadow_body(actions.shadow_document(self.get_object())))

    @extend_schema(request=ShadowWriteSerializer, responses={200: ShadowSerializer})
    @shadow.mapping.put
    def put_shadow(self, request: Request, identifier: str | None = None) -> Response:
        """Replace the desired state. Give the `version` you read: a stale one gets 409
        `version_conflict`. The device receives the delta on `/shadow/delta`."""
        return self._write_shadow(request, merge=False)

    @extend_schema(request=ShadowWriteSerializer, responses={200: ShadowSerializer})
    @shadow.mapping.patch
    def patch_shadow(self, request: Request, identifier: str | None = None) -> Response:
        """Change part of the desired state (`null` removes a property or a service)."""
        return self._write_shadow(request, merge=True)

    def _write_shadow(self, request: Request, *, merge: bool) -> Response:
        device = self.get_object()
        body = ShadowWriteSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        doc = actions.set_desired(acting_user=request.user, device=device,
                                  desired=body.validated_data["desired"],
                                  version=body.validated_data.get("version"), merge=merge)
        return Response(_shadow_body(doc))

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

    @extend_schema(responses=DeviceCommandSerializer(many=True),
                   parameters=[DeviceCommandFilterSet])
    @action(detail=True, methods=["get"])
    def commands(self, request: Request, identifier: str | None = None) -> Response:
        """The device's command history, newest first."""
        device = self.get_object()
        queryset = DeviceCommandFilterSet(
            request.query_params, DeviceCommand.objects.filter(device=device)).qs
        page = self.paginate_queryset(queryset)
        return self.get_paginated_response(DeviceCommandSerializer(page, many=True).data)

    @extend_schema(request=CommandRequestSerializer, responses={201: DeviceCommandSerializer})
    @commands.mapping.post
    def send_command(self, request: Request, identifier: str | None = None) -> Response:
        """Send a command (validated against the thing model). It waits while the device is
        offline; with `"sync": true` the call waits up to `timeout` for the response."""
        device = self.get_object()
        params = CommandRequestSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        record = actions.send_command(
            acting_user=request.user, device=device, service=data["service"],
            command=data["command"], params=data.get("params"), timeout=data.get("timeout"),
            ttl=data.get("ttl"))
        if data.get("sync"):
            record = actions.wait_for_command(record, record.timeout)
        else:
            record.refresh_from_db()
        return Response(DeviceCommandSerializer(record).data, status=status.HTTP_201_CREATED)


def _shadow_body(doc: dict[str, Any]) -> dict[str, Any]:
    reported = {
        service: {prop: {**entry, "ts": queries.iso(entry["ts"])}
                  if isinstance(entry.get("ts"), int) else entry
                  for prop, entry in values.items()}
        for service, values in doc["reported"].items()
    }
    return {**doc, "reported": reported}


class DeviceCommandViewSet(ScopedViewSetMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin,
                           viewsets.GenericViewSet):
    """Commands sent to devices: status `pending → sent → succeeded | failed | timeout` and the
    device's response."""

    serializer_class = DeviceCommandSerializer
    filterset_class = DeviceCommandFilterSet
    action_permissions = {"cancel": ["devices.view_devicecommand",
                                     "devices.change_devicecommand"]}

    def get_queryset(self):
        return DeviceCommand.objects.select_related("device").order_by("-created", "-id")

    @extend_schema(request=None, responses={200: DeviceCommandSerializer})
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        """Cancel a command that still waits for its (offline) device."""
        record = actions.cancel_command(acting_user=request.user, record=self.get_object())
        return Response(DeviceCommandSerializer(record).data)
