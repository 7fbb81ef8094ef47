from __future__ import annotations

import contextlib
from typing import Any

from django.db.models import Count
from django.http import HttpResponse
from django.urls import reverse
from django.utils.translation import gettext as _
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from webapp.core import uploads
from webapp.core.errors import DomainError, NotFound
from webapp.core.timestamps import iso
from webapp.devices import actions, secrets_once
from webapp.devices.filtersets import (
    DeviceCommandFilterSet,
    DeviceFilterSet,
    DeviceGroupFilterSet,
)
from webapp.devices.models import Device, DeviceCommand, DeviceConnection, DeviceGroup
from webapp.devices.serializers import (
    CommandRequestSerializer,
    CreatedDeviceSerializer,
    DeviceCommandSerializer,
    DeviceConnectionSerializer,
    DeviceGroupSerializer,
    DeviceImportResultSerializer,
    DeviceImportSerializer,
    DeviceSerializer,
    GroupMembersSerializer,
    ShadowSerializer,
    ShadowWriteSerializer,
)
from webapp.system import scope
from webapp.system.viewsets import ScopedModelViewSet, ScopedViewSetMixin


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
        if self.action in ("list", "export"):
            return super().filter_queryset(queryset)
        return queryset

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
            device=serializer.instance,
            data=dict(serializer.validated_data))

    def perform_destroy(self, instance: Device) -> None:
        actions.delete_device(device=instance)

    @extend_schema(request=None, responses={200: CreatedDeviceSerializer})
    @action(detail=True, methods=["post"], url_path="rotate-secret")
    def rotate_secret(self, request: Request, identifier: str | None = None) -> Response:
        """Give the device a new secret (shown once in this response)."""
        device = self.get_object()
        secret = actions.rotate_secret(device=device)
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
        doc = actions.set_desired(device=device,
                                  desired=body.validated_data["desired"],
                                  version=body.validated_data.get("version"), merge=merge)
        return Response(_shadow_body(doc))

    @extend_schema(responses=DeviceCommandSerializer(many=True), parameters=[
        OpenApiParameter("status", str), OpenApiParameter("service", str),
        OpenApiParameter("command", str), OpenApiParameter("source", str),
        OpenApiParameter("created_after", str), OpenApiParameter("created_before", str)])
    @action(detail=True, methods=["get"])
    def commands(self, request: Request, identifier: str | None = None) -> Response:
        """The device's command history, newest first."""
        device = self.get_object()
        queryset = DeviceCommandFilterSet(
            request.query_params, DeviceCommand.objects.filter(device=device)).qs
        page = self.paginate_queryset(queryset)
        return self.get_paginated_response(DeviceCommandSerializer(page, many=True).data)

    @extend_schema(responses=DeviceConnectionSerializer(many=True))
    @action(detail=True, methods=["get"])
    def connections(self, request: Request, identifier: str | None = None) -> Response:
        """The device's connection history (connects and disconnects with their reason,
        address, edge node and transport), newest first."""
        device = self.get_object()
        page = self.paginate_queryset(
            DeviceConnection.objects.filter(device=device).order_by("-at", "-id"))
        return self.get_paginated_response(DeviceConnectionSerializer(page, many=True).data)

    @extend_schema(request=CommandRequestSerializer, responses={201: DeviceCommandSerializer})
    @commands.mapping.post
    def send_command(self, request: Request, identifier: str | None = None) -> Response:
        """Send a command (validated against the thing model). It waits while the device is
        offline; with `"sync": true` the call waits up to `timeout` for the response (at most
        `COMMAND_SYNC_MAX_WAIT`; 429 `too_many_waits` when `COMMAND_SYNC_MAX_CONCURRENT`
        calls already wait)."""
        device = self.get_object()
        params = CommandRequestSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        with actions.sync_wait_slot() if data.get("sync") else contextlib.nullcontext():
            record = actions.send_command(
                acting_user=request.user, device=device, service=data["service"],
                command=data["command"], params=data.get("params"),
                timeout=data.get("timeout"), ttl=data.get("ttl"))
            if data.get("sync"):
                record = actions.wait_for_command(record, record.timeout)
            else:
                record.refresh_from_db()
        return Response(DeviceCommandSerializer(record).data, status=status.HTTP_201_CREATED)


    @extend_schema(request={"multipart/form-data": DeviceImportSerializer},
                   responses={201: DeviceImportResultSerializer,
                              200: DeviceImportResultSerializer})
    @action(detail=False, methods=["post"], url_path="import",
            parser_classes=[MultiPartParser, FormParser])
    def import_devices(self, request: Request) -> Response:
        """Create or update devices from a CSV or XLSX file: every row or none. Errors are
        reported per row. New devices' secrets can be downloaded once (`secrets.url`). A file
        over `IMPORT_MAX_BYTES` bytes or `IMPORT_MAX_CELLS` cells is refused (413)."""
        uploads.check_request_size(request, uploads.max_import_bytes(), "IMPORT_MAX_BYTES")
        form = DeviceImportSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        upload = form.validated_data["file"]
        uploads.check_size(upload.size, uploads.max_import_bytes(), "IMPORT_MAX_BYTES")
        file_format = form.validated_data.get("file_format") or (
            "xlsx" if upload.name.lower().endswith(".xlsx") else "csv")
        dataset = actions.read_dataset(upload.read(), file_format)
        outcome = actions.import_devices(acting_user=request.user, dataset=dataset,
                                         dry_run=form.validated_data["dry_run"])
        if not outcome.ok:
            raise DomainError(
                _("{count} rows have errors; nothing was imported").format(
                    count=len({e["row"] for e in outcome.errors})),
                code="import_invalid", extra={"totals": outcome.totals,
                                              "errors": outcome.errors})
        secrets = None
        if outcome.secrets_token:
            secrets = {
                "url": request.build_absolute_uri(reverse(
                    "device-import-secrets", kwargs={"token": outcome.secrets_token})),
                "count": outcome.secrets_count,
                "expires_in": secrets_once.IMPORT_SECRETS_TTL,
            }
        body = {"dry_run": outcome.dry_run, "totals": outcome.totals, "secrets": secrets}
        return Response(body, status=status.HTTP_200_OK if outcome.dry_run
                        else status.HTTP_201_CREATED)

    @extend_schema(responses={(200, "text/csv"): OpenApiTypes.BINARY})
    @action(detail=False, methods=["get"], url_name="import-secrets",
            url_path=r"import/secrets/(?P<token>[A-Za-z0-9_-]{20,64})")
    def import_secrets(self, request: Request, token: str) -> HttpResponse:
        """The secrets generated by your import, as CSV: downloadable once."""
        text = secrets_once.take(token, request.user.pk)
        if text is None:
            raise NotFound(_("these secrets were already downloaded, expired or are not "
                             "yours"), code="gone")
        response = HttpResponse(text, content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = 'attachment; filename="device-secrets.csv"'
        response["Cache-Control"] = "no-store"
        return response

    @extend_schema(parameters=[OpenApiParameter("file_format", str, enum=["csv", "xlsx"])],
                   responses={(200, "text/csv"): OpenApiTypes.BINARY})
    @action(detail=False, methods=["get"], url_path="export")
    def export(self, request: Request) -> HttpResponse:
        """The filtered devices as CSV or XLSX in the import format (no secrets)."""
        file_format = request.query_params.get("file_format", "csv")
        body = actions.export_devices(self.filter_queryset(self.get_queryset()), file_format)
        content_type = ("text/csv; charset=utf-8" if file_format == "csv" else
                        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")
        response = HttpResponse(body, content_type=content_type)
        response["Content-Disposition"] = f'attachment; filename="devices.{file_format}"'
        return response


def _shadow_body(doc: dict[str, Any]) -> dict[str, Any]:
    reported = {
        service: {prop: {**entry, "ts": iso(entry["ts"])}
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
        record = actions.cancel_command(record=self.get_object())
        return Response(DeviceCommandSerializer(record).data)


class DeviceGroupViewSet(ScopedModelViewSet):
    """Device groups and their members."""

    serializer_class = DeviceGroupSerializer
    filterset_class = DeviceGroupFilterSet
    action_permissions = {"members": ["devices.view_devicegroup", "devices.view_device"],
                          "change_members": ["devices.change_devicegroup",
                                             "devices.view_device"]}

    def get_queryset(self):
        return DeviceGroup.objects.annotate(device_count=Count("devices")).order_by("name")

    def perform_create(self, serializer: Any) -> None:
        serializer.instance = actions.create_group(data=dict(serializer.validated_data))

    def perform_update(self, serializer: Any) -> None:
        serializer.instance = actions.update_group(
            group=serializer.instance,
            data=dict(serializer.validated_data))

    def perform_destroy(self, instance: DeviceGroup) -> None:
        actions.delete_group(group=instance)

    @extend_schema(responses=DeviceSerializer(many=True))
    @action(detail=True, methods=["get"], url_path="devices")
    def members(self, request: Request, pk: str | None = None) -> Response:
        """The devices of the group."""
        group = self.get_object()
        devices = scope.restrict(group.devices.select_related("product", "gateway")
                                 .prefetch_related("groups").order_by("identifier"),
                                 request.user)
        page = self.paginate_queryset(devices)
        return self.get_paginated_response(DeviceSerializer(page, many=True).data)

    @extend_schema(request=GroupMembersSerializer, responses=DeviceGroupSerializer)
    @members.mapping.post
    def change_members(self, request: Request, pk: str | None = None) -> Response:
        """Add and remove devices by identifier."""
        group = self.get_object()
        body = GroupMembersSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        wanted = set(body.validated_data["add"]) | set(body.validated_data["remove"])
        visible = scope.restrict(Device.objects.all(), request.user)
        found = {d.identifier: d for d in visible.filter(identifier__in=wanted)}
        unknown = sorted(wanted - set(found))
        if unknown:
            raise NotFound(_("unknown devices: {ids}").format(ids=", ".join(unknown[:20])),
                           code="unknown_device", extra={"unknown": unknown})
        actions.change_members(
            group=group,
            add=[found[i] for i in body.validated_data["add"]],
            remove=[found[i] for i in body.validated_data["remove"]])
        return Response(DeviceGroupSerializer(self.get_queryset().get(pk=group.pk)).data)


# (prefix, viewset, basename) for the API router (config/api.py).
# ("devices" is registered by webapp.telemetry.api, whose DeviceViewSet adds each device's
# telemetry and message log to this one: the device app sits below telemetry.)
ROUTES = [
    ("device-groups", DeviceGroupViewSet, "device-group"),
    ("commands", DeviceCommandViewSet, "command"),
]
