from django.db import models
from django.utils.translation import gettext_lazy as _


class Direction(models.TextChoices):
    UP = "up", _("Uplink")
    DOWN = "down", _("Downlink")


class MessageResult(models.TextChoices):
    ACCEPTED = "accepted", _("Accepted")
    REJECTED = "rejected", _("Rejected")


class RollupInterval(models.TextChoices):
    ONE_MINUTE = "1m", _("1 minute")
    FIVE_MINUTES = "5m", _("5 minutes")
    FIFTEEN_MINUTES = "15m", _("15 minutes")
    ONE_HOUR = "1h", _("1 hour")
    ONE_DAY = "1d", _("1 day")
