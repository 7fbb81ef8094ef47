"""OTA REST API: packages, campaigns with their tasks and summary, version reads, and the
signed package download the devices use."""

from __future__ import annotations

from typing import Any

from django.http import FileResponse, HttpRequest, JsonResponse
from django.urls import path
from django.utils.translation import gettext as _
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from webapp.core import uploads
from webapp.core.errors import Conflict, DomainError, NotFound
from webapp.core.parsers import JSONParser
from webapp.devices.models import Device
from webapp.ota import actions
from webapp.ota.filtersets import OtaCampaignFilterSet, OtaPackageFilterSet, OtaTaskFilterSet
from webapp.ota.models import OtaCampaign, OtaPackage
from webapp.ota.serializers import (
    OtaCampaignSerializer,
    OtaPackageSerializer,
    OtaTaskSerializer,
    ReadVersionSerializer,
)
from webapp.system import scope
from webapp.system.viewsets import ScopedModelViewSet, ScopedViewSetMixin


class OtaPackageViewSet(ScopedModelViewSet):
    """Firmware and software packages (multipart upload; checksums computed on upload)."""

    serializer_class = OtaPackageSerializer
    filterset_class = OtaPackageFilterSet
    parser_classes = [MultiPartParser, FormParser, JSONParser]

    def get_queryset(self):
        return OtaPackage.objects.select_related("product").order_by("-created", "-id")

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """Upload a package (a file over `OTA_MAX_BYTES` is refused with 413)."""
        uploads.check_request_size(request, actions.max_package_bytes(), "OTA_MAX_BYTES")
        return super().create(request, *args, **kwargs)

    def perform_create(self, serializer: Any) -> None:
        data = dict(serializer.validated_data)
        product = data["product"]
        if not scope.restrict(type(product).objects.filter(pk=product.pk),
                              self.request.user).exists():
            raise NotFound(_("unknown product"), code="not_found")
        serializer.instance = actions.create_package(
            acting_user=self.request.user, product=product, name=data["name"],
            version=data["version"], package_type=data["package_type"], upload=data["file"],
            description=data.get("description", ""), custom_info=data.get("custom_info"))

    def perform_destroy(self, instance: OtaPackage) -> None:
        actions.delete_package(package=instance)


class OtaCampaignViewSet(ScopedViewSetMixin, mixins.CreateModelMixin, mixins.ListModelMixin,
                         mixins.RetrieveModelMixin, mixins.DestroyModelMixin,
                         viewsets.GenericViewSet):
    """Upgrade campaigns: every device of the package's product, a group, or a list."""

    serializer_class = OtaCampaignSerializer
    filterset_class = OtaCampaignFilterSet
    action_permissions = {"start": ["ota.change_otacampaign"],
                          "cancel": ["ota.change_otacampaign"],
                          "tasks": ["ota.view_otacampaign", "ota.view_otatask"]}

    def get_queryset(self):
        return OtaCampaign.objects.select_related("package__product").order_by("-created", "-id")

    def perform_create(self, serializer: Any) -> None:
        data = dict(serializer.validated_data)
        package = data["package"]
        devices = actions.resolve_targets(
            package, data["target_type"], group=data.get("group"),
            identifiers=data.get("devices") or (),
            visible=scope.restrict(Device.objects.all(), self.request.user))
        serializer.instance = actions.create_campaign(
            acting_user=self.request.user, package=package, name=data["name"],
            target_type=data["target_type"], devices=devices, group=data.get("group"),
            description=data.get("description", ""),
            task_timeout=data.get("task_timeout", 3600), start=data.get("start", True))

    def perform_destroy(self, instance: OtaCampaign) -> None:
        if instance.status == "running":
            raise Conflict(_("cancel the campaign before deleting it"), code="running")
        instance.delete()

    @extend_schema(request=None, responses=OtaCampaignSerializer)
    @action(detail=True, methods=["post"])
    def start(self, request: Request, pk: str | None = None) -> Response:
        """Start a draft campaign."""
        campaign = actions.start_campaign(campaign=self.get_object())
        return Response(OtaCampaignSerializer(campaign).data)

    @extend_schema(request=None, responses=OtaCampaignSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        """Cancel: devices that have not started are skipped; running upgrades finish."""
        campaign = actions.cancel_campaign(campaign=self.get_object())
        return Response(OtaCampaignSerializer(campaign).data)

    @extend_schema(responses=OtaTaskSerializer(many=True), parameters=[
        OpenApiParameter("status", str), OpenApiParameter("device", str)])
    @action(detail=True, methods=["get"])
    def tasks(self, request: Request, pk: str | None = None) -> Response:
        """Per-device progress of the campaign."""
        campaign = self.get_object()
        queryset = OtaTaskFilterSet(request.query_params, campaign.tasks.select_related(
            "device").order_by("device__identifier")).qs
        page = self.paginate_queryset(queryset)
        return self.get_paginated_response(OtaTaskSerializer(page, many=True).data)


class CanReadVersions(BasePermission):
    def has_permission(self, request: Any, view: Any) -> bool:
        user = request.user
        return bool(user and user.is_authenticated and user.has_perms(
            ["devices.view_device", "ota.view_otapackage"]))


class ReadVersionView(APIView):
    """Ask a device for its firmware or software version (`/topo/otaRead`); its answer
    updates the device's `fw_version` / `sw_version`."""

    permission_classes = [CanReadVersions]

    @extend_schema(request=ReadVersionSerializer, responses={202: None})
    def post(self, request: Request) -> Response:
        body = ReadVersionSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        device = scope.restrict(Device.objects.select_related("gateway"), request.user).filter(
            identifier=body.validated_data["device"]).first()
        if device is None:
            raise NotFound(_("unknown device"), code="unknown_device")
        if not actions.read_version(device=device,
                                    package_type=body.validated_data["package_type"]):
            raise Conflict(_("the device is offline"), code="device_offline")
        return Response({"sent": True}, status=status.HTTP_202_ACCEPTED)


def download(request: HttpRequest, token: str) -> FileResponse | JsonResponse:
    """`GET /api/v1/ota/download/{token}/`: the package, for whoever holds a valid signed link
    (devices download without an account); expired or forged links are refused."""
    try:
        package = actions.resolve_download(token)
    except DomainError as exc:
        code = 410 if exc.code == "expired" else 404
        return JsonResponse({"code": exc.code, "detail": str(exc.detail)}, status=code)
    response = FileResponse(package.file.open("rb"), as_attachment=True,
                            filename=(package.file.name or "package").rsplit("/", 1)[-1])
    response["X-Checksum-SHA256"] = package.checksum
    response["Cache-Control"] = "private, no-store"
    return response


# (prefix, viewset, basename) for the API router (config/api.py).
ROUTES = [
    ("ota/packages", OtaPackageViewSet, "ota-package"),
    ("ota/campaigns", OtaCampaignViewSet, "ota-campaign"),
]

# The views outside the router, under `/api/v1/` as well.
urlpatterns = [
    path("ota/download/<str:token>/", download, name="ota-download"),
    path("ota/read-version/", ReadVersionView.as_view(), name="ota-read-version"),
]
