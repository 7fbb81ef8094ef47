from django.db import models
from django.utils.translation import gettext_lazy as _


class DeviceStatus(models.TextChoices):
    UNACTIVATED = "unactivated", _("Unactivated")
    ACTIVATED = "activated", _("Activated")
    LOCKED = "locked", _("Locked")


class ConnectStatus(models.TextChoices):
    UNCONNECTED = "unconnected", _("Never connected")
    ONLINE = "online", _("Online")
    OFFLINE = "offline", _("Offline")


class NodeType(models.TextChoices):
    DIRECT = "direct", _("Directly connected")
    GATEWAY = "gateway", _("Gateway")
    SUB = "sub", _("Sub-device")


class CommandStatus(models.TextChoices):
    PENDING = "pending", _("Pending (waiting for the device)")
    SENT = "sent", _("Sent")
    SUCCEEDED = "succeeded", _("Succeeded")
    FAILED = "failed", _("Failed")
    TIMEOUT = "timeout", _("Timed out")
    CANCELLED = "cancelled", _("Cancelled")


class CommandSource(models.TextChoices):
    API = "api", _("API")
    ADMIN = "admin", _("Admin")
    RULE = "rule", _("Rule")
    SYSTEM = "system", _("Platform")
