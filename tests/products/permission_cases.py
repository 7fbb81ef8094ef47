"""Permission cases of the product import, codec and template API for the matrix in
tests/system/test_permissions.py (401 / 403 / success)."""

from __future__ import annotations

from typing import Any

from tests.system.permission_cases import Case


def _template(ctx: Any) -> Any:
    from webapp.products.models import ProductTemplate

    return ctx.once("template", lambda: ProductTemplate.objects.create(
        identifier="tpl-thermo", name="Thermometer template", services=[],
        department=ctx.org.a))


def _codec_product(ctx: Any) -> Any:
    """A product of the example TCP sensor (its codec), in the actor's department."""
    from webapp.products import actions
    from webapp.products.builtin_templates import TEMPLATES

    data = next(t for t in TEMPLATES if t["identifier"] == "th-sensor-tcp")
    return ctx.once("codec-product", lambda: actions.create_product(acting_user=None, data={
        **data, "identifier": "th-codec", "department": ctx.org.a}))


def _key(make: Any, body: Any = None) -> Any:
    return lambda ctx: ({"identifier": make(ctx).identifier}, body)


CASES: list[Case] = [
    Case("product-import-product", "post", ("products.add_product",), (201,), lambda ctx: (
        {}, {**ctx.product_payload(), "identifier": "imported"})),
    Case("product-save-as-template", "post", ("products.view_product",
                                              "products.add_producttemplate"), (201,),
         lambda ctx: ({"identifier": ctx.product().identifier},
                      {"identifier": "tpl-saved", "name": "Saved"})),
    Case("product-codec-decode", "post", ("products.view_product",), (200,),
         _key(_codec_product, {"hex": "aa550200fd01c2753e"})),
    Case("product-codec-encode", "post", ("products.view_product",), (200,),
         _key(_codec_product, {"service": "config", "command": "setReportInterval",
                               "params": {"interval": 60}})),
    Case("product-template-list", "get", ("products.view_producttemplate",), (200,)),
    Case("product-template-list", "post", ("products.add_producttemplate",), (201,),
         lambda ctx: ({}, {"identifier": "tpl-new", "name": "New", "services": []})),
    Case("product-template-detail", "get", ("products.view_producttemplate",), (200,),
         _key(_template)),
    Case("product-template-detail", "patch", ("products.change_producttemplate",), (200,),
         _key(_template, {"description": "x"})),
    Case("product-template-detail", "put", ("products.change_producttemplate",), (200,),
         _key(_template, {"identifier": "tpl-thermo", "name": "Renamed", "services": []})),
    Case("product-template-detail", "delete", ("products.delete_producttemplate",), (204,),
         _key(_template)),
]
