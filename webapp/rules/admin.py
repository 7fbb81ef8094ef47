from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _
from import_export.admin import ExportMixin

from webapp.core.errors import DomainError
from webapp.rules import actions, secrets
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
from webapp.rules.resources import AlarmResource, RuleTraceResource
from webapp.rules.sinks import check_sink
from webapp.system.admin_scope import (
    ScopedAdminMixin,
    ScopedChoicesMixin,
    ScopedRelatedFieldListFilter,
)

_JSON = forms.Textarea(attrs={"rows": 8, "cols": 100, "style": "font-family:monospace"})


class RuleForm(forms.ModelForm):
    class Meta:
        model = Rule
        fields = ("name", "description", "enabled", "trigger", "condition", "actions",
                  "debounce", "cooldown", "fire_mode", "auto_clear")
        widgets = {"trigger": _JSON, "condition": _JSON, "actions": _JSON, "debounce": _JSON}

    # The user saving the form (set by RuleAdmin.get_form on the form class it builds).
    acting_user: Any = None

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        try:
            actions.validate_rule(data)
            actions.check_webhook_destinations(
                data.get("actions") or [],
                previous=self.instance.actions if self.instance.pk else None)
        except DomainError as exc:
            raise forms.ValidationError(str(exc.detail)) from exc
        trigger = data.get("trigger")
        problems = actions.out_of_scope_references(
            data.get("actions"), self.acting_user,
            previous=self.instance.actions if self.instance.pk else None,
            product=trigger.get("product") if isinstance(trigger, dict) else None)
        if problems:
            self.add_error("actions", problems)
        try:
            actions.check_trigger_scope(
                data.get("trigger"), self.acting_user,
                previous=self.instance.trigger if self.instance.pk else None)
        except DomainError as exc:
            self.add_error("trigger", str(exc.detail))
        return data


# Related records in the sidebar filters stop at the user's data scope.
_SCOPED = ScopedRelatedFieldListFilter


@admin.register(Rule)
class RuleAdmin(ScopedAdminMixin, admin.ModelAdmin):
    form = RuleForm
    list_display = ("name", "enabled", "trigger_type", "product", "cooldown", "fire_mode",
                    "failed_at", "updated")
    list_filter = ("enabled", "trigger_type", ("product", _SCOPED))
    search_fields = ("name", "description")
    readonly_fields = ("trigger_type", "product", "failed_at", "failure_reason", "created",
                       "updated")
    actions = ("enable", "disable")

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        form.acting_user = request.user  # a class built for this request
        return form

    def save_model(self, request, obj, form, change):
        data = {k: form.cleaned_data[k] for k in form.Meta.fields if k in form.cleaned_data}
        if change:
            saved = actions.update_rule(rule=Rule.objects.get(pk=obj.pk), data=data)
        else:
            saved = actions.create_rule(acting_user=request.user, data=data)
        obj.pk = saved.pk
        obj._state = saved._state

    def delete_model(self, request, obj):
        actions.delete_rule(rule=obj)

    @admin.action(description=_("Enable the selected rules"))
    def enable(self, request, queryset):
        for rule in queryset:
            actions.set_rule_enabled(rule=rule, enabled=True)

    @admin.action(description=_("Disable the selected rules"))
    def disable(self, request, queryset):
        for rule in queryset:
            actions.set_rule_enabled(rule=rule, enabled=False)


@admin.register(RuleTrace)
class RuleTraceAdmin(ScopedAdminMixin, ExportMixin, admin.ModelAdmin):
    resource_classes = [RuleTraceResource]
    list_display = ("created", "rule", "kind", "device", "ts", "ok")
    list_filter = ("kind", "ok", ("rule", _SCOPED))
    search_fields = ("device",)
    readonly_fields = ("rule", "kind", "device", "ts", "ok", "created", "pretty_message",
                       "pretty_conditions", "pretty_results")
    exclude = ("message", "conditions", "results")
    list_select_related = ("rule",)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def _pre(self, value: Any) -> Any:
        return format_html("<pre>{}</pre>", json.dumps(value, indent=2, ensure_ascii=False,
                                                      default=str))

    @admin.display(description=_("message"))
    def pretty_message(self, obj: RuleTrace) -> Any:
        return self._pre(obj.message)

    @admin.display(description=_("conditions (why)"))
    def pretty_conditions(self, obj: RuleTrace) -> Any:
        return self._pre(obj.conditions)

    @admin.display(description=_("action results"))
    def pretty_results(self, obj: RuleTrace) -> Any:
        return self._pre(obj.results)


class CommentInline(admin.TabularInline):
    model = AlarmComment
    extra = 0
    fields = ("created", "author", "text")
    readonly_fields = ("created", "author", "text")
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


class HistoryInline(admin.TabularInline):
    model = AlarmEvent
    extra = 0
    fields = ("created", "kind", "actor", "detail")
    readonly_fields = fields
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


class AlarmForm(forms.ModelForm):
    new_comment = forms.CharField(label=_("Add a comment"), required=False,
                                  widget=forms.Textarea(attrs={"rows": 3}))

    class Meta:
        model = Alarm
        fields = ("assignee",)


@admin.register(Alarm)
class AlarmAdmin(ScopedAdminMixin, ExportMixin, admin.ModelAdmin):
    resource_classes = [AlarmResource]
    form = AlarmForm
    list_display = ("name", "device", "product", "severity", "status", "count", "last_seen",
                    "assignee")
    list_filter = ("status", "severity", ("product", _SCOPED), ("rule", _SCOPED))
    search_fields = ("name", "message", "device__identifier")
    readonly_fields = ("rule", "name", "device", "product", "severity", "status", "message",
                       "details", "count", "first_seen", "last_seen", "acknowledged_at",
                       "acknowledged_by", "cleared_at", "cleared_by")
    list_select_related = ("device", "product", "assignee")
    inlines = (CommentInline, HistoryInline)
    actions = ("acknowledge", "clear")

    def has_add_permission(self, request):
        return False

    def save_model(self, request, obj, form, change):
        current = Alarm.objects.get(pk=obj.pk)
        if "assignee" in form.changed_data:
            actions.assign_alarm(acting_user=request.user, alarm=current,
                                 assignee=form.cleaned_data["assignee"])
        if form.cleaned_data.get("new_comment"):
            actions.comment_alarm(acting_user=request.user, alarm=current,
                                  text=form.cleaned_data["new_comment"])

    def save_related(self, request, form, formsets, change):
        """Inlines are read-only: nothing to save. The admin's change message reads what
        each formset saved, so each says it saved nothing (unset, every save answered 500)."""
        for formset in formsets:
            formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []

    @admin.action(description=_("Acknowledge the selected alarms"))
    def acknowledge(self, request, queryset):
        for alarm in queryset:
            try:
                actions.acknowledge_alarm(acting_user=request.user, alarm=alarm)
            except DomainError as exc:
                messages.warning(request, f"{alarm}: {exc.detail}")

    @admin.action(description=_("Clear the selected alarms"))
    def clear(self, request, queryset):
        for alarm in queryset:
            try:
                actions.clear_alarm(acting_user=request.user, alarm=alarm, reason="admin")
            except DomainError as exc:
                messages.warning(request, f"{alarm}: {exc.detail}")


class ChannelForm(forms.ModelForm):
    secret = forms.CharField(label=_("Signing secret"), required=False,
                             widget=forms.PasswordInput(render_value=False), help_text=_(
                                 "Stored encrypted. Leave empty to keep the current one."))

    class Meta:
        model = NotificationChannel
        fields = ("name", "channel_type", "enabled", "department", "config",
                  "title_template", "body_template", "users", "roles", "departments", "emails",
                  "max_retries")
        widgets = {"config": _JSON}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:  # a robot URL's credential masked, the encrypted one not shown
            self.initial["config"] = secrets.shown_channel_config(self.instance)

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        previous = NotificationChannel.objects.filter(pk=self.instance.pk).first() \
            if self.instance.pk else None
        try:
            actions.channel_config(data.get("channel_type") or "", data.get("config"),
                                   previous_type=previous.channel_type if previous else "",
                                   previous=previous.config if previous else None)
        except DomainError as exc:
            self.add_error("config", str(exc.detail))
        return data


@admin.register(NotificationChannel)
class NotificationChannelAdmin(ScopedChoicesMixin, admin.ModelAdmin):
    form = ChannelForm
    list_display = ("name", "channel_type", "enabled", "department", "max_retries")
    list_filter = ("channel_type", "enabled")
    list_select_related = ("department",)
    filter_horizontal = ("users", "departments")

    def save_model(self, request, obj, form, change):
        data = {k: v for k, v in form.cleaned_data.items() if k != "secret"}
        saved = actions.save_channel(acting_user=request.user,
                                     channel=NotificationChannel.objects.get(pk=obj.pk)
                                     if change else None, data=data,
                                     secret=form.cleaned_data.get("secret") or None)
        obj.pk = saved.pk
        obj._state = saved._state

    def save_related(self, request, form, formsets, change):
        """The relations were saved by the action."""


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    """Read-only. Data scope as in the API (`actions.visible_notifications`): where the
    rule or alarm belongs, and always to the recipient."""

    list_display = ("created", "channel_type", "channel", "title", "status", "attempts",
                    "user")
    list_filter = ("channel_type", "status")
    search_fields = ("title", "body")
    readonly_fields = [f.name for f in Notification._meta.fields]

    def get_queryset(self, request):
        return actions.visible_notifications(super().get_queryset(request), request.user)

    def has_add_permission(self, request):
        return False


class SinkForm(forms.ModelForm):
    credentials = forms.JSONField(label=_("Credentials"), required=False, widget=_JSON,
                                  help_text=_('{"password": "…"}; stored encrypted. Leave empty '
                                              "to keep the current ones."))

    class Meta:
        model = Sink
        fields = ("name", "sink_type", "enabled", "department", "config", "filter",
                  "payload_template", "max_retries", "backoff")
        widgets = {"config": _JSON}

    # The user saving the form (set by SinkAdmin.get_form on the form class it builds).
    acting_user: Any = None

    def clean(self) -> dict[str, Any]:
        """What `actions.save_sink` refuses (settings, filter, template, a destination the
        platform may not connect to) is a form error, not a sink "added" that was not."""
        data = super().clean() or {}
        if "sink_type" not in data or "config" not in data:
            return data  # their own errors are shown
        before = Sink.objects.filter(pk=self.instance.pk).values_list(
            "sink_type", "config").first() if self.instance.pk else None
        candidate = Sink(**{k: data[k] for k in ("sink_type", "config", "filter",
                                                  "payload_template") if k in data})
        try:
            check_sink(candidate, destination=before != (candidate.sink_type, candidate.config))
            actions.check_sink_scope(candidate.sink_type, candidate.config, self.acting_user,
                                     before)
        except DomainError as exc:
            raise forms.ValidationError(str(exc.detail)) from exc
        return data


@admin.register(Sink)
class SinkAdmin(ScopedAdminMixin, admin.ModelAdmin):
    form = SinkForm
    list_display = ("name", "sink_type", "enabled", "department", "health", "failures",
                    "delivered", "last_success")
    list_select_related = ("department",)
    list_filter = ("sink_type", "enabled", "health")
    readonly_fields = ("health", "last_error", "last_success", "failures", "delivered")

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        form.acting_user = request.user  # a class built for this request
        return form

    def save_model(self, request, obj, form, change):
        data = {k: v for k, v in form.cleaned_data.items() if k != "credentials"}
        try:
            saved = actions.save_sink(acting_user=request.user,
                                      sink=Sink.objects.get(pk=obj.pk) if change else None,
                                      data=data,
                                      credentials=form.cleaned_data.get("credentials") or None)
        except DomainError as exc:
            messages.error(request, str(exc.detail))
            return
        obj.pk = saved.pk
        obj._state = saved._state


@admin.register(DeadLetter)
class DeadLetterAdmin(ScopedAdminMixin, admin.ModelAdmin):
    list_display = ("created", "sink", "rule", "attempts", "redelivered", "error")
    list_filter = (("sink", _SCOPED), "redelivered")
    list_select_related = ("sink", "rule")
    readonly_fields = [f.name for f in DeadLetter._meta.fields]

    def has_add_permission(self, request):
        return False
