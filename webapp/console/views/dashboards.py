"""Console pages: dashboards (see docs/console.md, "Dashboards").

- `/products/<identifier>/dashboard/?device=<identifier>`: the dashboard generated from a
  product's thing model for one of its devices (gauges, state timelines, daily counters, the
  command panel, open alarms), live over the device's WebSocket.
- `/dashboards/`: custom dashboards of the departments in the user's data scope; a grid of
  widgets laid out in the browser and validated here (`webapp.console.dashboards`).
- `/dashboards/data/…`: the widgets' JSON, read through the data scope.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST

from webapp.console import access
from webapp.console import dashboards as boards
from webapp.console.access import console_view
from webapp.console.inputs import CHARTABLE, NUMERIC, record_id
from webapp.console.models import Dashboard
from webapp.console.views.device_map import map_labels, tile_settings
from webapp.console.views.products import thing_model_rows
from webapp.core.errors import DomainError
from webapp.devices import actions as device_actions
from webapp.devices.choices import CommandSource, CommandStatus, ConnectStatus
from webapp.products.choices import Datatype
from webapp.products.thingmodel import export_services
from webapp.system import scope

PICKER_LIMIT = 500
CATALOGUE_LIMIT = 200
VIEW = ("console.view_dashboard", "devices.view_device")


def _json_error(exc: DomainError) -> JsonResponse:
    return JsonResponse({"code": exc.code, "detail": str(exc.detail)}, status=exc.http_status)


def _labels() -> dict[str, Any]:
    return {
        "connect": dict(ConnectStatus.choices), "command": dict(CommandStatus.choices),
        "yes": _("Yes"), "no": _("No"), "live": _("Live"), "connecting": _("Connecting…"),
        "time": _("Time"),
        "reconnecting": _("Reconnecting…"), "refused": _("Live updates not allowed"),
        "loading": _("Loading…"), "empty": _("No data in this time range."),
        "failed": _("Could not load the data."), "sending": _("Sending…"), "error": _("Error"),
        "no_alarms": _("No open alarms."), "no_value": _("No value yet"),
        "today": _("Today"),
    }


# The product dashboard --------------------------------------------------------------------

@console_view("products.view_product", "devices.view_device")
def product_dashboard(request: HttpRequest, identifier: str) -> HttpResponse:
    user: Any = request.user
    product = get_object_or_404(access.products_for(user), identifier=identifier)
    devices = access.devices_for(user).filter(product=product).order_by("identifier")
    choices = list(devices.values_list("identifier", "name")[:PICKER_LIMIT])
    wanted = request.GET.get("device") or (choices[0][0] if choices else "")
    device = devices.select_related("product").filter(identifier=wanted).first()
    if wanted and device is None:
        raise Http404
    services = thing_model_rows(export_services(product))
    panels = boards.product_panels(services)
    context: dict[str, Any] = {"product": product, "device": device, "choices": choices,
                               "panels": panels, "truncated": len(choices) >= PICKER_LIMIT}
    if device is not None:
        latest = boards.reported([device])[device.identifier]
        context["command_specs"] = [{**c, "service": s["code"]}
                                    for s in services for c in s["commands"]]
        context["can_command"] = user.has_perm("devices.add_devicecommand")
        context["can_alarms"] = user.has_perm("rules.view_alarm")
        if context["can_alarms"]:
            context["alarms"] = boards.open_alarms(user, [device.identifier])
        context["page_config"] = {
            "device": device.identifier, "ws": f"/ws/devices/{device.identifier}/",
            "latest": latest, "panels": panels,
            "series": reverse("console:dashboard-series"),
            "alarms": reverse("console:dashboard-alarms") if context["can_alarms"] else None,
            "counters": reverse("console:product-dashboard-counters", args=[identifier]),
            "labels": _labels(),
        }
    return TemplateResponse(request, "console/dashboards/product.html", context)


@require_GET
@console_view("products.view_product", "devices.view_device")
def product_counters(request: HttpRequest, identifier: str) -> HttpResponse:
    """Daily increases of the product's counters for one device, by local day of `tz`."""
    user: Any = request.user
    product = get_object_or_404(access.products_for(user), identifier=identifier)
    device = get_object_or_404(access.devices_for(user).filter(product=product).select_related(
        "product"), identifier=request.GET.get("device", ""))
    days = record_id(request.GET.get("days", "7"))
    if days is None or not 1 <= days <= boards.MAX_DAYS:
        return JsonResponse({"code": "invalid_days", "detail": _(
            "days is a whole number from 1 to {n}.").format(n=boards.MAX_DAYS)}, status=400)
    counters = boards.product_panels(export_services(product))["counter"]
    try:
        results = [{"key": c["key"], "days": boards.daily_deltas(
            user, device, c["service"], c["code"], days, request.GET.get("tz", ""))}
            for c in counters]
    except DomainError as exc:
        return _json_error(exc)
    return JsonResponse({"device": device.identifier, "results": results})


# Custom dashboards ------------------------------------------------------------------------

def _dashboards(user: Any) -> Any:
    return scope.restrict(Dashboard.objects.all(), user).select_related("department")


def _dashboard(request: HttpRequest, pk: int) -> Dashboard:
    return get_object_or_404(_dashboards(request.user), pk=pk)


@console_view("console.view_dashboard")
def dashboard_list(request: HttpRequest) -> HttpResponse:
    user: Any = request.user
    return TemplateResponse(request, "console/dashboards/list.html", {
        "dashboards": list(_dashboards(user).order_by("name", "id")),
        "departments": list(scope.department_queryset(user).order_by("name")),
        "can_add": user.has_perm("console.add_dashboard"),
        "can_change": user.has_perm("console.change_dashboard"),
        "can_delete": user.has_perm("console.delete_dashboard"),
    })


@require_POST
@console_view("console.add_dashboard")
def dashboard_create(request: HttpRequest) -> HttpResponse:
    user: Any = request.user
    department = None
    department_id = request.POST.get("department", "")
    if department_id:
        department = scope.department_queryset(user).filter(
            pk=record_id(department_id) or 0).first()
        if department is None:
            messages.error(request, _("That department is outside your data scope."))
            return redirect("console:dashboards")
    else:
        department = getattr(user, "department", None)
    try:
        dashboard = boards.create_dashboard(acting_user=user, name=request.POST.get("name"),
                                            department=department)
    except DomainError as exc:
        messages.error(request, str(exc.detail))
        return redirect("console:dashboards")
    messages.success(request, _("Dashboard {name} created.").format(name=dashboard.name))
    return redirect(f"{reverse('console:dashboard-view', args=[dashboard.pk])}?edit=1")


@require_POST
@console_view("console.change_dashboard")
def dashboard_rename(request: HttpRequest, pk: int) -> HttpResponse:
    dashboard = _dashboard(request, pk)
    try:
        boards.rename_dashboard(dashboard=dashboard, name=request.POST.get("name"))
    except DomainError as exc:
        messages.error(request, str(exc.detail))
    else:
        messages.success(request, _("Dashboard renamed."))
    return redirect("console:dashboards")


@require_POST
@console_view("console.delete_dashboard")
def dashboard_delete(request: HttpRequest, pk: int) -> HttpResponse:
    dashboard = _dashboard(request, pk)
    name = dashboard.name
    boards.delete_dashboard(dashboard=dashboard)
    messages.success(request, _("Dashboard {name} deleted.").format(name=name))
    return redirect("console:dashboards")


def _catalogue(user: Any) -> dict[str, Any]:
    """The devices in scope (at most CATALOGUE_LIMIT) and their products' properties and
    commands, for the widget editor."""
    devices = list(access.devices_for(user).select_related("product").order_by(
        "identifier")[:CATALOGUE_LIMIT])
    products: dict[str, Any] = {}
    for device in devices:
        product = device.product
        if product.identifier in products:
            continue
        services = export_services(product)
        products[product.identifier] = {
            "properties": [{"key": f"{s['code']}.{p['code']}", "service": s["code"],
                            "code": p["code"], "name": p.get("name") or p["code"],
                            "unit": p.get("unit") or "", "datatype": p["datatype"],
                            "numeric": p["datatype"] in NUMERIC,
                            "chartable": p["datatype"] in CHARTABLE | {Datatype.ENUM},
                            "min": p.get("min"), "max": p.get("max")}
                           for s in services for p in s["properties"]],
            "commands": [{"key": f"{s['code']}.{c['code']}", "service": s["code"],
                          "code": c["code"], "name": c.get("name") or c["code"]}
                         for s in services for c in s["commands"]],
        }
    return {"devices": [{"id": d.identifier, "name": d.name, "product": d.product.identifier}
                        for d in devices], "products": products,
            "truncated": len(devices) >= CATALOGUE_LIMIT}


def _meta(user: Any, layout: dict[str, Any]) -> dict[str, Any]:
    """Names, units and ranges of the properties of the layout's devices in the user's scope
    (what gauges, values and tables show beside the values)."""
    named = sorted(boards.layout_devices(layout))
    out: dict[str, Any] = {}
    models: dict[int, dict[str, Any]] = {}
    for device in access.devices_for(user).filter(identifier__in=named).select_related(
            "product"):
        if device.product_id not in models:
            models[device.product_id] = {
                f"{s['code']}.{p['code']}": {"name": p.get("name") or p["code"],
                                             "unit": p.get("unit") or "", "min": p.get("min"),
                                             "max": p.get("max"), "datatype": p["datatype"]}
                for s in export_services(device.product) for p in s["properties"]}
        out[device.identifier] = {"name": device.name, "properties": models[device.product_id]}
    return out


def _widget_labels() -> dict[str, Any]:
    return {
        **_labels(),
        "types": {"chart": _("Time-series chart"), "gauge": _("Gauge"),
                  "value": _("Value card"), "map": _("Device map"),
                  "alarms": _("Alarm list"), "table": _("Table of latest values"),
                  "command": _("Command button")},
        "remove": _("Remove"), "saved": _("Layout saved."), "saving": _("Saving…"),
        "unsaved": _("Unsaved changes"), "device": _("Device"), "property": _("Property"),
        "no_position": _("No position"), "unplaced": _("Without a position:"),
        "send": _("Send"), "sent": _("Command queued"),
        "last_hours": _("Last {n} hours"), "position": _("Position"),
        "status": _("Status"), "drag": _("Drag to move"), "resize": _("Drag to resize"),
        "empty_board": _("No widgets yet."),
        "edit": _("Edit"), "edit_widget": _("Edit the widget"), "add_widget": _("Add a widget"),
        "update": _("Apply to the widget"), "add": _("Add widget"), "cancel": _("Cancel"),
    }


@console_view(*VIEW)
def dashboard_view(request: HttpRequest, pk: int) -> HttpResponse:
    user: Any = request.user
    dashboard = _dashboard(request, pk)
    can_change = user.has_perm("console.change_dashboard")
    config: dict[str, Any] = {
        "id": dashboard.pk, "layout": dashboard.layout, "ws": f"/ws/dashboards/{dashboard.pk}/",
        "can_change": can_change, "edit": can_change and request.GET.get("edit") == "1",
        "can_command": user.has_perm("devices.add_devicecommand"),
        "urls": {"layout": reverse("console:dashboard-layout", args=[dashboard.pk]),
                 "command": reverse("console:dashboard-command", args=[dashboard.pk]),
                 "series": reverse("console:dashboard-series"),
                 "latest": reverse("console:dashboard-latest"),
                 "alarms": reverse("console:dashboard-alarms"),
                 "positions": reverse("console:dashboard-positions"),
                 "device": reverse("console:device", args=["__id__"])},
        "labels": _widget_labels(), "meta": _meta(user, dashboard.layout),
        "map": {**tile_settings(), "labels": map_labels()},
        "limits": {"widgets": boards.MAX_WIDGETS, "series": boards.MAX_SERIES,
                   "devices": boards.MAX_WIDGET_DEVICES, "columns": boards.COLUMNS,
                   "hours": boards.MAX_HOURS},
    }
    if can_change:
        config["catalogue"] = _catalogue(user)
    return TemplateResponse(request, "console/dashboards/board.html", {
        "dashboard": dashboard, "can_change": can_change, "page_config": config,
        "widget_types": config["labels"]["types"]})


@require_POST
@console_view("console.change_dashboard", "devices.view_device")
def dashboard_layout(request: HttpRequest, pk: int) -> HttpResponse:
    """Replace the layout with the JSON body (validated; see `boards.validate_layout`)."""
    dashboard = _dashboard(request, pk)
    if len(request.body) > boards.MAX_LAYOUT_BYTES:
        return JsonResponse({"code": "invalid_layout", "detail": _(
            "The layout is larger than {n} KiB.").format(n=boards.MAX_LAYOUT_BYTES // 1024)},
            status=400)
    try:
        boards.save_layout(acting_user=request.user, dashboard=dashboard,
                           layout=request.body.decode("utf-8", errors="replace"))
    except DomainError as exc:
        return _json_error(exc)
    return JsonResponse({"layout": dashboard.layout, "updated": dashboard.updated.isoformat()})


@require_POST
@console_view("devices.view_device", "devices.add_devicecommand", "console.view_dashboard")
def dashboard_command(request: HttpRequest, pk: int) -> HttpResponse:
    """Send the command a command widget of the dashboard is configured with."""
    dashboard = _dashboard(request, pk)
    widget_id = request.POST.get("widget", "")
    widget = next((w for w in dashboard.layout.get("widgets", [])
                   if w.get("id") == widget_id and w.get("type") == "command"), None)
    if widget is None:
        return JsonResponse({"code": "unknown_widget", "detail": _("No such command button.")},
                            status=404)
    device = access.devices_for(request.user).filter(identifier=widget["device"]).first()
    if device is None:
        return JsonResponse({"code": "unknown_device", "detail": _(
            "Device {identifier} does not exist or is outside your data scope.").format(
            identifier=widget["device"])}, status=404)
    try:
        record = device_actions.send_command(
            acting_user=request.user, device=device, service=widget["service"],
            command=widget["command"], params=widget.get("params") or {},
            source=CommandSource.ADMIN)
    except DomainError as exc:
        return _json_error(exc)
    record.refresh_from_db()
    return JsonResponse({"id": record.pk, "status": record.status,
                         "status_label": record.get_status_display()}, status=201)


# Widget data ------------------------------------------------------------------------------

@require_GET
@console_view("devices.view_device")
def data_series(request: HttpRequest) -> HttpResponse:
    """`?s=device:service.property` (repeated, at most MAX_SERIES) and `hours=N` or
    `start`/`end`: each series' points, averaged into at most MAX_BUCKETS intervals."""
    try:
        specs = boards.parse_series(request.GET.getlist("s"))
        start, end = boards.window_of(request.GET)
        results = boards.series(request.user, specs, start, end)
    except DomainError as exc:
        return _json_error(exc)
    return JsonResponse({"start": start.isoformat(), "end": end.isoformat(),
                         "series": results})


def _identifiers(request: HttpRequest) -> list[str]:
    values = request.GET.getlist("d")[:boards.MAX_WIDGET_DEVICES]
    return [v for v in values if boards.IDENTIFIER_RE.match(v)]


@require_GET
@console_view("devices.view_device")
def data_latest(request: HttpRequest) -> HttpResponse:
    return JsonResponse(boards.latest_values(request.user, _identifiers(request)))


@require_GET
@console_view("devices.view_device")
def data_positions(request: HttpRequest) -> HttpResponse:
    return JsonResponse(boards.positions(request.user, _identifiers(request)))


@require_GET
@console_view("devices.view_device", "rules.view_alarm")
def data_alarms(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"alarms": boards.open_alarms(request.user, _identifiers(request))})


urlpatterns: list[URLPattern] = [
    path("products/<str:identifier>/dashboard/", product_dashboard, name="product-dashboard"),
    path("products/<str:identifier>/dashboard/counters/", product_counters,
         name="product-dashboard-counters"),
    path("dashboards/", dashboard_list, name="dashboards"),
    path("dashboards/new/", dashboard_create, name="dashboard-new"),
    path("dashboards/data/series/", data_series, name="dashboard-series"),
    path("dashboards/data/latest/", data_latest, name="dashboard-latest"),
    path("dashboards/data/alarms/", data_alarms, name="dashboard-alarms"),
    path("dashboards/data/positions/", data_positions, name="dashboard-positions"),
    path("dashboards/<int:pk>/", dashboard_view, name="dashboard-view"),
    path("dashboards/<int:pk>/layout/", dashboard_layout, name="dashboard-layout"),
    path("dashboards/<int:pk>/rename/", dashboard_rename, name="dashboard-rename"),
    path("dashboards/<int:pk>/delete/", dashboard_delete, name="dashboard-delete"),
    path("dashboards/<int:pk>/command/", dashboard_command, name="dashboard-command"),
]
