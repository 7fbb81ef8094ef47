"""Console page: the platform's health at `/monitoring/` (docs/console.md "Monitoring").

The page and `/monitoring/data.json` show the same figures (`webapp.console.monitoring`); the
page asks for the JSON every few seconds and puts its `html` (the panels, rendered here, in the
user's language) in place, so there is one rendering of them. Superusers and holders of
`system.view_monitoring` only.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from webapp.console import monitoring
from webapp.console.access import console_view

# How often the page asks for fresh figures (milliseconds).
REFRESH_MS = 5000


def _when(unix: Any) -> datetime | None:
    try:
        return datetime.fromtimestamp(float(unix), tz=UTC) if unix else None
    except (TypeError, ValueError, OverflowError):
        return None


def _ms(value: Any) -> datetime | None:
    try:
        return _when(int(value) / 1000) if value else None
    except (TypeError, ValueError):
        return None


def _iso(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(value) if value else None
    except (TypeError, ValueError):
        return None


def display(snap: dict[str, Any]) -> dict[str, Any]:
    """The snapshot with the datetimes the template shows (the JSON keeps unix times)."""
    view: dict[str, Any] = {**snap, "at": _when(snap["time"])}
    host = snap["host"]
    if "error" not in host:
        view["host"] = {**host, "booted": _when(host["boot"])}
    procs = snap["processes"]
    if "error" not in procs:
        view["processes"] = {
            **procs,
            "processes": [{**p, "started_at": _when(p["started"]),
                           "updated_at": _when(p["updated"])} for p in procs["processes"]]}
    edge = snap["edge"]
    if "error" not in edge:
        view["edge"] = {**edge, "nodes": [
            {**n, "started_at": _ms(n["started"]),
             "heartbeat_at": _ms(n["heartbeat"])} for n in edge["nodes"]]}
    celery = snap["celery"]
    if "error" not in celery:
        view["celery"] = {
            **celery,
            "periodic": [{**t, "last_run": _iso(t["last_run_at"])} for t in celery["periodic"]],
            "runs": [{**r, "started_at": _iso(r["started"])} for r in celery["runs"]]}
    return view


def _panels(request: HttpRequest, snap: dict[str, Any]) -> str:
    return render_to_string("console/monitoring/_panels.html", {"m": display(snap)},
                            request=request)


@require_GET
@console_view(monitoring.PERMISSION)
def monitoring_page(request: HttpRequest) -> HttpResponse:
    snap = monitoring.snapshot()
    return TemplateResponse(request, "console/monitoring/page.html", {
        "panels": _panels(request, snap),
        "page_config": {
            "url": reverse("console:monitoring-data"), "every": REFRESH_MS,
            "login": reverse("console:login"),
            "labels": {"live": _("Live"), "stale": _("Stale: the last refresh failed"),
                       "updated": _("Updated {time}"),
                       "ended": _("Not refreshed any more: your session has ended or you "
                                  "may no longer see this page."),
                       "sign_in": _("Sign in again")},
        },
    })


@never_cache
@require_GET
@console_view(monitoring.PERMISSION)
def monitoring_data(request: HttpRequest) -> JsonResponse:
    """The figures as JSON (bytes, percents, unix seconds; `edge.nodes[].heartbeat` in ms)
    and the page's panels rendered (`html`)."""
    snap = monitoring.snapshot()
    return JsonResponse({**snap, "html": _panels(request, snap)})


urlpatterns: list[URLPattern] = [
    path("monitoring/", monitoring_page, name="monitoring"),
    path("monitoring/data.json", monitoring_data, name="monitoring-data"),
]
