"""Console pages: rules (see docs/console.md, "Rules").

The list of the rules in the user's data scope with their status, counters and last firing;
the rule builder (a form generated from the product's thing model that posts the rule as
JSON); the rule page with its failure, counters, traces and a test with a sample message.
Rules are saved through the API's serializer (data scope of the trigger and of the actions'
channels, sinks and devices) and `webapp.rules.actions` (compiled, checked against the thing
model), and tested through the API's `explain_rule`, which runs no action.
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib import messages
from django.core.exceptions import RequestDataTooBig
from django.core.paginator import Paginator
from django.db.models import Max, Q, QuerySet
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from webapp.console import access
from webapp.console.access import console_view
from webapp.console.inputs import range_text, widget
from webapp.core.errors import DomainError
from webapp.core.redis import get_redis
from webapp.devices.models import DeviceGroup
from webapp.products.thingmodel import export_services
from webapp.rules import actions as rule_actions
from webapp.rules import secrets
from webapp.rules.api import explain_rule
from webapp.rules.choices import ActionType, FireMode, Severity, TraceKind, TriggerType
from webapp.rules.filtersets import RuleFilterSet
from webapp.rules.keys import rule_keys
from webapp.rules.modelcheck import OPERATORS_BY_TYPE
from webapp.rules.models import NotificationChannel, Rule, RuleTrace, Sink
from webapp.rules.references import department_filter
from webapp.rules.serializers import RuleSerializer, RuleTestSerializer
from webapp.system import scope

PAGE_SIZE = 25
TRACES_SHOWN = 20
# A rule posted by the builder, or a sample message: far more than either needs.
MAX_BODY = 256 * 1024
COUNTERS = ("evaluated", "held", "fired", "suppressed", "cleared", "replayed")
# Devices offered as the target of a command action (the triggering one is the default).
MAX_TARGETS = 200
RULE_FIELDS = ("name", "description", "enabled", "trigger", "condition", "actions", "debounce",
               "cooldown", "fire_mode", "auto_clear")


def rules_for(user: Any) -> QuerySet[Rule]:
    """The rules in the user's data scope (a rule belongs where its product belongs)."""
    return scope.restrict(Rule.objects.select_related("product"), user)


def _counters(rule_ids: list[int]) -> dict[int, dict[str, int]]:
    """The engine's counters of each rule (one pipelined round trip)."""
    if not rule_ids:
        return {}
    pipe = get_redis().pipeline(transaction=False)
    for pk in rule_ids:
        pipe.hgetall(rule_keys().stats(pk))
    out = {}
    for pk, raw in zip(rule_ids, pipe.execute(), strict=True):
        counters = {k.decode(): int(v) for k, v in raw.items()}
        out[pk] = {name: counters.get(name, 0) for name in COUNTERS}
    return out


@console_view("rules.view_rule")
def rule_list(request: HttpRequest) -> HttpResponse:
    user: Any = request.user
    query = request.GET.copy()
    queryset = rules_for(user).annotate(last_fired=Max(
        "traces__created", filter=Q(traces__kind=TraceKind.FIRED))).order_by("name", "id")
    state = query.get("state", "")
    if state == "enabled":
        queryset = queryset.filter(enabled=True)
    elif state == "disabled":
        queryset = queryset.filter(enabled=False, failed_at__isnull=True)
    elif state == "failed":
        queryset = queryset.filter(failed_at__isnull=False)
    query.pop("enabled", None)
    filterset = RuleFilterSet(query, queryset=queryset)
    page = Paginator(filterset.qs, PAGE_SIZE).get_page(request.GET.get("page"))
    counters = _counters([rule.pk for rule in page.object_list])
    for rule in page.object_list:
        rule.counters = counters.get(rule.pk, {})
    without_page = query.copy()
    without_page.pop("page", None)
    return TemplateResponse(request, "console/rules/list.html", {
        "page": page, "filters": query, "query": without_page.urlencode(),
        "products": access.products_for(user).order_by("name"),
        "trigger_types": TriggerType.choices,
        "can_change": user.has_perm("rules.change_rule"),
        "can_add": user.has_perm("rules.add_rule"),
    })


@require_POST
@console_view("rules.view_rule", "rules.change_rule")
def rule_enabled(request: HttpRequest, pk: int) -> HttpResponse:
    """Switch a rule on or off (on again clears its failure)."""
    rule = get_object_or_404(rules_for(request.user), pk=pk)
    enabled = request.POST.get("enabled") == "true"
    try:
        rule_actions.set_rule_enabled(rule=rule, enabled=enabled)
    except DomainError as exc:
        messages.error(request, str(exc.detail))
    else:
        messages.success(request, (_("Rule “{name}” enabled.") if enabled else
                                   _("Rule “{name}” disabled.")).format(name=rule.name))
    if request.POST.get("next") == "list":
        return redirect("console:rules")
    return redirect("console:rule", pk=rule.pk)


def _builder_text() -> dict[str, str]:
    """The builder's words (the script has no catalogue of its own)."""
    return {
        "all": _("All of"), "any": _("Any of"), "not": _("Not"),
        "add_condition": _("Add condition"), "add_group": _("Add group"),
        "add_expression": _("Add expression"), "remove": _("Remove"),
        "property": _("Property"), "operator": _("Comparison"), "value": _("Value"),
        "low": _("From"), "high": _("To"), "list_hint": _("Values separated by commas"),
        "other": _("Other (type a name)…"), "expression": _("Expression"),
        "service": _("Service"), "any_property": _("Any property of the service"),
        "event": _("Event"), "command": _("Command"), "status": _("Status"), "group": _("Devices"),
        "all_devices": _("Every device of the product"),
        "online": _("Online"), "offline": _("Offline"), "both": _("Online or offline"),
        "cron": _("Cron (minute hour day month weekday)"), "timezone": _("Time zone"),
        "severity": _("Severity"), "message": _("Message"), "alarm_name": _("Alarm name"),
        "channel": _("Notification channel"), "sink": _("Sink"), "url": _("URL"),
        "title": _("Title"), "secret": _("Signing secret (optional)"),
        "target": _("Device"), "fired_device": _("The device that fired"),
        "topic": _("Topic"), "payload": _("Payload"), "qos": _("QoS"),
        "none_in_scope": _("None within your data scope for this product."),
        "kept": _("Kept as it is (edit it through the API):"),
        "pick_product": _("Pick a product first: its thing model fills the pickers."),
        "no_condition": _("No condition: the trigger alone fires the rule."),
        "saving": _("Saving…"), "not_saved": _("The rule was not saved."),
        "model_failed": _("The product's thing model could not be read."),
        "event_param": _("event parameter"), "response_param": _("response parameter"),
        "true": _("Yes"), "false": _("No"), "yes": _("true"), "no": _("false"),
    }


def _operator_labels() -> dict[str, str]:
    """How the builder names the comparisons (the symbols stay symbols)."""
    return {
        "between": _("between (inclusive)"), "not_between": _("not between"),
        "in": _("is one of"), "not_in": _("is not one of"), "contains": _("contains"),
        "not_contains": _("does not contain"), "exists": _("is present"),
        "changed": _("changed"), "increased_by": _("rose by at least"),
        "decreased_by": _("fell by at least"),
    }


def _test_text() -> dict[str, str]:
    return {
        "fires": _("The rule would fire."), "not_fires": _("The rule would not fire."),
        "true": _("true"), "false": _("false"), "unknown": _("unknown"),
        "all": _("All of"), "any": _("Any of"), "not": _("Not"),
        "actual": _("value"), "from_message": _("from the message"),
        "from_latest": _("from the latest values"), "previous": _("previous"),
        "actions": _("Actions it would run (not run now):"),
        "no_actions": _("It runs no action."), "trigger": _("Trigger"),
        "testing": _("Testing…"), "failed": _("The test failed."),
        "bad_json": _("The values are not a JSON object."),
        "debounce": _("Debounce and cool-down apply on the ingest path and are not "
                      "simulated here."),
        "no_device": _("None (no latest values)"),
    }


def _builder_context(user: Any, rule: Rule | None) -> dict[str, Any]:
    """What the builder's script needs: the products in scope, the choices, the rule."""
    products = [{"identifier": p.identifier, "name": p.name}
                for p in access.products_for(user).order_by("name")[:1000]]
    data = None
    if rule is not None:
        data = {name: getattr(rule, name) for name in RULE_FIELDS}
        data["actions"] = secrets.masked_actions(rule.actions or [])
    return {
        "builder_text": _builder_text(),
        "builder": {
            "products": products, "rule": data,
            "model_url": reverse("console:rule-model", args=["__product__"]),
            "save_url": reverse("console:rule", args=[rule.pk]) if rule else
            reverse("console:rule-new"),
            "test_url": reverse("console:rule-test-draft"),
            "trigger_types": TriggerType.choices,
            "severities": Severity.choices,
            "fire_modes": FireMode.choices,
            "action_types": [(v, label) for v, label in ActionType.choices
                             if v != ActionType.SHADOW],
            "operators": OPERATORS_BY_TYPE,
            "operator_labels": _operator_labels(),
        },
    }


@console_view("rules.view_rule", "rules.add_rule")
@require_http_methods(["GET", "POST"])
def rule_new(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        return _save(request, None)
    return TemplateResponse(request, "console/rules/edit.html",
                            {"rule": None, "test_text": _test_text(),
                             **_builder_context(request.user, None)})


@console_view("rules.view_rule")
@require_http_methods(["GET", "POST"])
def rule_detail(request: HttpRequest, pk: int) -> HttpResponse:
    user: Any = request.user
    rule = get_object_or_404(rules_for(user), pk=pk)
    if request.method == "POST":
        if not user.has_perm("rules.change_rule"):
            return JsonResponse({"detail": _("You may not change rules.")}, status=403)
        return _save(request, rule)
    traces = list(RuleTrace.objects.filter(rule=rule).order_by("-created", "-id")[:TRACES_SHOWN])
    shown = {trace.pk: json.dumps(trace.message.get("values", trace.message) if isinstance(
        trace.message, dict) else trace.message, ensure_ascii=False, default=str)[:300]
        for trace in traces}
    last_fired = RuleTrace.objects.filter(rule=rule, kind=TraceKind.FIRED).aggregate(
        last=Max("created"))["last"]
    can_change = user.has_perm("rules.change_rule")
    sample = _sample_fields(rule)
    return TemplateResponse(request, "console/rules/detail.html", {
        "rule": rule, "traces": [(trace, shown[trace.pk]) for trace in traces],
        "counters": _counters([rule.pk]).get(rule.pk, {}),
        "last_fired": last_fired, "can_change": can_change, "sample": sample,
        "can_delete": user.has_perm("rules.delete_rule"),
        "rule_json": json.dumps({name: getattr(rule, name) for name in RULE_FIELDS}
                                | {"actions": secrets.masked_actions(rule.actions or [])},
                                indent=2, ensure_ascii=False),
        "test_text": _test_text(),
        "devices": access.devices_for(user).filter(product=rule.product).order_by(
            "identifier").values_list("identifier", flat=True)[:MAX_TARGETS]
        if rule.product_id else [],
        **(_builder_context(user, rule) if can_change else {}),
    })


def _sample_fields(rule: Rule) -> list[dict[str, Any]]:
    """The inputs of the sample message: the fields of the trigger's messages."""
    if rule.product is None:
        return []
    trigger = rule.trigger or {}
    kind = trigger.get("type")
    fields: list[dict[str, Any]] = []
    for service in export_services(rule.product):
        if trigger.get("service") and service["code"] != trigger["service"]:
            continue
        if kind in (TriggerType.PROPERTY, TriggerType.SCHEDULE):
            fields.extend(service["properties"])
        elif kind == TriggerType.EVENT:
            for event in service["events"]:
                if event["code"] == trigger.get("event") or not trigger.get("event"):
                    fields.extend(event["params"])
        elif kind == TriggerType.COMMAND_RESPONSE:
            for command in service["commands"]:
                if command["code"] == trigger.get("command") or not trigger.get("command"):
                    fields.extend(command["responses"])
    if kind == TriggerType.STATUS:
        fields = [{"code": "status", "datatype": "enum", "enum_values": ["online", "offline"]},
                  {"code": "reason", "datatype": "string"}]
    elif kind == TriggerType.COMMAND_RESPONSE:
        fields.append({"code": "err", "datatype": "json"})
    seen: set[str] = set()
    out = []
    for field in fields:
        if field["code"] not in seen:
            seen.add(field["code"])
            out.append({**widget(field), "range": range_text(field)})
    return out


def _read_json(request: HttpRequest) -> tuple[Any, JsonResponse | None]:
    """The JSON body, or the answer refusing it."""
    try:
        if int(request.META.get("CONTENT_LENGTH") or 0) > MAX_BODY:
            raise RequestDataTooBig
        raw = request.body
        if len(raw) > MAX_BODY:
            raise RequestDataTooBig
        return json.loads(raw), None
    except RequestDataTooBig:
        return None, JsonResponse({"detail": _("The request is larger than {n} KiB.").format(
            n=MAX_BODY // 1024)}, status=413)
    except (ValueError, RecursionError):
        return None, JsonResponse({"detail": _("The request is not valid JSON.")}, status=400)


def _flatten(errors: Any, prefix: str = "") -> list[dict[str, str]]:
    """A serializer's errors as a list of {path, message}."""
    out: list[dict[str, str]] = []
    if isinstance(errors, dict):
        for key, value in errors.items():
            name = "" if key == "non_field_errors" else str(key)
            out.extend(_flatten(value, f"{prefix}.{name}" if prefix and name else
                                prefix or name))
    elif isinstance(errors, list):
        for item in errors:
            out.extend(_flatten(item, prefix))
    else:
        out.append({"path": prefix, "message": str(errors)})
    return out


def _save(request: HttpRequest, rule: Rule | None) -> JsonResponse:
    """Save the rule the builder posted, as the API does; the reasons of a refusal each
    name the part of the rule they concern (`path`)."""
    body, refused = _read_json(request)
    if refused is not None:
        return refused
    if not isinstance(body, dict):
        return JsonResponse({"detail": _("The rule is a JSON object.")}, status=400)
    data = {name: body[name] for name in RULE_FIELDS if name in body}
    serializer = RuleSerializer(rule, data=data, context={"request": request})
    try:
        if not serializer.is_valid():
            return JsonResponse({"detail": _("The rule was not saved."),
                                 "errors": _flatten(serializer.errors)}, status=400)
        if rule is None:
            saved = rule_actions.create_rule(acting_user=request.user,
                                             data=dict(serializer.validated_data))
        else:
            saved = rule_actions.update_rule(rule=rule, data=dict(serializer.validated_data))
    except DomainError as exc:
        problems = exc.extra.get("problems") or []
        if not problems:
            path_name = "trigger" if exc.code == "unknown_product" else ""
            problems = [{"path": path_name, "message": str(exc.detail)}]
        return JsonResponse({"detail": _("The rule was not saved."), "errors": problems},
                            status=400)
    except RecursionError:
        return JsonResponse({"detail": _("The rule was not saved."), "errors": [
            {"path": "", "message": _("The rule is nested too deeply.")}]}, status=400)
    if rule is None:
        messages.success(request, _("Rule “{name}” created.").format(name=saved.name))
    else:
        messages.success(request, _("Rule “{name}” saved.").format(name=saved.name))
    return JsonResponse({"id": saved.pk, "url": reverse("console:rule", args=[saved.pk])})


@require_POST
@console_view("rules.view_rule", "rules.delete_rule")
def rule_delete(request: HttpRequest, pk: int) -> HttpResponse:
    """Delete a rule (its traces go with it) through `webapp.rules.actions.delete_rule`;
    the operation log records it as it records every deletion."""
    rule = get_object_or_404(rules_for(request.user), pk=pk)
    name = rule.name
    rule_actions.delete_rule(rule=rule)
    messages.success(request, _("Rule “{name}” deleted.").format(name=name))
    return redirect("console:rules")


@require_POST
@console_view("rules.view_rule", "rules.change_rule")
def rule_test(request: HttpRequest, pk: int) -> JsonResponse:
    """Evaluate the saved rule on a sample message (the API's test; runs no action)."""
    rule = get_object_or_404(rules_for(request.user), pk=pk)
    body, refused = _read_json(request)
    if refused is not None:
        return refused
    if not isinstance(body, dict):
        return JsonResponse({"detail": _("The sample message is a JSON object.")}, status=400)
    return _explain(request, rule, body)


@require_POST
@console_view("rules.view_rule")
def rule_test_draft(request: HttpRequest) -> JsonResponse:
    """Evaluate the builder's unsaved rule (`rule`) on a sample message, as the API's draft
    test does: the draft is validated by `RuleSerializer` (the data scope of its product,
    devices, channels and sinks), nothing is saved and no action runs."""
    user: Any = request.user
    if not (user.has_perm("rules.add_rule") or user.has_perm("rules.change_rule")):
        return JsonResponse({"detail": _("You may not change rules.")}, status=403)
    body, refused = _read_json(request)
    if refused is not None:
        return refused
    if not isinstance(body, dict) or not isinstance(body.get("rule"), dict):
        return JsonResponse({"detail": _("The sample message is a JSON object.")}, status=400)
    data = {name: body["rule"][name] for name in RULE_FIELDS if name in body["rule"]}
    data.setdefault("name", "draft")
    draft = RuleSerializer(data=data, context={"request": request})
    try:
        valid = draft.is_valid()
    except DomainError as exc:
        path_name = "trigger" if exc.code == "unknown_product" else ""
        return JsonResponse({"detail": _("The rule cannot be tested yet."), "errors": [
            {"path": path_name, "message": str(exc.detail)}]}, status=400)
    except RecursionError:
        return JsonResponse({"detail": _("The rule is nested too deeply.")}, status=400)
    if not valid:
        return JsonResponse({"detail": _("The rule cannot be tested yet."),
                             "errors": _flatten(draft.errors)}, status=400)
    rule = Rule(**dict(draft.validated_data))
    return _explain(request, rule, {k: v for k, v in body.items() if k != "rule"})


def _explain(request: HttpRequest, rule: Rule, body: dict[str, Any]) -> JsonResponse:
    """`explain_rule` on the sample message `body`, for the saved rule and the draft."""
    params = RuleTestSerializer(data=body)
    if not params.is_valid():
        return JsonResponse({"detail": _("The sample message is invalid."),
                             "errors": _flatten(params.errors)}, status=400)
    try:
        result = explain_rule(rule, dict(params.validated_data), request.user)
    except DomainError as exc:
        return JsonResponse({"detail": str(exc.detail)}, status=400)
    except (RecursionError, OverflowError, ValueError) as exc:
        return JsonResponse({"detail": _("The sample cannot be evaluated: {error}").format(
            error=str(exc)[:200])}, status=400)
    return JsonResponse(json.loads(json.dumps(result, default=str)))


@require_GET
@console_view("rules.view_rule")
def rule_model(request: HttpRequest, identifier: str) -> JsonResponse:
    """A product's thing model for the builder, with the channels, sinks and devices in the
    user's scope that a rule of this product may use."""
    user: Any = request.user
    product = get_object_or_404(access.products_for(user), identifier=identifier)
    reachable = department_filter(product.department_id)

    def named(model: type[NotificationChannel] | type[Sink]) -> list[dict[str, Any]]:
        rows = scope.restrict(model.objects.all(), user).filter(reachable).order_by("name")
        return [{"id": r.pk, "name": r.name} for r in rows[:500]]

    services = export_services(product)
    for service in services:
        for group in ("properties",):
            service[group] = [{**field, "range": range_text(field)} for field in service[group]]
    return JsonResponse({
        "identifier": product.identifier, "name": product.name, "services": services,
        "channels": named(NotificationChannel), "sinks": named(Sink),
        "devices": list(access.devices_for(user).filter(product=product).order_by(
            "identifier").values_list("identifier", flat=True)[:MAX_TARGETS]),
        "groups": [{"id": g.pk, "name": g.name} for g in scope.restrict(
            DeviceGroup.objects.all(), user).order_by("name")[:500]],
    })


urlpatterns: list[URLPattern] = [
    path("rules/", rule_list, name="rules"),
    path("rules/new/", rule_new, name="rule-new"),
    path("rules/model/<str:identifier>/", rule_model, name="rule-model"),
    path("rules/<int:pk>/", rule_detail, name="rule"),
    path("rules/<int:pk>/enabled/", rule_enabled, name="rule-enabled"),
    path("rules/<int:pk>/test/", rule_test, name="rule-test"),
    path("rules/<int:pk>/delete/", rule_delete, name="rule-delete"),
    path("rules/test/", rule_test_draft, name="rule-test-draft"),
]
