"""Alarms: the open ones by default, filtered by severity, status, product, device, assignee
and time; acknowledged and cleared one by one or in bulk, assigned and commented on, always
through the rules app's actions (which keep each alarm's history).

A bulk change touches only the alarms in the user's data scope; the others are reported as
not found, like alarms that do not exist. An alarm is assigned only to an active user in the
operator's data scope who may view alarms and reaches this one.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.paginator import Paginator
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_POST

from webapp.console import access
from webapp.console.access import console_view
from webapp.console.inputs import record_id
from webapp.core.errors import DomainError
from webapp.rules import actions as rule_actions
from webapp.rules.choices import AlarmStatus, Severity
from webapp.rules.filtersets import AlarmFilterSet
from webapp.rules.models import Alarm
from webapp.system import scope

PAGE_SIZE = 25
#: The most alarms one bulk change names (the page shows 25).
BULK_LIMIT = 200
#: The device's messages shown around an alarm: this long before it and after it.
AROUND = timedelta(minutes=10)
AROUND_ROWS = 20
COMMENT_MAX = 2000
COMMENTS_SHOWN = 200
#: What an alarm event's detail names, as the history shows it (a comment is shown itself).
DETAIL_LABELS = {"assignee": gettext_lazy("Assignee"), "reason": gettext_lazy("Reason"),
                 "severity": gettext_lazy("Severity"), "message": gettext_lazy("Message")}


def _detail(detail: Any) -> list[tuple[Any, str]]:
    if not isinstance(detail, dict):
        return []
    rows = []
    for key, label in DETAIL_LABELS.items():
        value = detail.get(key)
        if key in detail:
            if key == "severity" and value in Severity.values:
                value = Severity(value).label
            rows.append((label, str(value) if value not in (None, "") else "—"))
    return rows


def assignable_users(user: Any) -> QuerySet[Any]:
    """Active users in `user`'s data scope who may view alarms (directly, by a group, by an
    active role or a role's active menu, or as superusers)."""
    User = get_user_model()
    perm = Permission.objects.filter(content_type__app_label="rules",
                                     codename="view_alarm").values("pk")
    holders = User.objects.filter(
        Q(is_superuser=True) | Q(user_permissions__in=perm) | Q(groups__permissions__in=perm)
        | Q(roles__is_active=True, roles__permissions__in=perm)
        | Q(roles__is_active=True, roles__menus__is_active=True,
            roles__menus__permission="rules.view_alarm")).values("pk")
    return scope.restrict(User.objects.filter(is_active=True, pk__in=holders),
                          user).order_by("username")


def _filter_choices(user: Any) -> dict[str, Any]:
    return {
        "severities": Severity.choices, "statuses": AlarmStatus.choices,
        "assignees": list(assignable_users(user).values_list("pk", "username")[:500]),
    }


@console_view("rules.view_alarm")
def alarm_list(request: HttpRequest) -> HttpResponse:
    user: Any = request.user
    query = request.GET.copy()
    query.setdefault("status", "open")
    filterset = AlarmFilterSet(query, queryset=access.alarms_for(user).select_related(
        "device", "product", "rule", "assignee").order_by("-last_seen", "-id"))
    page = Paginator(filterset.qs, PAGE_SIZE).get_page(request.GET.get("page"))
    without_page = query.copy()
    without_page.pop("page", None)
    return TemplateResponse(request, "console/alarms.html", {
        "page": page, "filters": query, "query": without_page.urlencode(),
        **_filter_choices(user),
        "can_change": user.has_perm("rules.change_alarm"),
    })


def _back(request: HttpRequest, default: str = "") -> str:
    target = request.POST.get("next", "")
    if target and url_has_allowed_host_and_scheme(target, {request.get_host()},
                                                  require_https=request.is_secure()):
        return target
    return default or reverse("console:alarms")


def _alarm(request: HttpRequest, pk: int) -> Alarm:
    return get_object_or_404(access.alarms_for(request.user).select_related(
        "device", "product", "rule", "assignee", "acknowledged_by", "cleared_by"), pk=pk)


@console_view("rules.view_alarm")
def alarm_detail(request: HttpRequest, pk: int) -> HttpResponse:
    user: Any = request.user
    alarm = _alarm(request, pk)
    context: dict[str, Any] = {
        "alarm": alarm,
        "history": [(event, _detail(event.detail)) for event in alarm.history.select_related(
            "actor").order_by("-created", "-id")[:200]],
        # the newest COMMENTS_SHOWN, oldest first (a script may comment without end)
        "comments": list(reversed(alarm.comments.select_related("author").order_by(
            "-created", "-id")[:COMMENTS_SHOWN])),
        "can_change": user.has_perm("rules.change_alarm"),
        "comment_max": COMMENT_MAX,
    }
    if context["can_change"]:
        context["assignees"] = list(assignable_users(user).values_list("pk", "username")[:500])
    if alarm.device is not None and user.has_perm("devices.view_device"):
        context["around"] = list(access.messages_for(user).filter(
            device_identifier=alarm.device.identifier,
            ts__gte=alarm.first_seen - AROUND, ts__lte=alarm.last_seen + AROUND,
        ).order_by("-ts", "-id")[:AROUND_ROWS])
    return TemplateResponse(request, "console/alarm_detail.html", context)


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


def _ids(values: list[str]) -> tuple[list[int], int]:
    """The distinct alarm ids named (at most BULK_LIMIT) and how many names were not ids."""
    ids: list[int] = []
    bad = 0
    for value in values[:BULK_LIMIT]:
        pk = record_id(value)
        if pk is not None:
            if pk not in ids:
                ids.append(pk)
        else:
            bad += 1
    return ids, bad


def bulk_summary(operation: str, counts: Counter[str]) -> str:
    """“3 acknowledged, 1 already cleared, 2 not found”."""
    labels = {
        "done": _("{count} acknowledged") if operation == "acknowledge"
        else _("{count} cleared"),
        "acknowledged": _("{count} already acknowledged"),
        "cleared": _("{count} already cleared"),
        "refused": _("{count} refused"),
        "not_found": _("{count} not found"),
    }
    parts = [labels[key].format(count=counts[key]) for key in labels if counts[key]]
    return _(", ").join(parts) if parts else _("No alarm was selected.")


@require_POST
@console_view("rules.view_alarm", "rules.change_alarm")
def bulk(request: HttpRequest) -> HttpResponse:
    """Acknowledge or clear the checked alarms, each through its action; the others named
    (another department's, or none at all) count as not found and stay untouched."""
    user: Any = request.user
    operation = request.POST.get("operation", "")
    if operation not in ("acknowledge", "clear"):
        messages.error(request, _("Choose acknowledge or clear."))
        return redirect(_back(request))
    ids, bad = _ids(request.POST.getlist("ids"))
    found = {a.pk: a for a in access.alarms_for(user).filter(pk__in=ids)}
    counts: Counter[str] = Counter(not_found=bad)
    reason = request.POST.get("reason", "")[:500]
    for pk in ids:
        alarm = found.get(pk)
        if alarm is None:
            counts["not_found"] += 1
            continue
        try:
            if operation == "acknowledge":
                rule_actions.acknowledge_alarm(acting_user=user, alarm=alarm)
            else:
                rule_actions.clear_alarm(acting_user=user, alarm=alarm, reason=reason)
        except DomainError:
            status = Alarm.objects.filter(pk=pk).values_list("status", flat=True).first()
            counts[status if status in ("acknowledged", "cleared") else "refused"] += 1
        else:
            counts["done"] += 1
    summary = bulk_summary(operation, counts)
    if counts["done"]:
        messages.success(request, summary)
    else:
        messages.error(request, summary)
    return redirect(_back(request))


@require_POST
@console_view("rules.view_alarm", "rules.change_alarm")
def comment(request: HttpRequest, pk: int) -> HttpResponse:
    alarm = _alarm(request, pk)
    back = reverse("console:alarm", args=[alarm.pk])
    text = request.POST.get("text", "")
    if len(text) > COMMENT_MAX:
        messages.error(request, _("A comment has at most {max} characters.").format(
            max=COMMENT_MAX))
        return redirect(back)
    try:
        rule_actions.comment_alarm(acting_user=request.user, alarm=alarm, text=text)
    except DomainError as exc:
        messages.error(request, str(exc.detail))
    else:
        messages.success(request, _("Comment added."))
    return redirect(back)


@require_POST
@console_view("rules.view_alarm", "rules.change_alarm")
def assign(request: HttpRequest, pk: int) -> HttpResponse:
    """Assign to a user in the operator's scope who may view alarms and reaches this one;
    an empty choice removes the assignee."""
    user: Any = request.user
    alarm = _alarm(request, pk)
    back = reverse("console:alarm", args=[alarm.pk])
    wanted = request.POST.get("assignee", "")
    assignee = None
    if wanted:
        user_pk = record_id(wanted)
        assignee = assignable_users(user).filter(pk=user_pk).first() \
            if user_pk is not None else None
        if assignee is None or not access.alarms_for(assignee).filter(pk=alarm.pk).exists():
            messages.error(request, _("This user does not exist, is outside your data scope "
                                      "or may not view this alarm."))
            return redirect(back)
    rule_actions.assign_alarm(acting_user=user, alarm=alarm, assignee=assignee)
    if assignee is None:
        messages.success(request, _("The alarm is no longer assigned."))
    else:
        messages.success(request, _("Alarm assigned to {user}.").format(
            user=assignee.get_username()))
    return redirect(back)


urlpatterns = [
    path("alarms/bulk/", bulk, name="alarm-bulk"),
    path("alarms/<int:pk>/", alarm_detail, name="alarm"),
    path("alarms/<int:pk>/comment/", comment, name="alarm-comment"),
    path("alarms/<int:pk>/assign/", assign, name="alarm-assign"),
]
