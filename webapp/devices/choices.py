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
