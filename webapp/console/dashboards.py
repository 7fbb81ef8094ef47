"""Dashboards: the one generated from a product's thing model, and custom dashboards (docs/
console.md, "Dashboards").

Custom dashboards are `webapp.console.models.Dashboard` rows; every change goes through the
functions here (`create_dashboard`, `rename_dashboard`, `save_layout`, `delete_dashboard`).
A layout is JSON the browser sends, so it is hostile: `validate_layout` bounds it (widgets,
series, devices, sizes) and refuses any device outside the user's data scope and any property
or command the device's thing model does not have.

The widgets' data (`series`, `daily_deltas`, `latest_values`, `open_alarms`) is read through the
data scope and the telemetry query layer, with bounded windows and point counts.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _

from webapp.console import access
from webapp.console.inputs import CHARTABLE, INTEGER, NUMERIC
from webapp.console.models import Dashboard
from webapp.core.errors import DomainError
from webapp.core.redis import get_redis, keys
from webapp.devices.models import Device, DeviceShadow
from webapp.products.choices import Datatype
from webapp.products.thingmodel import export_services, thing_model
from webapp.rules.choices import OPEN_ALARM_STATUSES
from webapp.system import scope
from webapp.telemetry import queries

# Bounds of a layout.
MAX_WIDGETS = 24
MAX_SERIES = 8
MAX_WIDGET_DEVICES = 20
MAX_TABLE_PROPERTIES = 8
MAX_LAYOUT_BYTES = 64 * 1024
MAX_TITLE = 100
COLUMNS = 12
MAX_ROW = 200
MAX_HEIGHT = 12
# Bounds of the widgets' data.
MAX_WINDOW = timedelta(days=31)
MAX_HOURS = 31 * 24
MAX_BUCKETS = 500  # points per numeric series (averaged by interval)
MAX_RAW = 2000  # points per enum/bool series (the newest)
MAX_DAYS = 31
MAX_ALARMS = 50

WIDGET_TYPES = ("chart", "gauge", "value", "map", "alarms", "table", "command")
IDENTIFIER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
CODE_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
WIDGET_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
# Counters: integer properties named as totals or counts (the thing model has no counter
# flag): `energy_total`, `total`, `pulse_count`, `counter`, `errorCount`, `totalEnergy`.
COUNTER_RE = re.compile(r"(^|_)(total|count|counter)s?($|_)|^total[A-Z]|[a-z](Total|Count)s?$")


class LayoutError(DomainError):
    code = "invalid_layout"


# The product dashboard --------------------------------------------------------------------

def is_counter(prop: dict[str, Any]) -> bool:
    return prop["datatype"] in INTEGER and bool(COUNTER_RE.search(prop["code"]))


def kind_of(prop: dict[str, Any]) -> str:
    """How the product dashboard shows a property: gauge, counter, state, reading or text."""
    datatype = prop["datatype"]
    if is_counter(prop):
        return "counter"
    if datatype in NUMERIC:
        return "gauge" if prop.get("min") is not None and prop.get("max") is not None \
            else "reading"
    if datatype in (Datatype.BOOL, Datatype.ENUM):
        return "state"
    return "text"


def product_panels(services: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The product's properties grouped by how the dashboard shows them."""
    panels: dict[str, list[dict[str, Any]]] = {
        "gauge": [], "reading": [], "counter": [], "state": [], "text": []}
    for service in services:
        for prop in service["properties"]:
            panels[kind_of(prop)].append({
                "key": f"{service['code']}.{prop['code']}", "service": service["code"],
                "code": prop["code"], "name": prop.get("name") or prop["code"],
                "unit": prop.get("unit") or "", "datatype": prop["datatype"],
                "min": prop.get("min"), "max": prop.get("max"),
                "enum_values": prop.get("enum_values") or []})
    return panels


# Custom dashboards: changes ---------------------------------------------------------------

def _name(name: Any) -> str:
    text = str(name or "").strip()
    if not text:
        raise DomainError(_("A dashboard needs a name."), code="invalid_name")
    if len(text) > MAX_TITLE:
        raise DomainError(_("A name has at most {n} characters.").format(n=MAX_TITLE),
                          code="invalid_name")
    return text


def create_dashboard(*, acting_user: Any, name: Any, department: Any) -> Dashboard:
    if department is not None and not scope.can_assign(acting_user, department):
        raise DomainError(_("That department is outside your data scope."),
                          code="invalid_department")
    return Dashboard.objects.create(name=_name(name), department=department,
                                    created_by=acting_user)


def rename_dashboard(*, dashboard: Dashboard, name: Any) -> Dashboard:
    dashboard.name = _name(name)
    dashboard.save(update_fields=["name", "updated"])
    return dashboard


def save_layout(*, acting_user: Any, dashboard: Dashboard, layout: Any) -> Dashboard:
    cleaned = validate_layout(acting_user, layout)
    with transaction.atomic():
        dashboard.layout = cleaned
        dashboard.save(update_fields=["layout", "updated"])
    return dashboard


def delete_dashboard(*, dashboard: Dashboard) -> None:
    dashboard.delete()


# Custom dashboards: the layout ------------------------------------------------------------

def _fail(message: str) -> LayoutError:
    return LayoutError(message)


def _int(widget: dict[str, Any], name: str, low: int, high: int, default: int) -> int:
    value = widget.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _fail(_("{field} must be a whole number from {low} to {high}.").format(
            field=name, low=low, high=high))
    return value


def _text(value: Any, limit: int = MAX_TITLE) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > limit:
        raise _fail(_("A title is text of at most {n} characters.").format(n=limit))
    return value.strip()


def _identifier(value: Any) -> str:
    if not isinstance(value, str) or not IDENTIFIER_RE.match(value):
        raise _fail(_("{value} is not a device identifier.").format(value=json.dumps(value)[:80]))
    return value


def _code(value: Any) -> str:
    if not isinstance(value, str) or not CODE_RE.match(value):
        raise _fail(_("{value} is not a thing model code.").format(value=json.dumps(value)[:80]))
    return value


def _identifiers(value: Any, required: bool = True) -> list[str]:
    if not isinstance(value, list) or len(value) > MAX_WIDGET_DEVICES or (
            required and not value):
        raise _fail(_("A widget names from 1 to {n} devices.").format(n=MAX_WIDGET_DEVICES))
    return list(dict.fromkeys(_identifier(v) for v in value))


def _window(value: Any) -> dict[str, Any]:
    if value is None:
        return {"hours": 24}
    if not isinstance(value, dict):
        raise _fail(_("A time window is the last N hours or a from/to pair."))
    if "hours" in value:
        hours = value["hours"]
        if isinstance(hours, bool) or not isinstance(hours, int) or not 1 <= hours <= MAX_HOURS:
            raise _fail(_("The last N hours: N from 1 to {n}.").format(n=MAX_HOURS))
        return {"hours": hours}
    start, end = parse_moment(value.get("from")), parse_moment(value.get("to"))
    check_window(start, end)
    return {"from": start.isoformat(), "to": end.isoformat()}


def parse_moment(value: Any) -> datetime:
    if not isinstance(value, str) or len(value) > 40:
        raise _fail(_("A time is an ISO 8601 date and time."))
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise _fail(_("A time is an ISO 8601 date and time.")) from None
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment)
    return moment


def check_window(start: datetime, end: datetime) -> None:
    if start >= end:
        raise _fail(_("The window's start must be before its end."))
    if end - start > MAX_WINDOW:
        raise _fail(_("A time window is at most {n} days.").format(n=MAX_WINDOW.days))


class _Models:
    """The devices a layout names (in the user's scope) and their products' thing models."""

    def __init__(self, user: Any, identifiers: Iterable[str]) -> None:
        wanted = set(identifiers)
        self.devices = {d.identifier: d for d in access.devices_for(user).filter(
            identifier__in=wanted).select_related("product")}
        missing = sorted(wanted - set(self.devices))
        if missing:
            raise _fail(_("Device {identifier} does not exist or is outside your data scope.")
                        .format(identifier=missing[0]))
        self._services: dict[int, dict[str, dict[str, Any]]] = {}

    def services(self, device: str) -> dict[str, dict[str, Any]]:
        product = self.devices[device].product
        if product.pk not in self._services:
            self._services[product.pk] = {s["code"]: s for s in export_services(product)}
        return self._services[product.pk]

    def property(self, device: str, service: str, code: str) -> dict[str, Any]:
        found = self.services(device).get(service)
        prop = next((p for p in (found or {}).get("properties", []) if p["code"] == code), None)
        if prop is None:
            raise _fail(_("Device {device} has no property {service}.{property}.").format(
                device=device, service=service, property=code))
        return prop


def _devices_named(widgets: list[Any]) -> set[str]:
    names: set[str] = set()
    for widget in widgets:
        if not isinstance(widget, dict):
            continue
        for field in ("device",):
            if isinstance(widget.get(field), str):
                names.add(_identifier(widget[field]))
        for field in ("devices",):
            if isinstance(widget.get(field), list):
                names.update(_identifiers(widget[field], required=False))
        for series in widget.get("series") or []:
            if isinstance(series, dict) and isinstance(series.get("device"), str):
                names.add(_identifier(series["device"]))
    return names


def validate_layout(user: Any, layout: Any) -> dict[str, Any]:
    """The cleaned layout, or LayoutError naming the first problem."""
    if isinstance(layout, str | bytes):
        if len(layout) > MAX_LAYOUT_BYTES:
            raise _fail(_("The layout is larger than {n} KiB.").format(
                n=MAX_LAYOUT_BYTES // 1024))
        try:
            layout = json.loads(layout)
        except (ValueError, RecursionError):
            raise _fail(_("The layout is not valid JSON.")) from None
    if not isinstance(layout, dict) or not isinstance(layout.get("widgets"), list):
        raise _fail(_("The layout is an object with a list of widgets."))
    widgets = layout["widgets"]
    if len(widgets) > MAX_WIDGETS:
        raise _fail(_("A dashboard has at most {n} widgets.").format(n=MAX_WIDGETS))
    models = _Models(user, _devices_named(widgets))
    cleaned = []
    seen: set[str] = set()
    for index, widget in enumerate(widgets):
        if not isinstance(widget, dict):
            raise _fail(_("Each widget is an object."))
        kind = widget.get("type")
        if kind not in WIDGET_TYPES:
            raise _fail(_("Unknown widget type {type}.").format(type=json.dumps(kind)[:40]))
        widget_id = widget.get("id") or f"w{index + 1}"
        if not isinstance(widget_id, str) or not WIDGET_ID_RE.match(widget_id) \
                or widget_id in seen:
            raise _fail(_("Each widget has an id of its own (letters, digits, _ and -)."))
        seen.add(widget_id)
        width = _int(widget, "w", 1, COLUMNS, 4)
        item: dict[str, Any] = {
            "id": widget_id, "type": kind, "title": _text(widget.get("title")),
            "x": _int(widget, "x", 0, COLUMNS - width, 0), "y": _int(widget, "y", 0, MAX_ROW, 0),
            "w": width, "h": _int(widget, "h", 1, MAX_HEIGHT, 3)}
        item.update(_CLEANERS[kind](models, widget))
        cleaned.append(item)
    for index, one in enumerate(cleaned):
        for other in cleaned[:index]:
            if _overlap(one, other):
                raise _fail(_("Widgets {first} and {second} overlap.").format(
                    first=other["id"], second=one["id"]))
    return {"widgets": cleaned}


def _overlap(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return (a["x"] < b["x"] + b["w"] and b["x"] < a["x"] + a["w"]
            and a["y"] < b["y"] + b["h"] and b["y"] < a["y"] + a["h"])


def _one_property(models: _Models, widget: dict[str, Any], kinds: set[str] | None
                  ) -> dict[str, Any]:
    device, service = _identifier(widget.get("device")), _code(widget.get("service"))
    code = _code(widget.get("property"))
    prop = models.property(device, service, code)
    if kinds is not None and prop["datatype"] not in kinds:
        raise _fail(_("{service}.{property} is not a number.").format(service=service,
                                                                       property=code))
    return {"device": device, "service": service, "property": code}


def _chart(models: _Models, widget: dict[str, Any]) -> dict[str, Any]:
    series = widget.get("series")
    if not isinstance(series, list) or not 1 <= len(series) <= MAX_SERIES:
        raise _fail(_("A chart has from 1 to {n} series.").format(n=MAX_SERIES))
    cleaned = []
    for entry in series:
        if not isinstance(entry, dict):
            raise _fail(_("A series names a device, a service and a property."))
        one = _one_property(models, entry, None)
        prop = models.property(one["device"], one["service"], one["property"])
        if prop["datatype"] not in CHARTABLE | {Datatype.ENUM}:
            raise _fail(_("{service}.{property} cannot be charted.").format(
                service=one["service"], property=one["property"]))
        cleaned.append(one)
    return {"series": cleaned, "window": _window(widget.get("window"))}


def _gauge(models: _Models, widget: dict[str, Any]) -> dict[str, Any]:
    return _one_property(models, widget, set(NUMERIC))


def _value(models: _Models, widget: dict[str, Any]) -> dict[str, Any]:
    return _one_property(models, widget, None)


def _devices_widget(models: _Models, widget: dict[str, Any]) -> dict[str, Any]:
    return {"devices": _identifiers(widget.get("devices"))}


def _alarms(models: _Models, widget: dict[str, Any]) -> dict[str, Any]:
    # No devices: every open alarm the viewer's scope reaches.
    return {"devices": _identifiers(widget.get("devices") or [], required=False)}


def _table(models: _Models, widget: dict[str, Any]) -> dict[str, Any]:
    devices = _identifiers(widget.get("devices"))
    keys = widget.get("properties")
    if not isinstance(keys, list) or not 1 <= len(keys) <= MAX_TABLE_PROPERTIES:
        raise _fail(_("A table shows from 1 to {n} properties.").format(
            n=MAX_TABLE_PROPERTIES))
    cleaned = []
    for key in keys:
        if not isinstance(key, str) or "." not in key:
            raise _fail(_("A table's property is written service.property."))
        service, _dot, code = key.partition(".")
        _code(service), _code(code)
        found = False
        for device in devices:
            try:
                models.property(device, service, code)
                found = True
            except LayoutError:
                pass
        if not found:
            raise _fail(_("None of the table's devices has the property {key}.").format(
                key=key))
        cleaned.append(key)
    return {"devices": devices, "properties": list(dict.fromkeys(cleaned))}


def _command(models: _Models, widget: dict[str, Any]) -> dict[str, Any]:
    device, service = _identifier(widget.get("device")), _code(widget.get("service"))
    command = _code(widget.get("command"))
    params = widget.get("params") or {}
    if not isinstance(params, dict) or len(json.dumps(params)) > 4096:
        raise _fail(_("A command's parameters are a JSON object."))
    product = models.devices[device].product
    values, problems = thing_model(product).validate_command_params(service, command, params)
    if problems:
        raise _fail(_("Command {service}.{command} of {device}: {reason}").format(
            service=service, command=command, device=device, reason=problems[0].reason))
    return {"device": device, "service": service, "command": command, "params": values}


_CLEANERS = {"chart": _chart, "gauge": _gauge, "value": _value, "map": _devices_widget,
             "alarms": _alarms, "table": _table, "command": _command}


def layout_devices(layout: dict[str, Any]) -> set[str]:
    """Every device a stored layout names."""
    try:
        return _devices_named(layout.get("widgets") or [])
    except (LayoutError, AttributeError):
        return set()


# Widget data -----------------------------------------------------------------------------

def _ms(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def window_of(params: Any) -> tuple[datetime, datetime]:
    """The window a data request names: `hours` (the last N hours) or `start` and `end`."""
    if params.get("start") or params.get("end"):
        start, end = parse_moment(params.get("start")), parse_moment(params.get("end"))
        check_window(start, end)
        return start, end
    text = str(params.get("hours") or "24")
    if not text.isdigit() or not 1 <= int(text) <= MAX_HOURS:
        raise _fail(_("The last N hours: N from 1 to {n}.").format(n=MAX_HOURS))
    end = timezone.now() + timedelta(seconds=1)
    return end - timedelta(hours=int(text)), end


def parse_series(values: list[str]) -> list[tuple[str, str, str]]:
    """`device:service.property` specs."""
    if not 1 <= len(values) <= MAX_SERIES:
        raise _fail(_("A chart has from 1 to {n} series.").format(n=MAX_SERIES))
    specs = []
    for value in values:
        device, _colon, key = value.partition(":")
        service, _dot, code = key.partition(".")
        specs.append((_identifier(device), _code(service), _code(code)))
    return specs


def _telemetry(device: Device, params: dict[str, Any]) -> dict[str, Any]:
    """`queries.telemetry`, with nothing for a service that has stored no data yet."""
    try:
        return queries.telemetry(device, params)
    except DomainError as exc:
        if exc.code in ("unknown_service", "unknown_property"):
            return {"results": []}
        raise


def series(user: Any, specs: list[tuple[str, str, str]], start: datetime, end: datetime
           ) -> list[dict[str, Any]]:
    """Points `[ms, value]` of each series: numbers averaged into at most MAX_BUCKETS
    intervals, states (enum, bool) as their newest MAX_RAW raw values."""
    models = _Models(user, {device for device, _s, _p in specs})
    seconds = max(1, math.ceil((end - start).total_seconds() / MAX_BUCKETS))
    out = []
    for device, service, code in specs:
        prop = models.property(device, service, code)
        params: dict[str, Any] = {"service": service, "property": code, "start": start,
                                  "end": end}
        raw = prop["datatype"] not in NUMERIC
        if raw:
            params.update(limit=MAX_RAW, order="desc")
        else:
            params.update(interval=f"{seconds}s", agg="avg", limit=MAX_BUCKETS)
        body = _telemetry(models.devices[device], params)
        # Rows of reports that carried other properties of the service have no value here.
        points = [[_ms(r["ts"]), r.get("value")] for r in body["results"]
                  if r.get("value") is not None]
        if raw:
            points.reverse()
        out.append({"device": device, "service": service, "property": code,
                    "name": prop.get("name") or code, "unit": prop.get("unit") or "",
                    "datatype": prop["datatype"], "interval": None if raw else seconds,
                    "points": points})
    return out


def daily_deltas(user: Any, device: Device, service: str, code: str, days: int, zone: str
                 ) -> list[dict[str, Any]]:
    """A counter's increase per local day of `zone` (its maximum minus its minimum in the
    day: a counter that restarts within a day shows less than it counted)."""
    prop = _Models(user, [device.identifier]).property(device.identifier, service, code)
    if not is_counter(prop):
        raise _fail(_("{service}.{property} is not a counter.").format(service=service,
                                                                       property=code))
    tz = queries.parse_zone(zone)
    today = timezone.now().astimezone(tz).replace(hour=0, minute=0, second=0, microsecond=0)
    start = (today - timedelta(days=days - 1))
    end = timezone.now() + timedelta(seconds=1)
    rows: dict[str, dict[str, Any]] = {}
    for agg in ("min", "max"):
        body = _telemetry(device, {"service": service, "property": code, "start": start,
                                          "end": end, "interval": "1d", "tz": tz.key,
                                          "agg": agg})
        for row in body["results"]:
            rows.setdefault(row["ts"][:10], {})[agg] = row.get("value")
    return [{"day": day, "delta": (v["max"] - v["min"]) if None not in (
        v.get("max"), v.get("min")) else None} for day, v in sorted(rows.items())]


def reported(devices: list[Device]) -> dict[str, dict[str, Any]]:
    """The latest reported values of each device (`{service: {property: {value, ts (ms)}}}`):
    the stored shadow merged with the latest values ingest keeps in Redis, newest wins (what
    the device page shows), read without writing anything."""
    if not devices:
        return {}
    out: dict[str, dict[str, Any]] = {d.identifier: {} for d in devices}
    for device_id, values in DeviceShadow.objects.filter(device__in=devices).values_list(
            "device__identifier", "reported"):
        for service, props in (values or {}).items():
            out[device_id][service] = {p: dict(v) for p, v in props.items()
                                       if isinstance(v, dict)}
    pipe = get_redis().pipeline(transaction=False)
    for device in devices:
        pipe.hgetall(keys().latest(device.identifier))
    for device, raw in zip(devices, pipe.execute()):
        for service, blob in raw.items():
            current = out[device.identifier].setdefault(service.decode(), {})
            for prop, entry in json.loads(blob).items():
                if current.get(prop, {}).get("ts", 0) <= entry.get("ts", 0):
                    current[prop] = entry
    return out


def latest_values(user: Any, identifiers: list[str]) -> dict[str, Any]:
    """Each device's name, connection status, position and latest values."""
    devices = list(access.devices_for(user).filter(identifier__in=identifiers[
        :MAX_WIDGET_DEVICES]).select_related("product").order_by("identifier"))
    values = reported(devices)
    return {"devices": [{
        "device": d.identifier, "name": d.name, "connect_status": d.connect_status,
        "connect_label": d.get_connect_status_display(),
        "lat": float(d.latitude) if d.latitude is not None else None,
        "lon": float(d.longitude) if d.longitude is not None else None,
        "values": values.get(d.identifier, {})} for d in devices]}


def positions(user: Any, identifiers: list[str]) -> dict[str, Any]:
    """The devices of a map widget in the shape `TLMap.mount` reads (`static/console/map.js`):
    those in scope with a location, and how many have none."""
    devices = list(access.devices_for(user).filter(identifier__in=identifiers[
        :MAX_WIDGET_DEVICES]).select_related("product").order_by("identifier"))
    markers = [{
        "id": d.identifier, "name": d.name, "product": d.product.identifier,
        "product_name": d.product.name, "status": d.connect_status,
        "lat": float(d.latitude), "lon": float(d.longitude),
        "last_seen": d.last_seen.isoformat() if d.last_seen else None,
        "url": reverse("console:device", args=[d.identifier]),
        "detail": reverse("console:map-device", args=[d.identifier])}
        for d in devices if d.latitude is not None and d.longitude is not None]
    placed = {m["id"] for m in markers}
    return {"devices": markers, "count": len(markers), "truncated": False,
            "limit": MAX_WIDGET_DEVICES,
            "unplaced": [d.identifier for d in devices if d.identifier not in placed]}


def open_alarms(user: Any, identifiers: list[str]) -> list[dict[str, Any]]:
    queryset = access.alarms_for(user).filter(status__in=OPEN_ALARM_STATUSES)
    if identifiers:
        queryset = queryset.filter(device__identifier__in=identifiers[:MAX_WIDGET_DEVICES])
    return [{"id": a.pk, "name": a.name, "message": a.message, "severity": a.severity,
             "severity_label": a.get_severity_display(), "status": a.status,
             "status_label": a.get_status_display(),
             "device": a.device.identifier if a.device else None,
             "last_seen": a.last_seen.isoformat()}
            for a in queryset.select_related("device").order_by("-last_seen")[:MAX_ALARMS]]
