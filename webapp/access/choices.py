from django.db import models
from django.utils.translation import gettext_lazy as _


class AclAction(models.TextChoices):
    PUBLISH = "pub", _("Publish")
    SUBSCRIBE = "sub", _("Subscribe")
    ALL = "all", _("Publish and subscribe")


class AclDecision(models.TextChoices):
    ALLOW = "allow", _("Allow")
    DENY = "deny", _("Deny")
