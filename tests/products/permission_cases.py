"""Permission cases of the product import and template API for the matrix in
tests/system/test_permissions.py (401 / 403 / success)."""

from __future__ import annotations

from typing import Any

from tests.system.permission_cases import Case


def _template(ctx: Any) -> Any:
    from webapp.products.models import ProductTemplate

    return ctx.once("template", lambda: ProductTemplate.objects.create(
        identifier="tpl-thermo", name="Thermometer template", services=[],
        department=ctx.org.a))


def _key(make: Any, body: Any = None) -> Any:
    return lambda ctx: ({"identifier": make(ctx).identifier}, body)


CASES: list[Case] = [
    Case("product-import-product", "post", ("products.add_product",), (201,), lambda ctx: (
        {}, {**ctx.product_payload(), "identifier": "imported"})),
    Case("product-save-as-template", "post", ("products.view_product",
                                              "products.add_producttemplate"), (201,),
         lambda ctx: ({"identifier": ctx.product().identifier},
                      {"identifier": "tpl-saved", "name": "Saved"})),
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
