"""Permission cases of the device groups, device import and OTA API for the matrix in
tests/system/test_permissions.py (401 / 403 / success)."""

from __future__ import annotations

from typing import Any

from tests.system.permission_cases import PUBLIC, Case

CHANGE_OR_INVALID = (200, 400, 409)


def _group(ctx: Any) -> Any:
    from webapp.devices.models import DeviceGroup

    return ctx.once("group", lambda: DeviceGroup.objects.create(name="floor-1",
                                                                department=ctx.org.a))


def _package(ctx: Any) -> Any:
    from django.core.files.base import ContentFile

    from webapp.ota.models import OtaPackage

    def make() -> Any:
        package = OtaPackage(product=ctx.product(), name="fw", version="1.0.1",
                             package_type="firmware", checksum="0" * 64)
        package.file.save("fw.bin", ContentFile(b"\x00firmware"), save=False)
        package.save()
        return package

    return ctx.once("package", make)


def _campaign(ctx: Any) -> Any:
    from webapp.ota.models import OtaCampaign

    return ctx.once("campaign", lambda: OtaCampaign.objects.create(
        name="upgrade", package=_package(ctx), target_type="devices", status="draft"))


def _pk(make: Any, body: Any = None) -> Any:
    return lambda ctx: ({"pk": make(ctx).pk}, body)


CASES: list[Case] = [
    Case("device-group-list", "get", ("devices.view_devicegroup",), (200,)),
    Case("device-group-list", "post", ("devices.add_devicegroup",), (201,), lambda ctx: (
        {}, {"name": "floor-2"})),
    Case("device-group-export", "get", ("devices.view_devicegroup",), (200,)),
    Case("device-group-detail", "get", ("devices.view_devicegroup",), (200,), _pk(_group)),
    Case("device-group-detail", "patch", ("devices.change_devicegroup",), (200,),
         _pk(_group, {"description": "x"})),
    Case("device-group-detail", "put", ("devices.change_devicegroup",), (200,),
         _pk(_group, {"name": "floor-1b"})),
    Case("device-group-detail", "delete", ("devices.delete_devicegroup",), (204,),
         _pk(_group)),
    Case("device-group-members", "get", ("devices.view_devicegroup", "devices.view_device"),
         (200,), _pk(_group)),
    Case("device-group-members", "post", ("devices.change_devicegroup",
                                          "devices.view_device"), (200,),
         lambda ctx: ({"pk": _group(ctx).pk}, {"add": [ctx.device().identifier]})),
    # A file upload (multipart): the JSON body of the matrix is refused after the check.
    Case("device-import-devices", "post", ("devices.add_device",), (400, 415),
         lambda ctx: ({}, {})),
    Case("device-import-secrets", "get", ("devices.view_device",), (404,),
         lambda ctx: ({"token": "x" * 32}, None)),
    Case("ota-package-list", "get", ("ota.view_otapackage",), (200,)),
    Case("ota-package-list", "post", ("ota.add_otapackage",), (400,),
         lambda ctx: ({}, {"name": "fw"})),
    Case("ota-package-export", "get", ("ota.view_otapackage",), (200,)),
    Case("ota-package-detail", "get", ("ota.view_otapackage",), (200,), _pk(_package)),
    Case("ota-package-detail", "patch", ("ota.change_otapackage",), CHANGE_OR_INVALID,
         _pk(_package, {"description": "x"})),
    Case("ota-package-detail", "put", ("ota.change_otapackage",), CHANGE_OR_INVALID,
         _pk(_package, {"description": "x"})),
    Case("ota-package-detail", "delete", ("ota.delete_otapackage",), (204,), _pk(_package)),
    Case("ota-campaign-list", "get", ("ota.view_otacampaign",), (200,)),
    Case("ota-campaign-list", "post", ("ota.add_otacampaign",), (201, 400), lambda ctx: (
        {}, {"name": "up", "package": _package(ctx).pk, "target_type": "devices",
             "devices": [ctx.device().identifier], "start": False})),
    Case("ota-campaign-detail", "get", ("ota.view_otacampaign",), (200,), _pk(_campaign)),
    Case("ota-campaign-detail", "delete", ("ota.delete_otacampaign",), (204,),
         _pk(_campaign)),
    Case("ota-campaign-start", "post", ("ota.change_otacampaign",), CHANGE_OR_INVALID,
         _pk(_campaign)),
    Case("ota-campaign-cancel", "post", ("ota.change_otacampaign",), CHANGE_OR_INVALID,
         _pk(_campaign)),
    Case("ota-campaign-tasks", "get", ("ota.view_otacampaign", "ota.view_otatask"), (200,),
         _pk(_campaign)),
    Case("ota-read-version", "post", ("devices.view_device", "ota.view_otapackage"),
         (202, 409), lambda ctx: ({}, {"device": ctx.device().identifier,
                                       "package_type": "firmware"})),
    # Devices download packages with a signed link instead of an account.
    Case("ota-download", "get", PUBLIC, (404,), lambda ctx: ({"token": "forged"}, None)),
]
