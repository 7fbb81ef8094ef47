"""Rules, their traces, alarms, notification channels and forwarding sinks."""

from __future__ import annotations

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from webapp.rules.choices import (
    AlarmEventKind,
    AlarmStatus,
    ChannelType,
    DeliveryStatus,
    FireMode,
    Severity,
    SinkHealth,
    SinkType,
    TraceKind,
    TriggerType,
)
from webapp.system.models import DepartmentOwned

# Rule actions name a channel or sink by id or by name: a name of digits only could be
# mistaken for another record's id, so names have at least one other character.
not_a_number = RegexValidator(r"^\d+$", inverse_match=True, message=_(
    "A name is not a number only (rule actions name channels and sinks by id or name)."))


class Rule(models.Model):
    """A trigger, a condition tree and the actions to run when the condition holds."""

    name = models.CharField(_("name"), max_length=100)
    description = models.TextField(_("description"), blank=True)
    enabled = models.BooleanField(_("enabled"), default=True)
    trigger_type = models.CharField(_("trigger type"), max_length=16,
                                    choices=TriggerType.choices, editable=False)
    # The product the trigger watches (null for a schedule over listed devices only).
    product = models.ForeignKey("products.Product", verbose_name=_("product"), null=True,
                                blank=True, on_delete=models.CASCADE, related_name="rules",
                                editable=False)
    trigger = models.JSONField(_("trigger"), default=dict)
    condition = models.JSONField(_("condition"), default=dict, blank=True)
    actions = models.JSONField(_("actions"), default=list, blank=True)
    # {"count": N, "window": M}: N of the last M messages; {"duration": s}: held for s seconds.
    debounce = models.JSONField(_("debounce"), default=dict, blank=True)
    cooldown = models.PositiveIntegerField(_("cool-down (s)"), default=0, help_text=_(
        "Seconds after a firing during which the rule does not fire again for that device."))
    fire_mode = models.CharField(_("fire"), max_length=8, choices=FireMode.choices,
                                 default=FireMode.EACH)
    auto_clear = models.BooleanField(_("clear alarms automatically"), default=True, help_text=_(
        "Clear the rule's alarm for a device when the condition stops holding for it."))
    periodic_task = models.OneToOneField("django_celery_beat.PeriodicTask", null=True,
                                         blank=True, on_delete=models.SET_NULL,
                                         related_name="+", editable=False)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, verbose_name=_("created by"),
                                   null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    # Set by the rule engine when evaluating the rule raised (an arithmetic overflow, an
    # evaluation over its time budget): the rule is disabled then, and enabling it again
    # clears both.
    failed_at = models.DateTimeField(_("failed"), null=True, blank=True, editable=False,
                                     help_text=_("When evaluating the rule failed; the rule "
                                                 "was disabled then."))
    failure_reason = models.TextField(_("failure reason"), blank=True, editable=False)
    created = models.DateTimeField(_("created"), auto_now_add=True)
    updated = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("rule")
        verbose_name_plural = _("rules")
        ordering = ("name", "id")
        indexes = [models.Index(fields=("product", "enabled"))]

    def __str__(self) -> str:
        return self.name


class RuleTrace(models.Model):
    """One firing (or auto-clear, or scheduled run) of a rule, with what it saw and did."""

    rule = models.ForeignKey(Rule, verbose_name=_("rule"), on_delete=models.CASCADE,
                             related_name="traces")
    kind = models.CharField(_("kind"), max_length=16, choices=TraceKind.choices)
    device = models.CharField(_("device"), max_length=64, blank=True, db_index=True)
    ts = models.DateTimeField(_("message time"))
    message = models.JSONField(_("message"), default=dict)
    conditions = models.JSONField(_("conditions"), default=dict)
    results = models.JSONField(_("action results"), default=list)
    ok = models.BooleanField(_("all actions succeeded"), default=True)
    created = models.DateTimeField(_("recorded"), auto_now_add=True, db_index=True)

    class Meta:
        verbose_name = _("rule trace")
        verbose_name_plural = _("rule traces")
        ordering = ("-created", "-id")

    def __str__(self) -> str:
        return f"{self.rule_id} {self.kind} {self.device} {self.ts:%Y-%m-%d %H:%M:%S}"


class Alarm(models.Model):
    """An alarm of a device; one open alarm per (rule, device), updated while it holds."""

    rule = models.ForeignKey(Rule, verbose_name=_("rule"), null=True, blank=True,
                             on_delete=models.SET_NULL, related_name="alarms")
    name = models.CharField(_("name"), max_length=100)
    device = models.ForeignKey("devices.Device", verbose_name=_("device"), null=True,
                               blank=True, on_delete=models.CASCADE, related_name="alarms")
    product = models.ForeignKey("products.Product", verbose_name=_("product"), null=True,
                                blank=True, on_delete=models.CASCADE, related_name="alarms")
    severity = models.CharField(_("severity"), max_length=16, choices=Severity.choices,
                                default=Severity.MAJOR)
    status = models.CharField(_("status"), max_length=16, choices=AlarmStatus.choices,
                              default=AlarmStatus.ACTIVE)
    message = models.TextField(_("message"), blank=True)
    details = models.JSONField(_("details"), default=dict, blank=True)
    count = models.PositiveIntegerField(_("occurrences"), default=1)
    first_seen = models.DateTimeField(_("first seen"))
    last_seen = models.DateTimeField(_("last seen"))
    assignee = models.ForeignKey(settings.AUTH_USER_MODEL, verbose_name=_("assignee"),
                                 null=True, blank=True, on_delete=models.SET_NULL,
                                 related_name="assigned_alarms")
    acknowledged_at = models.DateTimeField(_("acknowledged"), null=True, blank=True)
    acknowledged_by = models.ForeignKey(settings.AUTH_USER_MODEL,
                                        verbose_name=_("acknowledged by"), null=True,
                                        blank=True, on_delete=models.SET_NULL, related_name="+")
    cleared_at = models.DateTimeField(_("cleared"), null=True, blank=True)
    cleared_by = models.ForeignKey(settings.AUTH_USER_MODEL, verbose_name=_("cleared by"),
                                   null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created = models.DateTimeField(_("created"), auto_now_add=True)
    updated = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("alarm")
        verbose_name_plural = _("alarms")
        ordering = ("-last_seen", "-id")
        indexes = [models.Index(fields=("device", "status")),
                   models.Index(fields=("product", "status")),
                   models.Index(fields=("status", "severity"))]
        constraints = [models.UniqueConstraint(
            fields=("rule", "device"), condition=~Q(status="cleared"),
            name="one_open_alarm_per_rule_and_device")]

    def __str__(self) -> str:
        return f"{self.name} ({self.device_id or '-'})"


class AlarmComment(models.Model):
    alarm = models.ForeignKey(Alarm, verbose_name=_("alarm"), on_delete=models.CASCADE,
                              related_name="comments")
    author = models.ForeignKey(settings.AUTH_USER_MODEL, verbose_name=_("author"), null=True,
                               blank=True, on_delete=models.SET_NULL, related_name="+")
    text = models.TextField(_("text"))
    created = models.DateTimeField(_("created"), auto_now_add=True)

    class Meta:
        verbose_name = _("alarm comment")
        verbose_name_plural = _("alarm comments")
        ordering = ("created", "id")

    def __str__(self) -> str:
        return self.text[:50]


class AlarmEvent(models.Model):
    """The history of an alarm: raised, updated, acknowledged, assigned, commented, cleared."""

    alarm = models.ForeignKey(Alarm, verbose_name=_("alarm"), on_delete=models.CASCADE,
                              related_name="history")
    kind = models.CharField(_("kind"), max_length=16, choices=AlarmEventKind.choices)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, verbose_name=_("by"), null=True,
                              blank=True, on_delete=models.SET_NULL, related_name="+")
    detail = models.JSONField(_("detail"), default=dict, blank=True)
    created = models.DateTimeField(_("when"), auto_now_add=True)

    class Meta:
        verbose_name = _("alarm event")
        verbose_name_plural = _("alarm history")
        ordering = ("created", "id")

    def __str__(self) -> str:
        return f"{self.alarm_id} {self.kind}"


class NotificationChannel(DepartmentOwned):
    """Where and to whom notifications go, with the message template."""

    name = models.CharField(_("name"), max_length=100, unique=True,
                            validators=[not_a_number])
    channel_type = models.CharField(_("type"), max_length=16, choices=ChannelType.choices)
    enabled = models.BooleanField(_("enabled"), default=True)
    # Non-secret settings: `url` for robots and webhooks, `msgtype`, extra headers.
    config = models.JSONField(_("settings"), default=dict, blank=True)
    # Fernet token (edge.crypto) of the signing secret; never stored in plaintext.
    secret_encrypted = models.TextField(_("secret (encrypted)"), blank=True, editable=False)
    title_template = models.CharField(_("title template"), max_length=500, blank=True,
                                      default="[{{severity}}] {{alarm.name}}")
    body_template = models.TextField(_("body template"), blank=True,
                                     default="{{message}} (device {{device}}, {{time}})")
    users = models.ManyToManyField(settings.AUTH_USER_MODEL, verbose_name=_("users"),
                                   blank=True, related_name="+")
    # Role codes (system roles) or Django group names: resolved when a notification is sent.
    roles = models.JSONField(_("roles"), default=list, blank=True)
    departments = models.ManyToManyField("system.Department", verbose_name=_("departments"),
                                         blank=True, related_name="+")
    emails = models.JSONField(_("extra email addresses"), default=list, blank=True)
    max_retries = models.PositiveSmallIntegerField(_("retries"), default=3)
    created = models.DateTimeField(_("created"), auto_now_add=True)
    updated = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("notification channel")
        verbose_name_plural = _("notification channels")
        ordering = ("name",)

    def __str__(self) -> str:
        return self.name


class Notification(models.Model):
    """One delivery through a channel (or, for in-site messages, to one user)."""

    channel = models.ForeignKey(NotificationChannel, verbose_name=_("channel"), null=True,
                                blank=True, on_delete=models.SET_NULL,
                                related_name="notifications")
    channel_type = models.CharField(_("type"), max_length=16, choices=ChannelType.choices)
    rule = models.ForeignKey(Rule, verbose_name=_("rule"), null=True, blank=True,
                             on_delete=models.SET_NULL, related_name="+")
    alarm = models.ForeignKey(Alarm, verbose_name=_("alarm"), null=True, blank=True,
                              on_delete=models.SET_NULL, related_name="notifications")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, verbose_name=_("recipient user"),
                             null=True, blank=True, on_delete=models.CASCADE,
                             related_name="rule_notifications")
    recipients = models.JSONField(_("recipients"), default=list, blank=True)
    # Where an inline webhook action delivers: {"url": …, "action": index in rule.actions}.
    target = models.JSONField(_("target"), default=dict, blank=True)
    title = models.CharField(_("title"), max_length=500, blank=True)
    body = models.TextField(_("body"), blank=True)
    status = models.CharField(_("status"), max_length=16, choices=DeliveryStatus.choices,
                              default=DeliveryStatus.PENDING)
    attempts = models.PositiveSmallIntegerField(_("attempts"), default=0)
    last_error = models.TextField(_("last error"), blank=True)
    read = models.BooleanField(_("read"), default=False)
    created = models.DateTimeField(_("created"), auto_now_add=True, db_index=True)
    sent_at = models.DateTimeField(_("sent"), null=True, blank=True)

    class Meta:
        verbose_name = _("notification")
        verbose_name_plural = _("notifications")
        ordering = ("-created", "-id")

    def __str__(self) -> str:
        return self.title or str(self.pk)


class Sink(DepartmentOwned):
    """A forwarding destination with its filter, payload template, retries and health."""

    name = models.CharField(_("name"), max_length=100, unique=True,
                            validators=[not_a_number])
    sink_type = models.CharField(_("type"), max_length=16, choices=SinkType.choices)
    enabled = models.BooleanField(_("enabled"), default=True)
    config = models.JSONField(_("settings"), default=dict, blank=True)
    # Fernet token (edge.crypto) of a JSON object of credentials (password, secret key, …).
    credentials_encrypted = models.TextField(_("credentials (encrypted)"), blank=True,
                                             editable=False)
    filter = models.TextField(_("filter"), blank=True, help_text=_(
        "An expression; only messages it is true for are forwarded (empty: all)."))
    payload_template = models.JSONField(_("payload template"), null=True, blank=True,
                                        help_text=_(
        "JSON or text with {{ }} placeholders; empty forwards the message as it is."))
    max_retries = models.PositiveSmallIntegerField(_("retries"), default=3)
    backoff = models.FloatField(_("first retry after (s)"), default=2.0)
    health = models.CharField(_("health"), max_length=16, choices=SinkHealth.choices,
                              default=SinkHealth.UNKNOWN, editable=False)
    last_error = models.TextField(_("last error"), blank=True, editable=False)
    last_success = models.DateTimeField(_("last success"), null=True, blank=True,
                                        editable=False)
    failures = models.PositiveIntegerField(_("failures in a row"), default=0, editable=False)
    delivered = models.PositiveBigIntegerField(_("delivered"), default=0, editable=False)
    created = models.DateTimeField(_("created"), auto_now_add=True)
    updated = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("sink")
        verbose_name_plural = _("sinks")
        ordering = ("name",)

    def __str__(self) -> str:
        return self.name


class DeadLetter(models.Model):
    """A message a sink could not deliver after all its retries."""

    sink = models.ForeignKey(Sink, verbose_name=_("sink"), on_delete=models.CASCADE,
                             related_name="dead_letters")
    rule = models.ForeignKey(Rule, verbose_name=_("rule"), null=True, blank=True,
                             on_delete=models.SET_NULL, related_name="+")
    message = models.JSONField(_("message"), default=dict)
    payload = models.TextField(_("payload"), blank=True)
    error = models.TextField(_("error"))
    attempts = models.PositiveSmallIntegerField(_("attempts"), default=0)
    redelivered = models.BooleanField(_("redelivered"), default=False)
    created = models.DateTimeField(_("created"), auto_now_add=True, db_index=True)

    class Meta:
        verbose_name = _("dead letter")
        verbose_name_plural = _("dead letters")
        ordering = ("-created", "-id")

    def __str__(self) -> str:
        return f"{self.sink_id} {self.created:%Y-%m-%d %H:%M:%S}"
