"""The dashboard: products, devices by connection, messages of the last hour, open alarms and
the latest rejected messages — each card only for users who may see its records."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from webapp.console import access, stats
from webapp.console.access import console_view


@console_view()
def dashboard(request: HttpRequest) -> HttpResponse:
    user: Any = request.user
    context: dict[str, Any] = {}
    if user.has_perm("products.view_product"):
        context["product_count"] = access.products_for(user).count()
    if user.has_perm("devices.view_device"):
        context["devices"] = stats.device_counts(user)
        context["message_counts"] = stats.message_counts(user)
        context["rejected"] = stats.latest_rejected(user)
    if user.has_perm("rules.view_alarm"):
        context["alarms"] = stats.alarm_counts(user)
        context["alarm_total"] = sum(a["count"] for a in context["alarms"])
    return TemplateResponse(request, "console/dashboard.html", context)
