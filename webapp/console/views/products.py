"""Products and their thing model."""

from __future__ import annotations

from typing import Any

from django.core.paginator import Paginator
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import reverse

from webapp.console import access
from webapp.console.access import console_view
from webapp.console.inputs import CHARTABLE, range_text, widget
from webapp.devices.choices import ConnectStatus
from webapp.products.choices import AccessMode, Datatype
from webapp.products.filtersets import ProductFilterSet
from webapp.products.thingmodel import export_services

PAGE_SIZE = 25


@console_view("products.view_product")
def product_list(request: HttpRequest) -> HttpResponse:
    user: Any = request.user
    filterset = ProductFilterSet(request.GET, queryset=access.products_for(user)
                                 .select_related("department").order_by("identifier"))
    page = Paginator(filterset.qs, PAGE_SIZE).get_page(request.GET.get("page"))
    counts = dict(access.devices_for(user).filter(
        product__in=[p.pk for p in page.object_list]).order_by().values(
        "product").annotate(n=Count("pk")).values_list("product", "n"))
    for product in page.object_list:
        product.device_count = counts.get(product.pk, 0)
    return TemplateResponse(request, "console/products/list.html", {
        "page": page, "filters": request.GET, "query": _without_page(request)})


def _without_page(request: HttpRequest) -> str:
    query = request.GET.copy()
    query.pop("page", None)
    return query.urlencode()


def thing_model_rows(services: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The services of `export_services` with what the templates show of each field."""
    access_labels = dict(AccessMode.choices)
    rows = []
    for service in services:
        rows.append({
            **service,
            "properties": [{**p, **widget(p), "range": range_text(p),
                            "access_label": access_labels.get(p["access"], p["access"]),
                            "writable": "W" in p["access"],
                            "chartable": p["datatype"] in CHARTABLE}
                           for p in service["properties"]],
            "commands": [{**c,
                          "requests": [{**p, **widget(p), "range": range_text(p)}
                                       for p in c["requests"]],
                          "responses": [{**p, **widget(p), "range": range_text(p)}
                                        for p in c["responses"]]}
                         for c in service["commands"]],
            "events": [{**e, "params": [{**p, **widget(p), "range": range_text(p)}
                                        for p in e["params"]]}
                       for e in service["events"]],
        })
    return rows


@console_view("products.view_product")
def product_detail(request: HttpRequest, identifier: str) -> HttpResponse:
    user: Any = request.user
    product = get_object_or_404(access.products_for(user).select_related("department"),
                                identifier=identifier)
    counts = {row["connect_status"]: row["n"] for row in access.devices_for(user).filter(
        product=product).order_by().values("connect_status").annotate(n=Count("pk"))}
    admin_url = None
    if user.is_staff and user.has_perm("products.change_product"):
        admin_url = reverse("admin:products_product_change", args=[product.pk])
    return TemplateResponse(request, "console/products/detail.html", {
        "product": product, "services": thing_model_rows(export_services(product)),
        "device_counts": [(value, label, counts.get(value, 0))
                          for value, label in ConnectStatus.choices],
        "device_total": sum(counts.values()), "admin_url": admin_url,
        "datatypes": Datatype.choices,
    })
