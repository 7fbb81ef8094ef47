"""How devices and applications reach the broker beyond their own topics (README "Device
authentication", docs/bus.md): ACL rules, dynamic registration of a product, the envelope
keys of a device. The edge reads them from the registry (`webapp.access.registry`)."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import models
from django.utils.translation import gettext_lazy as _

from edge.codecs.thinglinks import TOPIC_PREFIX
from edge.mqtt.topics import overlaps, valid_filter
from webapp.access.choices import AclAction, AclDecision
from webapp.devices.models import Device
from webapp.products.models import Product

# A device's own topics, in a rule's terms (redundant in a rule, but harmless).
OWN_NAMESPACE = TOPIC_PREFIX + "${device}/"


def validate_topic_filter(value: str) -> None:
    """A valid MQTT filter that reaches no other device's `/v1/devices/{id}/…` topics: a
    device always reaches its own namespace and a gateway its sub-devices'; no rule may open
    another device's (`#`, `+/#` or `/v1/devices/+/…` would)."""
    bound = value.replace("${device}", "d").replace("${product}", "p")
    if not valid_filter(bound) or "\x00" in value:
        raise ValidationError(_("{value} is not a valid MQTT topic filter").format(value=value),
                              code="invalid_filter")
    if not value.startswith(OWN_NAMESPACE) and overlaps(bound, TOPIC_PREFIX + "#"):
        raise ValidationError(_(
            "{value} would reach other devices' topics ({prefix}…): a device always reaches "
            "its own and a gateway its sub-devices', but no rule may open another device's. "
            "Use topics outside {prefix}.").format(value=value, prefix=TOPIC_PREFIX),
            code="device_namespace")


class AclRule(models.Model):
    """Allows or denies topics outside a device's own `/v1/devices/{id}/…` namespace, for
    every device of a product or (with `device`) for one device of it."""

    product = models.ForeignKey(Product, verbose_name=_("product"), on_delete=models.CASCADE,
                                related_name="acl_rules")
    device = models.ForeignKey(Device, verbose_name=_("device"), on_delete=models.CASCADE,
                               null=True, blank=True, related_name="acl_rules",
                               help_text=_("Empty: the rule applies to every device of the "
                                           "product."))
    action = models.CharField(_("action"), max_length=3, choices=AclAction.choices,
                              default=AclAction.ALL)
    topic = models.CharField(_("topic filter"), max_length=255,
                             validators=[validate_topic_filter],
                             help_text=_("MQTT topic filter; ${device} and ${product} stand "
                                         "for the client's identifiers."))
    decision = models.CharField(_("decision"), max_length=5, choices=AclDecision.choices)
    priority = models.IntegerField(_("priority"), default=0,
                                   help_text=_("Higher priorities are tried first."))
    enabled = models.BooleanField(_("enabled"), default=True)
    description = models.CharField(_("description"), max_length=255, blank=True)
    created = models.DateTimeField(_("created"), auto_now_add=True)
    updated = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("ACL rule")
        verbose_name_plural = _("ACL rules")
        ordering = ("product", "device", "-priority", "id")
        permissions = [
            ("mqtt_application", _("Can connect MQTT application clients with an API key")),
        ]

    def __str__(self) -> str:
        return f"{self.decision} {self.action} {self.topic}"

    def as_registry(self) -> dict[str, object]:
        return {"action": self.action, "topic": self.topic, "decision": self.decision,
                "priority": self.priority}


class ProductRegistration(models.Model):
    """Dynamic registration: a device that knows this secret creates itself in the product."""

    product = models.OneToOneField(Product, verbose_name=_("product"), on_delete=models.CASCADE,
                                   related_name="registration")
    enabled = models.BooleanField(_("enabled"), default=True)
    secret_encrypted = models.CharField(_("secret (encrypted)"), max_length=255, editable=False)
    created = models.DateTimeField(_("created"), auto_now_add=True)
    updated = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("product registration")
        verbose_name_plural = _("product registrations")
        ordering = ("product",)

    def __str__(self) -> str:
        return str(self.product)


class SelfRegistration(models.Model):
    """A device that created itself by dynamic registration. Only such a device may register
    again, while it never connected and within `REGISTRATION_RETRY_WINDOW` of this
    registration (its answer may have been lost); a device an administrator provisioned
    never gets its secret from registration."""

    device = models.OneToOneField(Device, verbose_name=_("device"), on_delete=models.CASCADE,
                                  primary_key=True, related_name="self_registration")
    registered = models.DateTimeField(_("registered"))

    class Meta:
        verbose_name = _("self-registration")
        verbose_name_plural = _("self-registrations")

    def __str__(self) -> str:
        return str(self.device)


class DeviceKeys(models.Model):
    """The ThingLinks envelope keys of a device: `dataSign` and SM4/AES bodies."""

    device = models.OneToOneField(Device, verbose_name=_("device"), on_delete=models.CASCADE,
                                  related_name="envelope_keys")
    sign_key_encrypted = models.CharField(_("sign key (encrypted)"), max_length=255,
                                          blank=True, editable=False)
    encrypt_key_encrypted = models.CharField(_("encryption key (encrypted)"), max_length=255,
                                             blank=True, editable=False)
    encrypt_vector_encrypted = models.CharField(_("encryption IV (encrypted)"), max_length=255,
                                                blank=True, editable=False)
    created = models.DateTimeField(_("created"), auto_now_add=True)
    updated = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("device envelope keys")
        verbose_name_plural = _("device envelope keys")
        ordering = ("device",)

    def __str__(self) -> str:
        return str(self.device)
