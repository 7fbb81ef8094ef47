"""Products and their thing model: services with typed properties, commands and events."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.utils.translation import gettext_lazy as _

from webapp.products.choices import (
    AccessMode,
    DataFormat,
    Datatype,
    ParameterDirection,
    ProductStatus,
    ProductType,
    Protocol,
)

IDENTIFIER_RE = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
CODE_RE = r"^[A-Za-z][A-Za-z0-9_]{0,49}$"

identifier_validator = RegexValidator(
    IDENTIFIER_RE, _("Use 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit."))
code_validator = RegexValidator(
    CODE_RE, _("Use 1-50 letters, digits or '_', starting with a letter."))

# Identifiers the console's own pages take in its URLs (webapp/console/urls.py): a device
# `new` would be shadowed by /devices/new/, a product `new` by /products/new/. Refused,
# whatever their case, when a device or product is created (API, admin, imports, dynamic
# registration, gateway topology, console); existing ones keep working elsewhere.
RESERVED_DEVICE_IDENTIFIERS = frozenset({"new", "import", "groups"})
RESERVED_PRODUCT_IDENTIFIERS = frozenset({"new"})


def reserved_identifier_problem(identifier: object, reserved: frozenset[str]) -> str:
    """Why `identifier` may not name a new device or product ("" when it may)."""
    if isinstance(identifier, str) and identifier.lower() in reserved:
        return str(_("The identifier {identifier!r} is reserved: the console's pages use "
                     "it ({reserved}). Choose another one.").format(
                         identifier=identifier, reserved=", ".join(sorted(reserved))))
    return ""


class Product(models.Model):
    identifier = models.CharField(_("identifier"), max_length=64, unique=True,
                                  validators=[identifier_validator])
    name = models.CharField(_("name"), max_length=100)
    product_type = models.CharField(_("type"), max_length=16, choices=ProductType.choices,
                                    default=ProductType.COMMON)
    protocol = models.CharField(_("protocol"), max_length=16, choices=Protocol.choices,
                                default=Protocol.MQTT)
    data_format = models.CharField(_("data format"), max_length=16, choices=DataFormat.choices,
                                   default=DataFormat.JSON)
    manufacturer = models.CharField(_("manufacturer"), max_length=100, blank=True)
    model = models.CharField(_("model"), max_length=100, blank=True)
    device_type = models.CharField(_("device type"), max_length=50, blank=True,
                                   default="default")
    description = models.TextField(_("description"), blank=True)
    status = models.CharField(_("status"), max_length=16, choices=ProductStatus.choices,
                              default=ProductStatus.ENABLED)
    department = models.ForeignKey("system.Department", verbose_name=_("department"),
                                   null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="products")
    # A raw TCP or UDP product's binary frames (`edge.frames`, docs/devices.md "Codecs"): the
    # codec document, the sample frames that must keep decoding to what they expect, and a
    # version bumped whenever either changes (the edge gets the document with the product).
    codec = models.JSONField(_("codec"), null=True, blank=True, help_text=_(
        "The binary frame codec of a tcp or udp product; empty: the default JSON codec."))
    codec_samples = models.JSONField(_("codec sample frames"), default=list, blank=True,
                                     help_text=_(
        'Frames that must decode to what they expect: [{"name", "hex", "expect": {field: '
        'value}, "secret"?, "device"?}].'))
    codec_version = models.PositiveIntegerField(_("codec version"), default=0, editable=False)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, verbose_name=_("created by"),
                                   null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created = models.DateTimeField(_("created"), auto_now_add=True)
    updated = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("product")
        verbose_name_plural = _("products")
        ordering = ("identifier",)

    def clean(self) -> None:
        super().clean()
        problem = reserved_identifier_problem(self.identifier, RESERVED_PRODUCT_IDENTIFIERS) \
            if self._state.adding else ""
        if problem:
            raise ValidationError({"identifier": problem})

    def __str__(self) -> str:
        return f"{self.name} ({self.identifier})"


class Service(models.Model):
    product = models.ForeignKey(Product, verbose_name=_("product"), on_delete=models.CASCADE,
                                related_name="services")
    code = models.CharField(_("code"), max_length=50, validators=[code_validator])
    name = models.CharField(_("name"), max_length=100, blank=True)
    description = models.TextField(_("description"), blank=True)
    order = models.PositiveIntegerField(_("order"), default=0)

    class Meta:
        verbose_name = _("service")
        verbose_name_plural = _("services")
        ordering = ("order", "id")
        constraints = [models.UniqueConstraint(fields=("product", "code"),
                                               name="service_code_unique_per_product")]

    def __str__(self) -> str:
        return self.code


class TypedField(models.Model):
    """The typing shared by properties, command parameters and event parameters."""

    code = models.CharField(_("code"), max_length=50, validators=[code_validator])
    name = models.CharField(_("name"), max_length=100, blank=True)
    datatype = models.CharField(_("datatype"), max_length=16, choices=Datatype.choices)
    unit = models.CharField(_("unit"), max_length=20, blank=True)
    min = models.FloatField(_("minimum"), null=True, blank=True)
    max = models.FloatField(_("maximum"), null=True, blank=True)
    step = models.FloatField(_("step"), null=True, blank=True)
    max_length = models.PositiveIntegerField(_("max length"), null=True, blank=True)
    enum_values = models.JSONField(_("enum values"), default=list, blank=True)
    required = models.BooleanField(_("required"), default=False)
    description = models.TextField(_("description"), blank=True)
    order = models.PositiveIntegerField(_("order"), default=0)

    class Meta:
        abstract = True
        ordering = ("order", "id")

    def __str__(self) -> str:
        return self.code

    def spec(self) -> dict:
        """The JSON form used by `edge.thingmodel` (docs/bus.md)."""
        return {
            "datatype": self.datatype, "min": self.min, "max": self.max, "step": self.step,
            "max_length": self.max_length, "enum": self.enum_values or None,
            "required": self.required, "unit": self.unit,
        }


class Property(TypedField):
    service = models.ForeignKey(Service, verbose_name=_("service"), on_delete=models.CASCADE,
                                related_name="properties")
    access = models.CharField(_("access mode"), max_length=3, choices=AccessMode.choices,
                              default=AccessMode.RE)

    class Meta(TypedField.Meta):
        verbose_name = _("property")
        verbose_name_plural = _("properties")
        constraints = [models.UniqueConstraint(fields=("service", "code"),
                                               name="property_code_unique_per_service")]

    def spec(self) -> dict:
        return {**super().spec(), "access": self.access}


class Command(models.Model):
    service = models.ForeignKey(Service, verbose_name=_("service"), on_delete=models.CASCADE,
                                related_name="commands")
    code = models.CharField(_("code"), max_length=50, validators=[code_validator])
    name = models.CharField(_("name"), max_length=100, blank=True)
    description = models.TextField(_("description"), blank=True)

    class Meta:
        verbose_name = _("command")
        verbose_name_plural = _("commands")
        ordering = ("id",)
        constraints = [models.UniqueConstraint(fields=("service", "code"),
                                               name="command_code_unique_per_service")]

    def __str__(self) -> str:
        return self.code


class CommandParameter(TypedField):
    command = models.ForeignKey(Command, verbose_name=_("command"), on_delete=models.CASCADE,
                                related_name="parameters")
    direction = models.CharField(_("direction"), max_length=10,
                                 choices=ParameterDirection.choices,
                                 default=ParameterDirection.REQUEST)

    class Meta(TypedField.Meta):
        verbose_name = _("command parameter")
        verbose_name_plural = _("command parameters")
        constraints = [models.UniqueConstraint(fields=("command", "direction", "code"),
                                               name="command_parameter_unique")]


class Event(models.Model):
    service = models.ForeignKey(Service, verbose_name=_("service"), on_delete=models.CASCADE,
                                related_name="events")
    code = models.CharField(_("code"), max_length=50, validators=[code_validator])
    name = models.CharField(_("name"), max_length=100, blank=True)
    description = models.TextField(_("description"), blank=True)

    class Meta:
        verbose_name = _("event")
        verbose_name_plural = _("events")
        ordering = ("id",)
        constraints = [models.UniqueConstraint(fields=("service", "code"),
                                               name="event_code_unique_per_service")]

    def __str__(self) -> str:
        return self.code


class EventParameter(TypedField):
    event = models.ForeignKey(Event, verbose_name=_("event"), on_delete=models.CASCADE,
                              related_name="parameters")

    class Meta(TypedField.Meta):
        verbose_name = _("event parameter")
        verbose_name_plural = _("event parameters")
        constraints = [models.UniqueConstraint(fields=("event", "code"),
                                               name="event_parameter_unique")]


class ProductTemplate(models.Model):
    """A ready-made thing model a product can start from ("start from a template")."""

    identifier = models.CharField(_("identifier"), max_length=64, unique=True,
                                  validators=[identifier_validator])
    name = models.CharField(_("name"), max_length=100)
    description = models.TextField(_("description"), blank=True)
    product_type = models.CharField(_("type"), max_length=16, choices=ProductType.choices,
                                    default=ProductType.COMMON)
    protocol = models.CharField(_("protocol"), max_length=16, choices=Protocol.choices,
                                default=Protocol.MQTT)
    data_format = models.CharField(_("data format"), max_length=16, choices=DataFormat.choices,
                                   default=DataFormat.JSON)
    services = models.JSONField(_("thing model"), default=list, blank=True, help_text=_(
        "The `services` list in the form `POST /api/v1/products/` accepts."))
    codec = models.JSONField(_("codec"), null=True, blank=True, help_text=_(
        "The binary frame codec products made from it get (tcp and udp only)."))
    codec_samples = models.JSONField(_("codec sample frames"), default=list, blank=True)
    status = models.CharField(_("status"), max_length=16, choices=ProductStatus.choices,
                              default=ProductStatus.ENABLED)
    built_in = models.BooleanField(_("built in"), default=False, editable=False)
    # Every user who may view templates sees the global ones (no department); a
    # department's are seen and changed within the data scope, like its products.
    department = models.ForeignKey(
        "system.Department", verbose_name=_("department"), null=True, blank=True,
        on_delete=models.CASCADE, related_name="product_templates", help_text=_(
            "The department that owns it; without one it is shared by every department and "
            "only superusers change or delete it."))
    created = models.DateTimeField(_("created"), auto_now_add=True)

    class Meta:
        verbose_name = _("product template")
        verbose_name_plural = _("product templates")
        ordering = ("name",)

    def __str__(self) -> str:
        return self.name
