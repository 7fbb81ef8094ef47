"""The device message log and the retention policies. Time-series values live in
per-(product, service) tables managed by `webapp.telemetry.backends`, not in Django models."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import models
from django.utils.translation import gettext_lazy as _

from webapp.telemetry.choices import Direction, MessageResult, RollupInterval

_INTERVAL_MS = {"m": 60_000, "h": 3_600_000, "d": 86_400_000}


def interval_ms(label: str) -> int:
    """`5m` -> 300000 (the labels of `RollupInterval`)."""
    return int(label[:-1]) * _INTERVAL_MS[label[-1]]


class DeviceMessage(models.Model):
    """One raw device message (up or down) and what the platform made of it."""

    device_identifier = models.CharField(_("device"), max_length=64, db_index=False)
    ts = models.DateTimeField(_("time"))
    direction = models.CharField(_("direction"), max_length=4, choices=Direction.choices)
    topic = models.CharField(_("topic"), max_length=255)
    payload = models.TextField(_("payload"), blank=True)
    result = models.CharField(_("result"), max_length=10, choices=MessageResult.choices)
    reason = models.TextField(_("reason"), blank=True)
    # Where ingest read it (stream entry id / position): a replayed entry adds no second row.
    source = models.CharField(_("source"), max_length=48, null=True, blank=True, unique=True,
                              editable=False)

    class Meta:
        verbose_name = _("device message")
        verbose_name_plural = _("device messages")
        ordering = ("-ts", "-id")
        indexes = [models.Index(fields=("device_identifier", "-ts"), name="devmsg_device_ts")]

    def __str__(self) -> str:
        return f"{self.device_identifier} {self.direction} {self.topic}"


def _validate_rollups(value: object) -> None:
    if not isinstance(value, list) or any(v not in RollupInterval.values for v in value):
        raise ValidationError(_("Rollups must be a list of {choices}.").format(
            choices=", ".join(RollupInterval.values)))


class RetentionPolicy(models.Model):
    """How long a product's data is kept: raw points, and rollups kept longer for long-range
    aggregates. A product without a policy keeps its raw points forever, without rollups."""

    product = models.OneToOneField("products.Product", verbose_name=_("product"),
                                   on_delete=models.CASCADE, related_name="retention_policy")
    raw_days = models.PositiveIntegerField(
        _("raw retention (days)"), null=True, blank=True,
        help_text=_("Raw points older than this are dropped; empty keeps them forever."))
    rollups = models.JSONField(
        _("rollups"), default=list, blank=True, validators=[_validate_rollups],
        help_text=_("Intervals of the min/max/avg/count rollups to keep, e.g. [\"5m\", \"1h\"]."))
    rollup_days = models.PositiveIntegerField(
        _("rollup retention (days)"), null=True, blank=True,
        help_text=_("Rollup buckets older than this are dropped; empty keeps them forever."))
    updated = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("retention policy")
        verbose_name_plural = _("retention policies")
        ordering = ("product__identifier",)

    def __str__(self) -> str:
        return str(self.product)

    @property
    def rollup_intervals(self) -> list[int]:
        return sorted(interval_ms(label) for label in self.rollups or [])
