"""Console pages: debugging devices at `/debug/` (docs/console.md "Debugging").

The live stream of device messages (over `/ws/debug/`, `webapp.console.consumers_debug`),
publishing a message to a device, simulating one from a device, disconnecting a device and
broadcasting a command to the devices of a product (or of one of its groups). Every POST names
its device (or product) by identifier and is refused as unknown outside the user's scope; the
actions are in `webapp.devices.actions.debug`.
"""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST

from webapp.console import access, inputs
from webapp.console.access import console_view
from webapp.console.consumers_debug import PERMISSIONS as STREAM_PERMISSIONS
from webapp.console.views.products import thing_model_rows
from webapp.core.errors import DomainError
from webapp.devices import downlink
from webapp.devices.actions import debug as debug_actions
from webapp.devices.choices import CommandStatus
from webapp.devices.models import Device, DeviceCommand, DeviceGroup
from webapp.products.models import Product
from webapp.products.thingmodel import export_services
from webapp.system import scope
from webapp.telemetry.choices import Direction, MessageResult

# Devices offered in the page's device lists (any other in scope can still be typed).
DEVICE_CHOICES = 500
# The browser keeps at most this many lines of the stream.
BUFFER_LINES = 500
OPEN = (CommandStatus.PENDING, CommandStatus.SENT)

PUBLISH = ("devices.view_device", "devices.debug_device")
BROADCAST = ("devices.view_device", "devices.add_devicecommand")


def _refuse(detail: str, code: str, status: int = 400, **extra: Any) -> JsonResponse:
    return JsonResponse({"code": code, "detail": detail, **extra}, status=status)


def _device_in_scope(request: HttpRequest) -> Device | JsonResponse:
    identifier = request.POST.get("device", "").strip()
    device = access.devices_for(request.user).select_related("product", "gateway").filter(
        identifier=identifier).first() if identifier else None
    if device is None:
        return _refuse(_("Device {identifier} does not exist.").format(
            identifier=identifier[:64]), "unknown_device", 404)
    return device


def _payload(request: HttpRequest) -> bytes | JsonResponse:
    payload = request.POST.get("payload", "").encode()
    if len(payload) > debug_actions.MAX_PAYLOAD_BYTES:
        return _refuse(_("The payload has {size} bytes; at most {max} are allowed.").format(
            size=len(payload), max=debug_actions.MAX_PAYLOAD_BYTES), "payload_too_large")
    return payload


def _target(request: HttpRequest) -> tuple[Device, bytes] | JsonResponse:
    """The device in scope and the payload of a publish or simulate form, or the refusal."""
    device = _device_in_scope(request)
    if isinstance(device, JsonResponse):
        return device
    payload = _payload(request)
    if isinstance(payload, JsonResponse):
        return payload
    return device, payload


def _example(product: Product) -> str:
    """A `datas` payload for the product's devices, with a value for each property."""
    services = []
    for service in export_services(product):
        data = {}
        for p in service["properties"]:
            low = p.get("min")
            data[p["code"]] = (
                (low if low is not None else 1) if p["datatype"] in inputs.NUMERIC
                else (p.get("enum_values") or ["on"])[0] if p["datatype"] in ("enum", "string")
                else True if p["datatype"] == "bool" else None)
        services.append({"serviceCode": service["code"],
                         "data": {k: v for k, v in data.items() if v is not None}})
    return json.dumps({"devices": [{"deviceId": "{device}", "services": services}]})


@console_view(*STREAM_PERMISSIONS)
def debug(request: HttpRequest) -> HttpResponse:
    user: Any = request.user
    products = list(access.products_for(user).order_by("name"))
    devices = list(access.devices_for(user).select_related("product")
                   .order_by("identifier")[:DEVICE_CHOICES])
    chosen = next((p for p in products if p.identifier == request.GET.get("product")), None)
    context: dict[str, Any] = {
        "products": products, "devices": devices,
        "directions": Direction.choices, "results": MessageResult.choices,
        "can_publish": user.has_perms(PUBLISH),
        "can_disconnect": user.has_perm("devices.view_device") and (
            user.has_perm("devices.change_device") or user.has_perm("devices.debug_device")),
        "can_broadcast": user.has_perms(BROADCAST),
        "suffixes": debug_actions.SIMULATED_SUFFIXES,
        "max_payload": debug_actions.MAX_PAYLOAD_BYTES,
        "max_broadcast": debug_actions.MAX_BROADCAST_DEVICES,
        "broadcast_product": chosen,
    }
    if chosen is not None and context["can_broadcast"]:
        services = thing_model_rows(export_services(chosen))
        context["command_specs"] = [{**c, "service": s["code"]} for s in services
                                    for c in s["commands"]]
        context["groups"] = scope.restrict(DeviceGroup.objects.filter(
            devices__product=chosen).distinct(), user).order_by("name")
        context["broadcast_count"] = access.devices_for(user).filter(product=chosen).count()
    context["page_config"] = {
        "ws": "/ws/debug/",
        "buffer": BUFFER_LINES,
        "status": reverse("console:debug-broadcast-status"),
        "examples": {p.identifier: _example(p) for p in products[:100]},
        "devices": {d.identifier: d.product.identifier for d in devices},
        "labels": {
            "result": dict(MessageResult.choices), "direction": dict(Direction.choices),
            "command": dict(CommandStatus.choices),
            "live": _("Live"), "connecting": _("Connecting…"), "paused": _("Paused"),
            "reconnecting": _("Reconnecting…"), "refused": _("Live updates not allowed"),
            "pause": _("Pause"), "resume": _("Resume"), "sending": _("Sending…"),
            "error": _("Error"), "truncated": _("(truncated)"),
            "published": _("Published on {topic} ({bytes} bytes)."),
            "accepted": _("Accepted: {landed} item(s) stored."),
            "rejected": _("Rejected: {reason}"),
            "disconnected": _("Disconnect sent to {device}."),
            "offline": _("{device} was not connected."),
            "pending_count": _("{open} of {total} still open…"),
            "done": _("All commands finished."),
            "lines": _("{count} lines"),
        },
    }
    return TemplateResponse(request, "console/debug/page.html", context)


@require_POST
@console_view(*PUBLISH)
def publish(request: HttpRequest) -> HttpResponse:
    """Send the user's payload to a connected device, on one of its own topics."""
    target = _target(request)
    if isinstance(target, JsonResponse):
        return target
    device, payload = target
    if request.POST.get("format", "json") == "json":
        try:
            body = json.loads(payload)
        except RecursionError:
            return _refuse(_("The payload is nested too deeply."), "malformed_json")
        except ValueError as exc:
            return _refuse(_("The payload is not valid JSON: {error}").format(error=exc),
                           "malformed_json")
        if request.POST.get("envelope"):
            payload = downlink.envelope(body)
    try:
        qos = int(request.POST.get("qos", "1"))
    except ValueError:
        qos = -1
    try:
        topic = debug_actions.publish_message(device=device,
                                              suffix=request.POST.get("suffix", "").strip(),
                                              payload=payload, qos=qos)
    except DomainError as exc:
        return _refuse(str(exc.detail), exc.code or "invalid", exc.http_status)
    return JsonResponse({"topic": topic, "bytes": len(payload), "qos": qos})


@require_POST
@console_view(*PUBLISH)
def simulate(request: HttpRequest) -> HttpResponse:
    """Handle a payload as if the device had published it (validated like a real one)."""
    target = _target(request)
    if isinstance(target, JsonResponse):
        return target
    device, payload = target
    try:
        result = debug_actions.simulate_uplink(device=device,
                                               suffix=request.POST.get("suffix", "").strip(),
                                               payload=payload)
    except DomainError as exc:
        return _refuse(str(exc.detail), exc.code or "invalid", exc.http_status)
    return JsonResponse({"topic": result.topic, "accepted": result.accepted,
                         "result": MessageResult.ACCEPTED if result.accepted
                         else MessageResult.REJECTED,
                         "reason": result.reason, "landed": result.landed,
                         "answer": result.answer})


@require_POST
@console_view("devices.view_device")
def disconnect(request: HttpRequest) -> HttpResponse:
    """End the device's connections now (it may connect again)."""
    user: Any = request.user
    if not (user.has_perm("devices.change_device") or user.has_perm("devices.debug_device")):
        return _refuse(_("You may not disconnect devices."), "forbidden", 403)
    device = _device_in_scope(request)
    if isinstance(device, JsonResponse):
        return device
    online = debug_actions.disconnect_device(device=device)
    return JsonResponse({"device": device.identifier, "online": online})


@require_POST
@console_view(*BROADCAST)
def broadcast(request: HttpRequest) -> HttpResponse:
    """One command of the product's thing model to each of its devices in scope (or of one
    of its groups), typed from the form."""
    user: Any = request.user
    product = access.products_for(user).filter(
        identifier=request.POST.get("product", "")).first()
    if product is None:
        return _refuse(_("Product {identifier} does not exist.").format(
            identifier=request.POST.get("product", "")[:64]), "unknown_product", 404)
    devices = access.devices_for(user).filter(product=product).select_related(
        "product", "gateway").order_by("identifier")
    group_id = request.POST.get("group", "")
    if group_id:
        group_pk = inputs.record_id(group_id)
        group = scope.restrict(DeviceGroup.objects.filter(pk=group_pk), user).first() \
            if group_pk is not None else None
        if group is None:
            return _refuse(_("Device group {id} does not exist.").format(id=group_id[:20]),
                           "unknown_group", 404)
        devices = devices.filter(groups=group)
    service_code = request.POST.get("service", "")
    command_code = request.POST.get("command", "")
    spec = next((c for s in export_services(product) if s["code"] == service_code
                 for c in s["commands"] if c["code"] == command_code), None)
    if spec is None:
        return _refuse(_("Unknown command {service}.{command}").format(
            service=service_code[:64], command=command_code[:64]), "unknown_command")
    params, errors = inputs.read_values(spec["requests"], request.POST, "p.")
    if errors:
        return _refuse("; ".join(f"{k}: {v}" for k, v in errors.items()), "invalid_command",
                       errors=errors)
    targets = list(devices[:debug_actions.MAX_BROADCAST_DEVICES + 1])
    if not targets:
        return _refuse(_("No device to send it to."), "no_devices")
    try:
        results = debug_actions.broadcast_command(
            acting_user=user, devices=targets, service=service_code, command=command_code,
            params=params)
    except DomainError as exc:
        return _refuse(str(exc.detail), exc.code or "invalid", exc.http_status)
    return JsonResponse({"results": [_result_json(r.device.identifier, r.command, r.error)
                                     for r in results]}, status=201)


def _result_json(device: str, command: DeviceCommand | None, error: str = ""
                 ) -> dict[str, Any]:
    if command is None:
        return {"device": device, "id": None, "status": "failed",
                "status_label": CommandStatus.FAILED.label, "error": error, "open": False}
    return {"device": device, "id": command.pk, "status": command.status,
            "status_label": command.get_status_display(),
            "error": command.error or "", "response": command.response,
            "open": command.status in OPEN}


@require_GET
@console_view(*BROADCAST)
def broadcast_status(request: HttpRequest) -> HttpResponse:
    """The status of a broadcast's commands (`?ids=1,2,3`), those of devices in scope."""
    named = (inputs.record_id(i) for i in request.GET.get("ids", "").split(",")[
        :debug_actions.MAX_BROADCAST_DEVICES])
    ids = [pk for pk in named if pk is not None]
    commands = DeviceCommand.objects.filter(
        pk__in=ids, device__in=access.devices_for(request.user).values("pk")).select_related(
        "device")
    return JsonResponse({"results": [_result_json(c.device.identifier, c)
                                     for c in commands.order_by("device__identifier")]})


urlpatterns: list[URLPattern] = [
    path("debug/", debug, name="debug"),
    path("debug/publish/", publish, name="debug-publish"),
    path("debug/simulate/", simulate, name="debug-simulate"),
    path("debug/disconnect/", disconnect, name="debug-disconnect"),
    path("debug/broadcast/", broadcast, name="debug-broadcast"),
    path("debug/broadcast/status/", broadcast_status, name="debug-broadcast-status"),
]
