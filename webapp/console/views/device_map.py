"""The device map (docs/console.md "The map"): the `/map/` page, the devices' JSON it and the
other maps of the console (dashboards, the big screen) draw from `static/console/map.js`
(`TLMap.mount`), and one device's latest values for a marker's popup.

Everything reads through the user's data scope; the filters run in the database; at most
`MAP_LIMIT` markers are returned, with `truncated` saying when more matched.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse, QueryDict
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from webapp.console import access
from webapp.console.access import console_view
from webapp.devices import actions as device_actions
from webapp.devices.choices import ConnectStatus
from webapp.devices.filtersets import DeviceFilterSet
from webapp.devices.models import DeviceGroup
from webapp.products.thingmodel import export_services
from webapp.system import scope

MAP_LIMIT = 5000
FILTERS = ("product", "status", "group", "q")
MAX_FILTER_LENGTH = 100

View = Callable[..., HttpResponse]


def json_view(*permissions: str) -> Callable[[View], View]:
    """Like `console_view`, but a script polling it gets JSON: 401 when the session ended (or the
    password must be changed first), 403 without the permissions."""

    def decorate(view: View) -> View:
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            user: Any = request.user
            if not user.is_authenticated or getattr(user, "must_change_password", False):
                return JsonResponse({"error": "signed_out"}, status=401)
            if permissions and not user.has_perms(permissions):
                return JsonResponse({"error": "forbidden"}, status=403)
            response = view(request, *args, **kwargs)
            response["Cache-Control"] = "no-store"
            return response

        return wrapper

    return decorate


def tile_settings() -> dict[str, Any]:
    """What `TLMap.mount` takes from the platform's settings (MAP_TILE_URL, …)."""
    return {"tileUrl": settings.MAP_TILE_URL, "attribution": settings.MAP_TILE_ATTRIBUTION,
            "maxZoom": settings.MAP_MAX_ZOOM}


def map_labels() -> dict[str, str]:
    """The words of `TLMap`'s markers and popups, in the user's language."""
    statuses = dict(ConnectStatus.choices)
    return {
        "online": str(statuses[ConnectStatus.ONLINE]),
        "offline": str(statuses[ConnectStatus.OFFLINE]),
        "unconnected": str(statuses[ConnectStatus.UNCONNECTED]),
        "identifier": _("Identifier"), "product": _("Product"), "status": _("Status"),
        "lastSeen": _("Last seen"), "never": _("never"), "open": _("Open the device page"),
        "values": _("Latest values"), "noValues": _("No values reported yet."),
        "loading": _("Loading…"), "failed": _("Could not load the data."),
        "noTiles": ("" if settings.MAP_TILE_URL else
                    _("No base map: set MAP_TILE_URL to a tile server to draw streets "
                      "and places under the devices.")),
    }


def _filters(query: QueryDict) -> dict[str, str]:
    return {name: query.get(name, "").strip()[:MAX_FILTER_LENGTH] for name in FILTERS}


def map_query(filters: dict[str, str]) -> str:
    q = QueryDict(mutable=True)
    for name in FILTERS:
        if filters.get(name):
            q[name] = filters[name]
    return q.urlencode()


def map_devices(user: Any, filters: dict[str, str]) -> dict[str, Any]:
    """The markers of the devices in `user`'s scope with a location that match `filters`
    (product identifier, connection status, group id or name, text in identifier or name)."""
    status = filters.get("status", "")
    data = {"product": filters.get("product", ""), "connect_status": status,
            "group": filters.get("group", ""), "q": filters.get("q", "")}
    filterset = DeviceFilterSet(data, queryset=access.devices_for(user).filter(
        latitude__isnull=False, longitude__isnull=False).order_by("identifier"))
    invalid = not filterset.is_valid() or (status and status not in ConnectStatus.values)
    rows = [] if invalid else list(filterset.qs.distinct().values(
        "identifier", "name", "latitude", "longitude", "connect_status", "last_seen",
        "product__identifier", "product__name")[:MAP_LIMIT + 1])
    devices = [{
        "id": r["identifier"], "name": r["name"],
        "product": r["product__identifier"], "product_name": r["product__name"],
        "status": r["connect_status"],
        "lat": float(r["latitude"]), "lon": float(r["longitude"]),
        "last_seen": r["last_seen"].isoformat() if r["last_seen"] else None,
        "url": reverse("console:device", args=[r["identifier"]]),
        "detail": reverse("console:map-device", args=[r["identifier"]]),
    } for r in rows[:MAP_LIMIT]]
    count = len(devices)
    return {"devices": devices, "count": count, "truncated": len(rows) > MAP_LIMIT,
            "limit": MAP_LIMIT, "invalid": bool(invalid),
            "count_text": ngettext("%(count)d device with a location.",
                                   "%(count)d devices with a location.", count)
            % {"count": count}}


@console_view("devices.view_device")
def device_map(request: HttpRequest) -> HttpResponse:
    user: Any = request.user
    filters = _filters(request.GET)
    query = map_query(filters)
    return TemplateResponse(request, "console/devices/map.html", {
        "filters": filters, "limit": MAP_LIMIT,
        "data_url": reverse("console:map-devices") + (f"?{query}" if query else ""),
        "tiles": tile_settings(), "labels": map_labels(),
        "connections": ConnectStatus.choices,
        "products": access.products_for(user).order_by("name").values_list(
            "identifier", "name"),
        "groups": scope.restrict(DeviceGroup.objects.all(), user).order_by("name").values_list(
            "pk", "name"),
    })


@json_view("devices.view_device")
def devices_json(request: HttpRequest) -> HttpResponse:
    return JsonResponse(map_devices(request.user, _filters(request.GET)))


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return _("Yes") if value else _("No")
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


@json_view("devices.view_device")
def device_json(request: HttpRequest, identifier: str) -> HttpResponse:
    """One device's latest reported values with the thing model's names and units."""
    device = get_object_or_404(access.devices_for(request.user).select_related("product"),
                               identifier=identifier)
    reported = device_actions.shadow_document(device)["reported"]
    values = []
    for service in export_services(device.product):
        for prop in service["properties"]:
            entry = reported.get(service["code"], {}).get(prop["code"])
            if not isinstance(entry, dict) or "value" not in entry:
                continue
            values.append({"service": service["code"], "code": prop["code"],
                           "name": prop["name"] or prop["code"], "value": _text(entry["value"]),
                           "unit": prop.get("unit") or "", "ts": entry.get("ts")})
    return JsonResponse({"id": device.identifier, "name": device.name,
                         "status": device.connect_status,
                         "last_seen": device.last_seen.isoformat() if device.last_seen else None,
                         "values": values})


urlpatterns = [
    path("map/", device_map, name="map"),
    path("map/devices.json", devices_json, name="map-devices"),
    path("map/devices/<str:identifier>.json", device_json, name="map-device"),
]
