"""Permission cases of the telemetry API for the matrix in tests/system/test_permissions.py
(401 / 403 / success)."""

from __future__ import annotations

from typing import Any

from tests.system.permission_cases import Case


def _policy(ctx: Any) -> Any:
    from webapp.telemetry.models import RetentionPolicy

    return ctx.once("policy", lambda: RetentionPolicy.objects.create(product=ctx.product(),
                                                                     raw_days=30))


def _device(ctx: Any) -> tuple[dict[str, Any], None]:
    ctx.device()
    return {}, None


# An unknown service is refused after the permission check (the matrix makes no time series).
CASES: list[Case] = [
    Case("telemetry-list", "get", ("devices.view_device",), (200, 400, 404), _device,
         query="devices=dev-1&service=nope"),
    Case("telemetry-latest", "get", ("devices.view_device",), (200, 400, 404), _device,
         query="devices=dev-1&service=nope"),
    Case("telemetry-export", "get", ("devices.view_device",), (200, 400, 404), _device,
         query="devices=dev-1&service=nope"),
    Case("retention-policy-list", "get", ("telemetry.view_retentionpolicy",), (200,)),
    Case("retention-policy-list", "post", ("telemetry.add_retentionpolicy",), (201,),
         lambda ctx: ({}, {"product": ctx.product().identifier, "raw_days": 7})),
    Case("retention-policy-export", "get", ("telemetry.view_retentionpolicy",), (200,)),
    Case("retention-policy-detail", "get", ("telemetry.view_retentionpolicy",), (200,),
         lambda ctx: ({"pk": _policy(ctx).pk}, None)),
    Case("retention-policy-detail", "patch", ("telemetry.change_retentionpolicy",), (200,),
         lambda ctx: ({"pk": _policy(ctx).pk}, {"raw_days": 60})),
    Case("retention-policy-detail", "put", ("telemetry.change_retentionpolicy",), (200,),
         lambda ctx: ({"pk": _policy(ctx).pk}, {"product": ctx.product().identifier,
                                                 "raw_days": 60})),
    Case("retention-policy-detail", "delete", ("telemetry.delete_retentionpolicy",), (204,),
         lambda ctx: ({"pk": _policy(ctx).pk}, None)),
]
