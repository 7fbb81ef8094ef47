from __future__ import annotations

import json
import uuid
from typing import Any

from django.db.models import Count, Q
from django.utils.translation import gettext
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from edge.clock import now_ms
from webapp.core.permissions import ModelPermissions
from webapp.core.redis import get_redis, keys
from webapp.devices.models import Device
from webapp.rules import actions, engine, secrets
from webapp.rules.choices import OPEN_ALARM_STATUSES
from webapp.rules.compiler import compile_rule
from webapp.rules.conditions import Message
from webapp.rules.executors import send_channel, template_env
from webapp.rules.expressions import ExpressionError, render_structure
from webapp.rules.filtersets import (
    AlarmFilterSet,
    DeadLetterFilterSet,
    NotificationChannelFilterSet,
    NotificationFilterSet,
    RuleFilterSet,
    RuleTraceFilterSet,
    SinkFilterSet,
)
from webapp.rules.keys import RESULT_TTL_S, rule_keys
from webapp.rules.models import (
    Alarm,
    DeadLetter,
    Notification,
    NotificationChannel,
    Rule,
    RuleTrace,
    Sink,
)
from webapp.rules.serializers import (
    AlarmAssignSerializer,
    AlarmClearSerializer,
    AlarmCommentSerializer,
    AlarmEventSerializer,
    AlarmSerializer,
    DeadLetterSerializer,
    NotificationChannelSerializer,
    NotificationSerializer,
    RuleSerializer,
    RuleTestSerializer,
    RuleTraceSerializer,
    SinkSerializer,
    SinkTestSerializer,
)
from webapp.rules.taskqueue import enqueue
from webapp.system import scope
from webapp.system.viewsets import ScopedViewSetMixin


class ChangePermission(ModelPermissions):
    """For POST actions that change an existing object (acknowledge, clear, test, …)."""

    perms_map = {**ModelPermissions.perms_map,
                 "POST": ["%(app_label)s.change_%(model_name)s"]}


def _latest_of(device: str, user: Any) -> dict[str, dict[str, Any]]:
    """The latest values of a device of `user`'s data scope (none for another device: it
    is answered as a device without data)."""
    if not device or not scope.restrict(Device.objects.filter(identifier=device),
                                        user).exists():
        return {}
    raw = get_redis().hgetall(keys().latest(device))
    return {svc.decode(): {p: e.get("value") for p, e in json.loads(v).items()}
            for svc, v in raw.items()}


def explain_rule(rule: Rule, data: dict[str, Any], user: Any) -> dict[str, Any]:
    """Evaluate a rule on a sample message: which conditions held, and why. The latest
    values of the named device are read only when it is in `user`'s data scope."""
    try:
        compiled = compile_rule(id=rule.pk or 0, name=rule.name, trigger=rule.trigger,
                                condition=rule.condition, actions=rule.actions,
                                debounce=rule.debounce, cooldown=rule.cooldown,
                                fire_mode=rule.fire_mode, auto_clear=rule.auto_clear)
    except ExpressionError as exc:
        raise actions.RuleInvalid(exc.detail) from exc
    device = data.get("device") or ""
    latest = data["latest"] if data.get("latest") is not None else _latest_of(device, user)
    msg = Message(kind=compiled.trigger_type, device=device, product=compiled.product,
                  service=data.get("service") or compiled.service,
                  ts=data.get("ts") or now_ms(), values=data.get("values") or {},
                  event=data.get("event") or "", command=data.get("command") or "",
                  status=data.get("status") or "", err=data.get("err"), latest=latest,
                  prev=data.get("previous") or {})
    conditions = compiled.condition.explain(msg)
    trigger_notes = []
    if compiled.property and compiled.property not in msg.values and \
            compiled.trigger_type == "property":
        trigger_notes.append(gettext(
            "the message does not carry {property}: the rule is only evaluated on messages "
            "that do").format(property=compiled.property))
    if compiled.service and msg.service and compiled.service != msg.service:
        trigger_notes.append(gettext("the rule watches service {service}, not {other}").format(
            service=compiled.service, other=msg.service))
    if device and not compiled.watches(device):
        trigger_notes.append(gettext("the rule does not watch device {device}").format(
            device=device))
    env = template_env(rule, msg)
    preview = []
    for act in secrets.masked_actions(rule.actions or []):
        shown = {k: v for k, v in act.items() if k != "secret"}
        preview.append(render_structure(shown, env))
    out: dict[str, Any] = {
        "matched": bool(conditions["held"]) and not trigger_notes,
        "conditions": conditions, "trigger": trigger_notes, "message": msg.as_json(),
        "latest": latest, "actions": preview,
        "debounce": rule.debounce or None, "cooldown": rule.cooldown,
        "note": "debounce and cool-down apply on the ingest path and are not simulated here; "
                "'state' shows this device's current state for the rule",
    }
    if rule.pk and device:
        out["state"] = engine.rule_state(device, rule.pk)
    return out


class RuleViewSet(ScopedViewSetMixin, viewsets.ModelViewSet):
    """Rules: trigger, condition tree, actions; test against a sample message; traces."""

    serializer_class = RuleSerializer
    filterset_class = RuleFilterSet

    def get_queryset(self):
        return Rule.objects.select_related("product").order_by("name", "id")

    def perform_create(self, serializer: Any) -> None:
        serializer.instance = actions.create_rule(acting_user=self.request.user,
                                                  data=dict(serializer.validated_data))

    def perform_update(self, serializer: Any) -> None:
        serializer.instance = actions.update_rule(rule=serializer.instance,
                                                  data=dict(serializer.validated_data))

    def perform_destroy(self, instance: Rule) -> None:
        actions.delete_rule(rule=instance)

    @extend_schema(request=RuleTestSerializer, responses={200: dict})
    @action(detail=True, methods=["post"], permission_classes=[ChangePermission])
    def test(self, request: Request, pk: str | None = None) -> Response:
        """Evaluate the rule on a sample message; says which conditions held and why.
        Runs no action."""
        params = RuleTestSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        return Response(explain_rule(self.get_object(), dict(params.validated_data),
                                     request.user))

    @extend_schema(request=RuleTestSerializer, responses={200: dict},
                   operation_id="v1_rules_test_draft_create")
    @action(detail=False, methods=["post"], url_path="test")
    def test_draft(self, request: Request) -> Response:
        """Evaluate an unsaved rule (`rule`: the rule's fields) on a sample message."""
        body: dict[str, Any] = request.data if isinstance(request.data, dict) else {}
        draft = RuleSerializer(data=body.get("rule") or {},
                               context=self.get_serializer_context())
        draft.is_valid(raise_exception=True)
        rule = Rule(**dict(draft.validated_data))
        params = RuleTestSerializer(data={k: v for k, v in body.items() if k != "rule"})
        params.is_valid(raise_exception=True)
        return Response(explain_rule(rule, dict(params.validated_data), request.user))

    @extend_schema(responses=RuleTraceSerializer(many=True))
    @action(detail=True, methods=["get"])
    def traces(self, request: Request, pk: str | None = None) -> Response:
        """Every firing of the rule, newest first, with its inputs and action results."""
        queryset = RuleTraceFilterSet(request.query_params,
                                      RuleTrace.objects.filter(rule=self.get_object())).qs
        page = self.paginate_queryset(queryset)
        return self.get_paginated_response(RuleTraceSerializer(page, many=True).data)

    @extend_schema(responses={200: dict})
    @action(detail=True, methods=["get"])
    def stats(self, request: Request, pk: str | None = None) -> Response:
        """Counters from the ingest path: evaluated, held, fired, suppressed (debounce or
        cool-down), cleared, replayed."""
        rule = self.get_object()
        raw = get_redis().hgetall(rule_keys().stats(rule.pk))
        counters = {k.decode(): int(v) for k, v in raw.items()}
        for name in ("evaluated", "held", "fired", "suppressed", "cleared", "replayed"):
            counters.setdefault(name, 0)
        return Response(counters)


class RuleTraceViewSet(ScopedViewSetMixin, viewsets.ReadOnlyModelViewSet):
    """The per-rule trace of firings (also under /rules/{id}/traces/)."""

    serializer_class = RuleTraceSerializer
    filterset_class = RuleTraceFilterSet

    def get_queryset(self):
        return RuleTrace.objects.select_related("rule")


class AlarmViewSet(ScopedViewSetMixin, viewsets.ReadOnlyModelViewSet):
    """Alarms: filter by device, product, status (`open` = active or acknowledged),
    severity; acknowledge, clear, assign, comment; history; counts."""

    serializer_class = AlarmSerializer
    filterset_class = AlarmFilterSet

    def get_queryset(self):
        return Alarm.objects.select_related("device", "product", "rule", "assignee",
                                            "acknowledged_by", "cleared_by")

    @extend_schema(request=None, responses=AlarmSerializer)
    @action(detail=True, methods=["post"], permission_classes=[ChangePermission])
    def acknowledge(self, request: Request, pk: str | None = None) -> Response:
        alarm = actions.acknowledge_alarm(acting_user=request.user, alarm=self.get_object())
        return Response(AlarmSerializer(alarm).data)

    @extend_schema(request=AlarmClearSerializer, responses=AlarmSerializer)
    @action(detail=True, methods=["post"], permission_classes=[ChangePermission])
    def clear(self, request: Request, pk: str | None = None) -> Response:
        params = AlarmClearSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        alarm = actions.clear_alarm(acting_user=request.user, alarm=self.get_object(),
                                    reason=params.validated_data["reason"])
        return Response(AlarmSerializer(alarm).data)

    @extend_schema(request=AlarmAssignSerializer, responses=AlarmSerializer)
    @action(detail=True, methods=["post"], permission_classes=[ChangePermission])
    def assign(self, request: Request, pk: str | None = None) -> Response:
        params = AlarmAssignSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        alarm = actions.assign_alarm(acting_user=request.user, alarm=self.get_object(),
                                     assignee=params.validated_data["assignee"])
        return Response(AlarmSerializer(alarm).data)

    @extend_schema(request=AlarmCommentSerializer, responses=AlarmCommentSerializer(many=True))
    @action(detail=True, methods=["get", "post"], permission_classes=[ChangePermission])
    def comments(self, request: Request, pk: str | None = None) -> Response:
        alarm = self.get_object()
        if request.method == "POST":
            params = AlarmCommentSerializer(data=request.data)
            params.is_valid(raise_exception=True)
            comment = actions.comment_alarm(acting_user=request.user, alarm=alarm,
                                            text=params.validated_data["text"])
            return Response(AlarmCommentSerializer(comment).data,
                            status=status.HTTP_201_CREATED)
        return Response(AlarmCommentSerializer(alarm.comments.select_related("author"),
                                               many=True).data)

    @extend_schema(responses=AlarmEventSerializer(many=True))
    @action(detail=True, methods=["get"])
    def history(self, request: Request, pk: str | None = None) -> Response:
        alarm = self.get_object()
        return Response(AlarmEventSerializer(alarm.history.select_related("actor"),
                                             many=True).data)

    @extend_schema(responses={200: dict})
    @action(detail=False, methods=["get"])
    def counts(self, request: Request) -> Response:
        """Counts of the filtered alarms by status and severity, per device and product."""
        queryset = self.filter_queryset(self.get_queryset()).order_by()
        open_q = Q(status__in=OPEN_ALARM_STATUSES)

        def grouped(field: str) -> list[dict[str, Any]]:
            rows = queryset.exclude(**{f"{field}__isnull": True}).values(
                f"{field}__identifier").annotate(total=Count("id"), open=Count("id", filter=open_q))
            return [{field: r[f"{field}__identifier"], "total": r["total"], "open": r["open"]}
                    for r in rows.order_by(f"{field}__identifier")[:1000]]

        return Response({
            "total": queryset.count(),
            "by_status": {r["status"]: r["n"] for r in
                          queryset.values("status").annotate(n=Count("id"))},
            "by_severity": {r["severity"]: r["n"] for r in
                            queryset.filter(open_q).values("severity").annotate(n=Count("id"))},
            "by_device": grouped("device"),
            "by_product": grouped("product"),
        })


class NotificationChannelViewSet(ScopedViewSetMixin, viewsets.ModelViewSet):
    """Notification channels: email, signed webhook, DingTalk/WeCom/Feishu robots, in-site.
    Each belongs to a department (data scope): new ones default to the caller's."""

    serializer_class = NotificationChannelSerializer
    filterset_class = NotificationChannelFilterSet
    queryset = NotificationChannel.objects.select_related("created_by").prefetch_related(
        "users", "departments")

    def perform_create(self, serializer: Any) -> None:
        data = dict(serializer.validated_data)
        secret = data.pop("secret", None)
        serializer.instance = actions.save_channel(acting_user=self.request.user, channel=None,
                                                   data=data, secret=secret)

    def perform_update(self, serializer: Any) -> None:
        data = dict(serializer.validated_data)
        secret = data.pop("secret", None)
        serializer.instance = actions.save_channel(acting_user=self.request.user,
                                                   channel=serializer.instance, data=data,
                                                   secret=secret)

    def perform_destroy(self, instance: NotificationChannel) -> None:
        actions.delete_channel(channel=instance)

    @extend_schema(request=None, responses={202: NotificationSerializer(many=True)})
    @action(detail=True, methods=["post"], permission_classes=[ChangePermission])
    def test(self, request: Request, pk: str | None = None) -> Response:
        """Send a test notification through the channel: answers 202 with its deliveries,
        which a Celery worker sends (read their outcome at GET /notifications/{id}/). An
        error says what failed in generic words, never what the receiver answered."""

        channel = self.get_object()
        ids = send_channel(channel, "ThingLinks test notification",
                           "If you can read this, the channel works.", rule=None,
                           alarm_id=None, data={"test": True}, queue=True)
        return Response(NotificationSerializer(Notification.objects.filter(pk__in=ids),
                                               many=True).data,
                        status=status.HTTP_202_ACCEPTED)


class NotificationViewSet(viewsets.ReadOnlyModelViewSet):
    """Deliveries of notifications; `?mine=true` lists the caller's in-site messages.

    Data scope: a notification belongs where its rule or alarm belongs (a channel test's
    where its channel belongs), and its recipient always sees it (`actions.
    visible_notifications`); not a ScopedViewSetMixin, which would hide from `mine` the
    messages a rule of another department sent to the caller."""

    serializer_class = NotificationSerializer
    filterset_class = NotificationFilterSet

    def _mine(self) -> bool:
        return self.request.query_params.get("mine") in ("1", "true", "True")

    def get_permissions(self):
        # Everyone reads (and marks read) their own in-site messages.
        if self._mine() or self.action == "mark_read":
            return [IsAuthenticated()]
        return super().get_permissions()

    def get_queryset(self):
        queryset = Notification.objects.select_related("user")
        if self._mine():
            return queryset.filter(user=self.request.user)
        return actions.visible_notifications(queryset, self.request.user)

    @extend_schema(request={"application/json": {"type": "object", "properties": {
        "ids": {"type": "array", "items": {"type": "integer"}}}}}, responses={200: dict})
    @action(detail=False, methods=["post"], url_path="mark-read")
    def mark_read(self, request: Request) -> Response:
        body: dict[str, Any] = request.data if isinstance(request.data, dict) else {}
        ids = [int(i) for i in body.get("ids", []) if str(i).isdigit()]
        return Response({"updated": actions.mark_notifications_read(
            acting_user=request.user, ids=ids)})


class SinkViewSet(ScopedViewSetMixin, viewsets.ModelViewSet):
    """Forwarding sinks with filter, payload template, retries, dead letters and health.
    Each belongs to a department (data scope): new ones default to the caller's."""

    serializer_class = SinkSerializer
    filterset_class = SinkFilterSet
    queryset = Sink.objects.select_related("created_by")

    def perform_create(self, serializer: Any) -> None:
        data = dict(serializer.validated_data)
        credentials = data.pop("credentials", None)
        serializer.instance = actions.save_sink(acting_user=self.request.user, sink=None,
                                                data=data, credentials=credentials)

    def perform_update(self, serializer: Any) -> None:
        data = dict(serializer.validated_data)
        credentials = data.pop("credentials", None)
        serializer.instance = actions.save_sink(acting_user=self.request.user,
                                                sink=serializer.instance, data=data,
                                                credentials=credentials)

    def perform_destroy(self, instance: Sink) -> None:
        actions.delete_sink(sink=instance)

    @extend_schema(request=SinkTestSerializer, responses={202: dict, 200: dict})
    @action(detail=True, methods=["get", "post"], permission_classes=[ChangePermission])
    def test(self, request: Request, pk: str | None = None) -> Response:
        """POST: deliver a sample message from a Celery worker (one attempt, no retry, no
        dead letter); answers 202 with the `task` whose outcome GET `?task=…` reads for an
        hour: `{"status": "pending"}`, then `{"status": "done", "ok": …}` with the `payload`
        sent, `filtered`, or the `error` (what failed in generic words, never what the
        destination answered)."""
        sink = self.get_object()
        r = get_redis()
        if request.method == "GET":
            token = str(request.query_params.get("task") or "")
            raw = r.get(rule_keys().sink_test(token)) if token.isalnum() and len(token) == 32 \
                else None
            outcome = json.loads(raw) if raw else {}
            if outcome.get("sink") != sink.pk:
                return Response({"task": token, "status": "unknown"})
            return Response({"task": token, **{k: v for k, v in outcome.items()
                                               if k != "sink"}})
        params = SinkTestSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        token = uuid.uuid4().hex
        r.set(rule_keys().sink_test(token), json.dumps({"sink": sink.pk, "status": "pending"}),
              ex=RESULT_TTL_S)
        enqueue("rules.try_sink", sink.pk, dict(params.validated_data["message"]), token)
        raw = r.get(rule_keys().sink_test(token))  # already done when Celery runs tasks eagerly
        outcome = json.loads(raw) if raw else {"status": "pending"}
        return Response({"task": token, **{k: v for k, v in outcome.items() if k != "sink"}},
                        status=status.HTTP_202_ACCEPTED)


class DeadLetterViewSet(ScopedViewSetMixin, mixins.DestroyModelMixin,
                        viewsets.ReadOnlyModelViewSet):
    """Messages a sink could not deliver after its retries; redeliver or delete them.
    A dead letter belongs where its sink belongs (data scope)."""

    serializer_class = DeadLetterSerializer
    filterset_class = DeadLetterFilterSet
    queryset = DeadLetter.objects.select_related("sink")

    @extend_schema(request=None, responses={202: dict, 200: dict})
    @action(detail=True, methods=["get", "post"], permission_classes=[ChangePermission])
    def redeliver(self, request: Request, pk: str | None = None) -> Response:
        """POST: deliver the message to its sink again from a Celery worker; answers 202
        with the `task` whose outcome GET `?task=…` reads for an hour: `{"status":
        "pending"}`, then `{"status": "done", "ok": …}` (with the `error`). The letter is
        marked redelivered on success. While one redelivery is pending, another POST
        answers its task instead of sending the message twice."""
        letter = self.get_object()
        r = get_redis()
        rk = rule_keys()
        if request.method == "GET":
            token = str(request.query_params.get("task") or "")
            raw = r.get(rk.redeliver(token)) if token.isalnum() and len(token) == 32 \
                else None
            outcome = json.loads(raw) if raw else {}
            if outcome.get("letter") != letter.pk:
                return Response({"task": token, "status": "unknown"})
            return Response({"task": token, **{k: v for k, v in outcome.items()
                                               if k != "letter"}})
        token = uuid.uuid4().hex
        if r.set(rk.redeliver_lock(letter.pk), token, nx=True, ex=RESULT_TTL_S):
            r.set(rk.redeliver(token), json.dumps({"letter": letter.pk, "status": "pending"}),
                  ex=RESULT_TTL_S)
            try:
                enqueue("rules.redeliver_dead_letter", letter.pk, token)
            except Exception:
                r.delete(rk.redeliver_lock(letter.pk))
                raise
        else:
            pending = r.get(rk.redeliver_lock(letter.pk))
            token = pending.decode() if isinstance(pending, bytes) else str(pending or token)
        raw = r.get(rk.redeliver(token))  # already done when Celery runs tasks eagerly
        outcome = json.loads(raw) if raw else {"status": "pending"}
        return Response({"task": token, **{k: v for k, v in outcome.items()
                                           if k != "letter"}},
                        status=status.HTTP_202_ACCEPTED)


# (prefix, viewset, basename) for the API router (config/api.py).
ROUTES = [
    ("rules", RuleViewSet, "rule"),
    ("rule-traces", RuleTraceViewSet, "rule-trace"),
    ("alarms", AlarmViewSet, "alarm"),
    ("notification-channels", NotificationChannelViewSet, "notification-channel"),
    ("notifications", NotificationViewSet, "notification"),
    ("sinks", SinkViewSet, "sink"),
    ("dead-letters", DeadLetterViewSet, "dead-letter"),
]
