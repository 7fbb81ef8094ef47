"""The big screen (docs/console.md "The big screen"): a dark full-screen page for a wall
display — fleet totals, message rate, open alarms, the device map and the largest products —
refreshed by polling `/bigscreen/data.json` every `?refresh=` seconds (bounded). Every figure is
read through the user's data scope (`webapp.console.stats`, `access`)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db.models import Count, Q
from django.db.models.functions import TruncMinute
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.http import urlencode
from django.utils.translation import gettext as _

from webapp.console import access, stats
from webapp.console.access import console_view
from webapp.console.views.device_map import json_view, map_labels, tile_settings
from webapp.core.redis import get_redis, keys
from webapp.devices.choices import ConnectStatus
from webapp.rules.choices import OPEN_ALARM_STATUSES, Severity

REFRESH_DEFAULT = 30
REFRESH_MIN = 5
REFRESH_MAX = 300
LATEST_ALARMS = 8
TOP_PRODUCTS = 5
SERIES_MINUTES = 30


def refresh_seconds(value: str | None) -> int:
    """`?refresh=` as seconds within [REFRESH_MIN, REFRESH_MAX]; the default when unreadable."""
    try:
        seconds = int(value or REFRESH_DEFAULT)
    except ValueError:
        return REFRESH_DEFAULT
    return max(REFRESH_MIN, min(REFRESH_MAX, seconds))


def message_series(user: Any, minutes: int = SERIES_MINUTES) -> list[int]:
    """Device messages (accepted and rejected) per minute, the last `minutes` minutes oldest
    first, the current minute last: the dashboard's per-minute counters in Redis for a user who
    sees everything, else the message log of the devices in scope."""
    minute = int(time.time()) // 60
    first = minute - minutes + 1
    if access.sees_everything(user):
        pipe = get_redis().pipeline(transaction=False)
        for m in range(first, minute + 1):
            pipe.hgetall(keys().console_messages(m))
        return [sum(int(n) for n in bucket.values()) for bucket in pipe.execute()]
    series = [0] * minutes
    since = datetime.fromtimestamp(first * 60, tz=UTC)
    rows = (access.messages_for(user).filter(ts__gte=since, ts__lt=since + timedelta(
        minutes=minutes)).order_by().annotate(minute=TruncMinute("ts", tzinfo=UTC))
        .values("minute").annotate(n=Count("pk")))
    for row in rows:
        index = int(row["minute"].timestamp()) // 60 - first
        if 0 <= index < minutes:
            series[index] += row["n"]
    return series


def figures(user: Any) -> dict[str, Any]:
    """What the big screen shows, for `user`'s scope and permissions."""
    data: dict[str, Any] = {"generated": timezone.now().isoformat(), "products": None,
                            "alarms": None}
    if user.has_perm("products.view_product"):
        data["products"] = access.products_for(user).count()
    data["devices"] = stats.device_counts(user)
    messages = stats.message_counts(user)
    total = sum(messages.values())
    data["messages"] = {**messages, "total": total, "window_minutes": stats.WINDOW_MINUTES,
                        "per_minute": round(total / stats.WINDOW_MINUTES, 1),
                        "series": message_series(user)}
    top = (access.devices_for(user).order_by().values("product__identifier", "product__name")
           .annotate(devices=Count("pk"),
                     online=Count("pk", filter=Q(connect_status=ConnectStatus.ONLINE)))
           .order_by("-devices", "product__identifier")[:TOP_PRODUCTS])
    data["top_products"] = [{"id": row["product__identifier"], "name": row["product__name"],
                             "devices": row["devices"], "online": row["online"]} for row in top]
    if user.has_perm("rules.view_alarm"):
        levels = stats.alarm_counts(user)
        severities = dict(Severity.choices)
        latest = (access.alarms_for(user).filter(status__in=OPEN_ALARM_STATUSES)
                  .select_related("device", "product").order_by("-last_seen", "-pk")
                  [:LATEST_ALARMS])
        data["alarms"] = {
            "levels": [{"severity": a["severity"], "label": str(a["label"]), "count": a["count"]}
                       for a in levels],
            "total": sum(a["count"] for a in levels),
            "latest": [{"id": a.pk, "name": a.name, "severity": a.severity,
                        "severity_label": str(severities.get(a.severity, a.severity)),
                        "device": a.device.identifier if a.device else "",
                        "device_name": a.device.name if a.device else "",
                        "product": a.product.name if a.product else "",
                        "message": a.message[:200], "count": a.count,
                        "last_seen": a.last_seen.isoformat()} for a in latest],
        }
    return data


def _labels() -> dict[str, str]:
    return {
        "stale": _("Connection lost: showing the figures of {time}. Retrying…"),
        "signedOut": _("Your session has ended. Sign in again to resume the display."),
        "forbidden": _("You may no longer see this screen."),
        "updated": _("Updated {time}"),
        "noAlarms": _("No open alarms."),
        "noProducts": _("No devices yet."),
        "fullscreen": _("Full screen"), "exitFullscreen": _("Leave full screen"),
        "online": _("{count} online"),
    }


@console_view("devices.view_device")
def bigscreen(request: HttpRequest) -> HttpResponse:
    user: Any = request.user
    refresh = refresh_seconds(request.GET.get("refresh"))
    return TemplateResponse(request, "console/bigscreen/bigscreen.html", {
        "refresh": refresh, "data_url": reverse("console:bigscreen-data"),
        "map_url": reverse("console:map-devices"), "tiles": tile_settings(),
        "map_labels": map_labels(), "labels": _labels(),
        "login_url": f"{reverse('console:login')}?{urlencode({'next': request.get_full_path()})}",
        "can_products": user.has_perm("products.view_product"),
        "can_alarms": user.has_perm("rules.view_alarm"),
        "figures": figures(user),
    })


@json_view("devices.view_device")
def bigscreen_data(request: HttpRequest) -> HttpResponse:
    return JsonResponse(figures(request.user))


urlpatterns: list[URLPattern] = [
    path("bigscreen/", bigscreen, name="bigscreen"),
    path("bigscreen/data.json", bigscreen_data, name="bigscreen-data"),
]
