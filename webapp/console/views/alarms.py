"""Alarms: the open ones by default, acknowledged and cleared through the rules app's
actions."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from webapp.console import access
from webapp.console.access import console_view
from webapp.core.errors import DomainError
from webapp.rules import actions as rule_actions
from webapp.rules.choices import AlarmStatus, Severity
from webapp.rules.filtersets import AlarmFilterSet

PAGE_SIZE = 25


@console_view("rules.view_alarm")
def alarm_list(request: HttpRequest) -> HttpResponse:
    user: Any = request.user
    query = request.GET.copy()
    query.setdefault("status", "open")
    filterset = AlarmFilterSet(query, queryset=access.alarms_for(user).select_related(
        "device", "product", "rule").order_by("-last_seen", "-id"))
    page = Paginator(filterset.qs, PAGE_SIZE).get_page(request.GET.get("page"))
    without_page = query.copy()
    without_page.pop("page", None)
    return TemplateResponse(request, "console/alarms.html", {
        "page": page, "filters": query, "query": without_page.urlencode(),
        "severities": Severity.choices, "statuses": AlarmStatus.choices,
        "can_change": user.has_perm("rules.change_alarm"),
    })


def _back(request: HttpRequest) -> str:
    target = request.POST.get("next", "")
    if target and url_has_allowed_host_and_scheme(target, {request.get_host()},
                                                  require_https=request.is_secure()):
        return target
    return reverse("console:alarms")


@require_POST
@console_view("rules.view_alarm", "rules.change_alarm")
def acknowledge(request: HttpRequest, pk: int) -> HttpResponse:
    alarm = get_object_or_404(access.alarms_for(request.user), pk=pk)
    try:
        rule_actions.acknowledge_alarm(acting_user=request.user, alarm=alarm)
    except DomainError as exc:
        messages.error(request, str(exc.detail))
    else:
        messages.success(request, _("Alarm “{name}” acknowledged.").format(name=alarm.name))
    return redirect(_back(request))


@require_POST
@console_view("rules.view_alarm", "rules.change_alarm")
def clear(request: HttpRequest, pk: int) -> HttpResponse:
    alarm = get_object_or_404(access.alarms_for(request.user), pk=pk)
    try:
        rule_actions.clear_alarm(acting_user=request.user, alarm=alarm,
                                 reason=request.POST.get("reason", "")[:500])
    except DomainError as exc:
        messages.error(request, str(exc.detail))
    else:
        messages.success(request, _("Alarm “{name}” cleared.").format(name=alarm.name))
    return redirect(_back(request))
