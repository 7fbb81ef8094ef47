"""Permission cases of the device access API for the matrix in tests/system/test_permissions.py
(401 without credentials, 403 without the permission, success with it)."""

from __future__ import annotations

from typing import Any

from tests.system.permission_cases import Case, _crud


def _rule(ctx: Any) -> Any:
    from webapp.access.models import AclRule

    return ctx.once("acl-rule", lambda: AclRule.objects.create(
        product=ctx.product(), topic="shared/#", decision="allow"))


def _registration(ctx: Any) -> Any:
    from webapp.access.models import ProductRegistration

    return ctx.once("registration", lambda: ProductRegistration.objects.create(
        product=ctx.product(fresh=True), secret_encrypted="x"))


def _keys(ctx: Any) -> Any:
    from webapp.access.models import DeviceKeys

    return ctx.once("device-keys", lambda: DeviceKeys.objects.create(device=ctx.device()))


def _pk(make: Any, body: Any = None) -> Any:
    return lambda ctx: ({"pk": make(ctx).pk}, body)


CASES: list[Case] = [
    *_crud("acl-rule", "access", "aclrule", _rule,
           lambda ctx: {"product": ctx.product().identifier, "topic": "fleet/${device}",
                        "decision": "deny", "action": "pub"},
           {"priority": 5}),
    Case("product-registration-list", "get", ("access.view_productregistration",), (200,)),
    Case("product-registration-list", "post", ("access.add_productregistration",), (201,),
         lambda ctx: ({}, {"product": ctx.product(fresh=True).identifier})),
    Case("product-registration-detail", "get", ("access.view_productregistration",), (200,),
         _pk(_registration)),
    Case("product-registration-detail", "delete", ("access.delete_productregistration",),
         (204,), _pk(_registration)),
    Case("product-registration-rotate", "post", ("access.change_productregistration",),
         (200,), _pk(_registration)),
    Case("product-registration-export", "get", ("access.view_productregistration",), (200,)),
    Case("device-keys-list", "get", ("access.view_devicekeys",), (200,)),
    Case("device-keys-list", "post", ("access.add_devicekeys",), (201,),
         lambda ctx: ({}, {"device": ctx.device().identifier})),
    Case("device-keys-detail", "get", ("access.view_devicekeys",), (200,), _pk(_keys)),
    Case("device-keys-detail", "delete", ("access.delete_devicekeys",), (204,), _pk(_keys)),
    Case("device-keys-export", "get", ("access.view_devicekeys",), (200,)),
]
