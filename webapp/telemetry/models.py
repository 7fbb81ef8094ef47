"""The device message log. Time-series values live in per-(product, service) tables managed by
`webapp.telemetry.backends`, not in Django models."""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _

from webapp.telemetry.choices import Direction, MessageResult


class DeviceMessage(models.Model):
    """One raw device message (up or down) and what the platform made of it."""

    device_identifier = models.CharField(_("device"), max_length=64, db_index=False)
    ts = models.DateTimeField(_("time"))
    direction = models.CharField(_("direction"), max_length=4, choices=Direction.choices)
    topic = models.CharField(_("topic"), max_length=255)
    payload = models.TextField(_("payload"), blank=True)
    result = models.CharField(_("result"), max_length=10, choices=MessageResult.choices)
    reason = models.TextField(_("reason"), blank=True)

    class Meta:
        verbose_name = _("device message")
        verbose_name_plural = _("device messages")
        ordering = ("-ts", "-id")
        indexes = [models.Index(fields=("device_identifier", "-ts"), name="devmsg_device_ts")]

    def __str__(self) -> str:
        return f"{self.device_identifier} {self.direction} {self.topic}"
