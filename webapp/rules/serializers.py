from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.utils.translation import gettext_lazy as _
from rest_framework import serializers

from webapp.rules import actions, notify, secrets
from webapp.rules.choices import FireMode
from webapp.rules.compiler import group_id
from webapp.rules.expressions import ExpressionError, Template
from webapp.rules.models import (
    Alarm,
    AlarmComment,
    AlarmEvent,
    DeadLetter,
    Notification,
    NotificationChannel,
    Rule,
    RuleTrace,
    Sink,
)
from webapp.system import scope


class RuleSerializer(serializers.ModelSerializer):
    product: serializers.SlugRelatedField = serializers.SlugRelatedField(
        slug_field="identifier", read_only=True)
    trigger = serializers.JSONField(help_text=_(
        '{"type": "property", "product": "thermo", "service": "env", "property": '
        '"temperature"}; also event, cmdrsp, status, schedule (with "cron"); optional '
        '"devices": [...] or "group" (a device group\'s id; a name is accepted and stored as '
        'the id of the group of that name within your data scope).'))
    condition = serializers.JSONField(required=False, help_text=_(
        '{"op": ">", "value": 30}, or {"all": [...]} / {"any": [...]} / {"not": ...} / '
        '{"expr": "..."}'))
    actions = serializers.JSONField(required=False)
    debounce = serializers.JSONField(required=False, help_text=_(
        '{"count": N, "window": M} (N of the last M messages) or {"duration": seconds}'))
    fire_mode = serializers.ChoiceField(choices=FireMode.choices, required=False)
    group = serializers.SerializerMethodField(help_text=_(
        'The device group the trigger watches: {"id": …, "name": …} (name null for a group '
        'deleted since), or null.'))

    class Meta:
        model = Rule
        fields = ("id", "name", "description", "enabled", "trigger_type", "product", "trigger",
                  "condition", "actions", "debounce", "cooldown", "fire_mode", "auto_clear",
                  "failed_at", "failure_reason", "group", "created", "updated")
        # failed_at / failure_reason: set by the rule engine when evaluating the rule failed
        # (it was disabled then); enabling the rule clears them.
        read_only_fields = ("id", "trigger_type", "product", "failed_at", "failure_reason",
                            "created", "updated")

    def validate_trigger(self, value: Any) -> Any:
        """The watched product, group and devices are within the acting user's scope
        (refused like ones that do not exist: 404 for a product, 400 otherwise)."""
        request = self.context.get("request")
        previous = self.instance.trigger if isinstance(self.instance, Rule) else None
        actions.check_trigger_scope(value, getattr(request, "user", None), previous=previous)
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """Actions may only name channels, sinks and target devices within the acting
        user's data scope, channels and sinks of the rule's product's department (a
        serializer without a request reaches none): `actions.out_of_scope_references`."""
        if "actions" in attrs:
            request = self.context.get("request")
            instance = self.instance if isinstance(self.instance, Rule) else None
            trigger = attrs.get("trigger", instance.trigger if instance else None)
            problems = actions.out_of_scope_references(
                attrs["actions"], getattr(request, "user", None),
                previous=instance.actions if instance else None,
                product=trigger.get("product") if isinstance(trigger, dict) else None)
            if problems:
                raise serializers.ValidationError({"actions": problems})
        return attrs

    def get_group(self, instance: Rule) -> dict[str, Any] | None:
        return trigger_group(instance.trigger)

    def to_representation(self, instance: Rule) -> dict[str, Any]:
        data = super().to_representation(instance)
        data["actions"] = secrets.masked_actions(instance.actions or [])
        return data


def trigger_group(trigger: Any) -> dict[str, Any] | None:
    """The device group the trigger watches, `{"id", "name"}` (name null for a group deleted
    since), or None."""
    from webapp.devices.models import DeviceGroup

    ref = trigger.get("group") if isinstance(trigger, dict) else None
    if ref in (None, ""):
        return None
    pk = group_id(ref)
    name = DeviceGroup.objects.filter(pk=pk).values_list("name", flat=True).first() \
        if pk is not None else None
    return {"id": pk, "name": name}


class OwnedSerializerMixin:
    """The `department` (owner) of a channel or sink: within the acting user's data scope
    (the viewsets also limit its choices and default it to the user's department), and the
    user who made it, shown read-only."""

    context: dict[str, Any]

    def validate_department(self, value: Any) -> Any:
        request = self.context.get("request")
        if value is not None and not scope.can_assign(getattr(request, "user", None), value):
            raise serializers.ValidationError(_(
                "Department {pk} does not exist or is outside your data scope.").format(
                    pk=value.pk))
        return value


_OWNER_KWARGS = {"department": {"error_messages": {"does_not_exist": _(
    "Department {pk_value} does not exist or is outside your data scope.")}}}


class RuleTestSerializer(serializers.Serializer):
    device = serializers.CharField(required=False, allow_blank=True, default="")
    service = serializers.CharField(required=False, allow_blank=True, default="")
    values = serializers.DictField(required=False, default=dict, help_text=_(
        "The message: property values (or the event's / response's params)."))
    event = serializers.CharField(required=False, allow_blank=True, default="")
    command = serializers.CharField(required=False, allow_blank=True, default="")
    status = serializers.CharField(required=False, allow_blank=True, default="")
    err = serializers.JSONField(required=False, default=None)
    latest = serializers.DictField(required=False, help_text=_(
        "Latest values {service: {property: value}}; read from the device when omitted."))
    previous = serializers.DictField(required=False, default=dict, help_text=_(
        'Previous values for changed/increased_by/decreased_by: {"env.temperature": 20}.'))
    ts = serializers.IntegerField(required=False)


class RuleTraceSerializer(serializers.ModelSerializer):
    rule_name = serializers.CharField(source="rule.name", read_only=True)

    class Meta:
        model = RuleTrace
        fields = ("id", "rule", "rule_name", "kind", "device", "ts", "message", "conditions",
                  "results", "ok", "created")


class AlarmSerializer(serializers.ModelSerializer):
    device: serializers.SlugRelatedField = serializers.SlugRelatedField(
        slug_field="identifier", read_only=True)
    product: serializers.SlugRelatedField = serializers.SlugRelatedField(
        slug_field="identifier", read_only=True)
    rule_name = serializers.CharField(source="rule.name", read_only=True, default=None)
    assignee: serializers.SlugRelatedField = serializers.SlugRelatedField(
        slug_field="username", read_only=True)
    acknowledged_by: serializers.SlugRelatedField = serializers.SlugRelatedField(
        slug_field="username", read_only=True)
    cleared_by: serializers.SlugRelatedField = serializers.SlugRelatedField(
        slug_field="username", read_only=True)

    class Meta:
        model = Alarm
        fields = ("id", "rule", "rule_name", "name", "device", "product", "severity", "status",
                  "message", "details", "count", "first_seen", "last_seen", "assignee",
                  "acknowledged_at", "acknowledged_by", "cleared_at", "cleared_by", "created",
                  "updated")
        read_only_fields = fields


class AlarmAssignSerializer(serializers.Serializer):
    assignee = serializers.SlugRelatedField(slug_field="username", allow_null=True,
                                            queryset=get_user_model().objects.filter(
                                                is_active=True))


class AlarmClearSerializer(serializers.Serializer):
    reason = serializers.CharField(required=False, allow_blank=True, default="")


class AlarmCommentSerializer(serializers.ModelSerializer):
    author: serializers.SlugRelatedField = serializers.SlugRelatedField(
        slug_field="username", read_only=True)

    class Meta:
        model = AlarmComment
        fields = ("id", "author", "text", "created")
        read_only_fields = ("id", "author", "created")


class AlarmEventSerializer(serializers.ModelSerializer):
    actor: serializers.SlugRelatedField = serializers.SlugRelatedField(
        slug_field="username", read_only=True)

    class Meta:
        model = AlarmEvent
        fields = ("id", "kind", "actor", "detail", "created")


class NotificationChannelSerializer(OwnedSerializerMixin, serializers.ModelSerializer):
    created_by: serializers.SlugRelatedField = serializers.SlugRelatedField(
        slug_field="username", read_only=True)
    secret = serializers.CharField(write_only=True, required=False, allow_blank=True,
                                   help_text=_("Signing secret (webhook, DingTalk, Feishu); "
                                               "stored encrypted, never shown."))
    has_secret = serializers.SerializerMethodField()

    class Meta:
        model = NotificationChannel
        fields = ("id", "name", "channel_type", "enabled", "config", "secret", "has_secret",
                  "title_template", "body_template", "users", "roles", "departments",
                  "emails", "max_retries", "department", "created_by", "created", "updated")
        read_only_fields = ("id", "has_secret", "created_by", "created", "updated")
        extra_kwargs = _OWNER_KWARGS

    def get_has_secret(self, obj: NotificationChannel) -> bool:
        return bool(obj.secret_encrypted)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        for name in ("title_template", "body_template"):
            if attrs.get(name):
                try:
                    Template(attrs[name])
                except ExpressionError as exc:
                    raise serializers.ValidationError({name: exc.detail}) from exc
        kind = attrs.get("channel_type") or getattr(self.instance, "channel_type", "")
        config = attrs.get("config", getattr(self.instance, "config", {})) or {}
        if kind in ("webhook", "dingtalk", "wecom", "feishu") and not str(
                config.get("url", "")).startswith(("http://", "https://")):
            raise serializers.ValidationError({"config": _("This channel needs an http(s) "
                                                           "'url' in its settings.")})
        return attrs

    def to_representation(self, instance: NotificationChannel) -> dict[str, Any]:
        data = super().to_representation(instance)
        data["config"] = secrets.shown_channel_config(instance)
        return data


class NotificationSerializer(serializers.ModelSerializer):
    user: serializers.SlugRelatedField = serializers.SlugRelatedField(
        slug_field="username", read_only=True)

    class Meta:
        model = Notification
        fields = ("id", "channel", "channel_type", "rule", "alarm", "user", "recipients",
                  "title", "body", "status", "attempts", "last_error", "read", "created",
                  "sent_at")
        read_only_fields = fields

    def to_representation(self, instance: Notification) -> dict[str, Any]:
        data = super().to_representation(instance)
        if isinstance(data.get("recipients"), list):  # a robot's URL, its credential masked
            data["recipients"] = [notify.split_url_token(instance.channel_type, r)[0]
                                  if isinstance(r, str) else r for r in data["recipients"]]
        return data


class SinkSerializer(OwnedSerializerMixin, serializers.ModelSerializer):
    created_by: serializers.SlugRelatedField = serializers.SlugRelatedField(
        slug_field="username", read_only=True)
    credentials = serializers.DictField(write_only=True, required=False, help_text=_(
        "Passwords and keys (e.g. {\"password\": …}); stored encrypted, never shown."))
    credential_keys = serializers.SerializerMethodField()
    payload_template = serializers.JSONField(required=False, allow_null=True)

    class Meta:
        model = Sink
        fields = ("id", "name", "sink_type", "enabled", "config", "credentials",
                  "credential_keys", "filter", "payload_template", "max_retries", "backoff",
                  "health", "last_error", "last_success", "failures", "delivered",
                  "department", "created_by", "created", "updated")
        read_only_fields = ("id", "credential_keys", "health", "last_error", "last_success",
                            "failures", "delivered", "created_by", "created", "updated")
        extra_kwargs = _OWNER_KWARGS

    def get_credential_keys(self, obj: Sink) -> list[str]:
        return sorted(secrets.sink_credentials(obj))


class SinkTestSerializer(serializers.Serializer):
    message = serializers.DictField(required=False, default=dict)


class DeadLetterSerializer(serializers.ModelSerializer):
    class Meta:
        model = DeadLetter
        fields = ("id", "sink", "rule", "message", "payload", "error", "attempts",
                  "redelivered", "created")
        read_only_fields = fields
