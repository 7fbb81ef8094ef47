"""Devices: the filtered list and the device page (latest values, telemetry chart,
message log, live updates, commands and the desired shadow)."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from webapp.console import access, inputs
from webapp.console.access import console_view
from webapp.console.views.products import thing_model_rows
from webapp.core.errors import DomainError
from webapp.devices import actions as device_actions
from webapp.devices.choices import CommandSource, CommandStatus, ConnectStatus, DeviceStatus
from webapp.devices.filtersets import DeviceFilterSet
from webapp.devices.models import Device, DeviceCommand, DeviceConnection
from webapp.products.choices import Datatype
from webapp.products.thingmodel import export_services
from webapp.rules.choices import OPEN_ALARM_STATUSES
from webapp.telemetry.choices import Direction, MessageResult
from webapp.telemetry.models import DeviceMessage

PAGE_SIZE = 25
LOG_ROWS = 50
COMMAND_ROWS = 10
CONNECTION_ROWS = 10


def _query_without(request: HttpRequest, *names: str) -> str:
    query = request.GET.copy()
    for name in names:
        query.pop(name, None)
    return query.urlencode()


@console_view("devices.view_device")
def device_list(request: HttpRequest) -> HttpResponse:
    user: Any = request.user
    filterset = DeviceFilterSet(request.GET, queryset=access.devices_for(user).select_related(
        "product", "department").order_by("identifier"))
    page = Paginator(filterset.qs, PAGE_SIZE).get_page(request.GET.get("page"))
    return TemplateResponse(request, "console/devices/list.html", {
        "page": page, "filters": request.GET, "query": _query_without(request, "page"),
        "products": access.products_for(user).order_by("name").values_list(
            "identifier", "name"),
        "statuses": DeviceStatus.choices, "connections": ConnectStatus.choices,
        "invalid": not filterset.is_valid(),
    })


def _device(request: HttpRequest, identifier: str) -> Device:
    return get_object_or_404(access.devices_for(request.user).select_related(
        "product", "department", "gateway"), identifier=identifier)


def _property_rows(services: list[dict[str, Any]], doc: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for service in services:
        reported = doc["reported"].get(service["code"], {})
        desired = doc["desired"].get(service["code"], {})
        for prop in service["properties"]:
            entry = reported.get(prop["code"]) or {}
            value = entry.get("value")
            rows.append({
                **prop, "service": service["code"], "service_name": service["name"],
                "key": f"{service['code']}.{prop['code']}",
                "value": value, "has_value": "value" in entry,
                "value_text": _display(value), "ts": entry.get("ts"),
                "desired": desired.get(prop["code"]),
                "has_desired": prop["code"] in desired,
                "desired_text": (json.dumps(desired[prop["code"]])
                                 if prop["code"] in desired else ""),
                "desired_input": _input_text(desired.get(prop["code"]), prop["datatype"]),
            })
    return rows


def _display(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return _("Yes") if value else _("No")
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _input_text(value: Any, datatype: str) -> str:
    """A desired value as its input shows it (what `inputs.parse_value` reads back)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and datatype not in (Datatype.ENUM, Datatype.JSON):
        return value
    return json.dumps(value)


@console_view("devices.view_device")
def device_detail(request: HttpRequest, identifier: str) -> HttpResponse:
    user: Any = request.user
    device = _device(request, identifier)
    services = thing_model_rows(export_services(device.product))
    doc = device_actions.shadow_document(device)
    log_filter = request.GET.get("log", "")
    log = device_messages(device, log_filter)
    properties = _property_rows(services, doc)
    context: dict[str, Any] = {
        "device": device, "services": services, "properties": properties,
        "command_specs": [{**c, "service": s["code"]} for s in services for c in s["commands"]],
        "shadow": doc, "desired_json": json.dumps(doc["desired"], indent=2),
        "delta_json": json.dumps(doc["delta"]) if doc["delta"] else "",
        "log": log, "log_filter": log_filter,
        "connections": list(DeviceConnection.objects.filter(device=device)
                            .order_by("-at", "-id")[:CONNECTION_ROWS]),
        "can_command": user.has_perms(["devices.view_device", "devices.add_devicecommand"]),
        "can_shadow": user.has_perm("devices.change_device"),
        "admin_url": (reverse("admin:devices_device_change", args=[device.pk])
                      if user.is_staff and user.has_perm("devices.change_device") else None),
    }
    context["page_config"] = _page_config(device, properties)
    if user.has_perm("devices.view_devicecommand"):
        context["commands"] = list(DeviceCommand.objects.filter(device=device)
                                   .order_by("-created", "-id")[:COMMAND_ROWS])
    if user.has_perm("rules.view_alarm"):
        context["alarms"] = list(access.alarms_for(user).filter(
            device=device, status__in=OPEN_ALARM_STATUSES).order_by("-last_seen")[:10])
    return TemplateResponse(request, "console/devices/detail.html", context)


def _page_config(device: Device, properties: list[dict[str, Any]]) -> dict[str, Any]:
    """What device.js needs: where to connect, what to chart, and its translated words."""
    return {
        "device": device.identifier,
        "ws": f"/ws/devices/{device.identifier}/",
        "telemetry": reverse("device-telemetry", args=[device.identifier]),
        "properties": {p["key"]: {"service": p["service"], "code": p["code"], "name": p["name"],
                                  "unit": p["unit"], "datatype": p["datatype"]}
                       for p in properties},
        "labels": {
            "connect": dict(ConnectStatus.choices),
            "result": dict(MessageResult.choices),
            "direction": dict(Direction.choices),
            "command": dict(CommandStatus.choices),
            "yes": _("Yes"), "no": _("No"),
            "live": _("Live"), "connecting": _("Connecting…"),
            "reconnecting": _("Reconnecting…"), "refused": _("Live updates not allowed"),
            "loading": _("Loading…"), "empty": _("No data in this time range."),
            "points": _("{count} points"), "failed": _("Could not load the data."),
            "sending": _("Sending…"), "error": _("Error"), "time": _("Time"),
        },
    }


def device_messages(device: Device, result: str = "") -> list[Any]:
    queryset = DeviceMessage.objects.filter(device_identifier=device.identifier)
    if result in MessageResult.values:
        queryset = queryset.filter(result=result)
    return list(queryset.order_by("-ts", "-id")[:LOG_ROWS])


def _wants_json(request: HttpRequest) -> bool:
    return "application/json" in request.headers.get("Accept", "")


def _command_json(record: DeviceCommand) -> dict[str, Any]:
    return {"id": record.pk, "service": record.service, "command": record.command,
            "params": record.params, "status": record.status,
            "status_label": record.get_status_display(), "response": record.response,
            "error": record.error, "timeout": record.timeout,
            "url": reverse("command-detail", args=[record.pk])}


def _refusal(request: HttpRequest, device: Device, detail: str, code: str,
             status: int = 400, errors: Any = None) -> HttpResponse:
    if _wants_json(request):
        return JsonResponse({"code": code, "detail": detail, "errors": errors or {}},
                            status=status)
    messages.error(request, detail)
    return redirect("console:device", device.identifier)


@require_POST
@console_view("devices.view_device", "devices.add_devicecommand")
def send_command(request: HttpRequest, identifier: str) -> HttpResponse:
    """Send one command of the thing model, its parameters typed from the form."""
    device = _device(request, identifier)
    service_code = request.POST.get("service", "")
    command_code = request.POST.get("command", "")
    spec = next((c for s in export_services(device.product) if s["code"] == service_code
                 for c in s["commands"] if c["code"] == command_code), None)
    if spec is None:
        return _refusal(request, device, _("Unknown command {service}.{command}").format(
            service=service_code, command=command_code), "unknown_command")
    params, errors = inputs.read_values(spec["requests"], request.POST, "p.")
    if errors:
        return _refusal(request, device, "; ".join(f"{k}: {v}" for k, v in errors.items()),
                        "invalid_command", errors=errors)
    try:
        record = device_actions.send_command(
            acting_user=request.user, device=device, service=service_code,
            command=command_code, params=params, source=CommandSource.ADMIN)
    except DomainError as exc:
        return _refusal(request, device, str(exc.detail), exc.code, exc.http_status,
                        exc.extra.get("errors"))
    record.refresh_from_db()
    if _wants_json(request):
        return JsonResponse(_command_json(record), status=201)
    messages.success(request, _("Command {service}.{command} queued ({status}).").format(
        service=service_code, command=command_code, status=record.get_status_display()))
    return redirect("console:device", device.identifier)


@require_POST
@console_view("devices.view_device", "devices.change_device")
def set_desired(request: HttpRequest, identifier: str) -> HttpResponse:
    """Replace the desired state with the writable properties filled in, at a version."""
    device = _device(request, identifier)
    desired: dict[str, dict[str, Any]] = {}
    problems: dict[str, str] = {}
    for service in export_services(device.product):
        writable = [p for p in service["properties"] if "W" in p["access"]]
        values, errors = inputs.read_values(writable, request.POST, f"d.{service['code']}.")
        if values:
            desired[service["code"]] = values
        problems.update({f"{service['code']}.{k}": v for k, v in errors.items()})
    if problems:
        return _refusal(request, device, "; ".join(f"{k}: {v}" for k, v in problems.items()),
                        "invalid_shadow", errors=problems)
    version_text = request.POST.get("version", "")
    version = int(version_text) if version_text.isdigit() else None
    try:
        doc = device_actions.set_desired(device=device,
                                         desired=desired, version=version)
    except DomainError as exc:
        return _refusal(request, device, str(exc.detail), exc.code, exc.http_status,
                        exc.extra.get("errors"))
    if _wants_json(request):
        return JsonResponse({"desired": doc["desired"], "version": doc["version"]})
    messages.success(request, _("Desired state saved (version {version}).").format(
        version=doc["version"]))
    return redirect("console:device", device.identifier)
