"""Devices, their credentials, groups, shadow and commands."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils.translation import gettext_lazy as _

from webapp.devices.choices import (
    CommandSource,
    CommandStatus,
    ConnectStatus,
    DeviceStatus,
    NodeType,
)
from webapp.products.models import (
    RESERVED_DEVICE_IDENTIFIERS,
    identifier_validator,
    reserved_identifier_problem,
)


class DeviceGroup(models.Model):
    """A named set of devices (for OTA campaigns, bulk operations and the console)."""

    name = models.CharField(_("name"), max_length=100, unique=True)
    description = models.TextField(_("description"), blank=True)
    department = models.ForeignKey("system.Department", verbose_name=_("department"),
                                   null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="device_groups")
    created = models.DateTimeField(_("created"), auto_now_add=True)

    class Meta:
        verbose_name = _("device group")
        verbose_name_plural = _("device groups")
        ordering = ("name",)

    def __str__(self) -> str:
        return self.name


class Device(models.Model):
    identifier = models.CharField(_("identifier"), max_length=64, unique=True,
                                  validators=[identifier_validator])
    name = models.CharField(_("name"), max_length=100, blank=True)
    product = models.ForeignKey("products.Product", verbose_name=_("product"),
                                on_delete=models.PROTECT, related_name="devices")
    # Fernet token of the secret (edge.crypto); the plain secret is shown once, never stored.
    secret_encrypted = models.TextField(_("secret (encrypted)"), editable=False)
    status = models.CharField(_("status"), max_length=16, choices=DeviceStatus.choices,
                              default=DeviceStatus.UNACTIVATED)
    connect_status = models.CharField(_("connection"), max_length=16,
                                      choices=ConnectStatus.choices,
                                      default=ConnectStatus.UNCONNECTED)
    last_seen = models.DateTimeField(_("last seen"), null=True, blank=True)
    last_status_ts = models.BigIntegerField(_("last status event (ms)"), default=0,
                                            editable=False)
    node_type = models.CharField(_("node type"), max_length=16, choices=NodeType.choices,
                                 default=NodeType.DIRECT)
    gateway = models.ForeignKey("self", verbose_name=_("gateway"), null=True, blank=True,
                                on_delete=models.SET_NULL, related_name="sub_devices")
    fw_version = models.CharField(_("firmware version"), max_length=50, blank=True)
    sw_version = models.CharField(_("software version"), max_length=50, blank=True)
    tags = models.JSONField(_("tags"), default=dict, blank=True)
    groups = models.ManyToManyField(DeviceGroup, verbose_name=_("groups"), blank=True,
                                    related_name="devices")
    department = models.ForeignKey("system.Department", verbose_name=_("department"),
                                   null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="devices")
    latitude = models.DecimalField(_("latitude"), max_digits=10, decimal_places=7, null=True,
                                   blank=True)
    longitude = models.DecimalField(_("longitude"), max_digits=10, decimal_places=7, null=True,
                                    blank=True)
    address = models.CharField(_("address"), max_length=200, blank=True)
    description = models.TextField(_("description"), blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, verbose_name=_("created by"),
                                   null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created = models.DateTimeField(_("created"), auto_now_add=True)
    updated = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("device")
        verbose_name_plural = _("devices")
        ordering = ("identifier",)
        indexes = [models.Index(fields=("product", "connect_status"))]
        permissions = [("debug_device", _("Can publish and simulate device messages"))]

    def clean(self) -> None:
        super().clean()
        problem = reserved_identifier_problem(self.identifier, RESERVED_DEVICE_IDENTIFIERS) \
            if self._state.adding else ""
        if problem:
            raise ValidationError({"identifier": problem})

    def __str__(self) -> str:
        return self.identifier


class DeviceConnection(models.Model):
    """One connect or disconnect of a device, as the edge reported it (its ``status`` event):
    the connection history shown per device, kept `CONNECTION_HISTORY_DAYS`."""

    device = models.ForeignKey(Device, verbose_name=_("device"), on_delete=models.CASCADE,
                               related_name="connections")
    event = models.CharField(_("event"), max_length=16, choices=[
        (ConnectStatus.ONLINE.value, ConnectStatus.ONLINE.label),
        (ConnectStatus.OFFLINE.value, ConnectStatus.OFFLINE.label)])
    at = models.DateTimeField(_("at"))
    reason = models.CharField(_("reason"), max_length=32, blank=True)
    address = models.CharField(_("address"), max_length=64, blank=True)
    node = models.CharField(_("node"), max_length=64, blank=True)
    transport = models.CharField(_("transport"), max_length=8, blank=True)
    # The stream entry and position the event came in (a redelivered entry adds no second
    # row); empty for the events the platform infers itself (a node that stopped).
    source = models.CharField(_("source"), max_length=64, unique=True, null=True,
                              blank=True, editable=False)

    class Meta:
        verbose_name = _("device connection")
        verbose_name_plural = _("device connections")
        ordering = ("-at", "-id")
        indexes = [models.Index(fields=("device", "-at"), name="devconn_device_at"),
                   models.Index(fields=("at",), name="devconn_at")]

    def __str__(self) -> str:
        return f"{self.device_id} {self.event} {self.at:%Y-%m-%d %H:%M:%S}"


class DeviceShadow(models.Model):
    """Desired and reported state of a device, versioned for optimistic concurrency."""

    device = models.OneToOneField(Device, verbose_name=_("device"), on_delete=models.CASCADE,
                                  related_name="shadow", primary_key=True)
    desired = models.JSONField(_("desired"), default=dict, blank=True)
    reported = models.JSONField(_("reported"), default=dict, blank=True)
    version = models.PositiveIntegerField(_("version"), default=0)
    updated = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("device shadow")
        verbose_name_plural = _("device shadows")

    def __str__(self) -> str:
        return f"shadow of {self.device_id}"


class DeviceCommand(models.Model):
    """A command sent to a device, its lifecycle and the device's response.

    Its primary key is the envelope ``head.mid`` of the downlink message, which the device
    echoes in its ``commandResponse``: that is how the reply finds its command.
    """

    device = models.ForeignKey(Device, verbose_name=_("device"), on_delete=models.CASCADE,
                               related_name="commands")
    service = models.CharField(_("service"), max_length=50)
    command = models.CharField(_("command"), max_length=50)
    params = models.JSONField(_("parameters"), default=dict, blank=True)
    status = models.CharField(_("status"), max_length=16, choices=CommandStatus.choices,
                              default=CommandStatus.PENDING)
    timeout = models.PositiveIntegerField(_("timeout (s)"), default=30, help_text=_(
        "How long to wait for the device's response once the command is sent."))
    expires = models.DateTimeField(_("expires"), help_text=_(
        "A command still waiting for an offline device at this time times out."))
    deadline = models.DateTimeField(_("response deadline"), null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(_("delivery attempts"), default=0,
                                                editable=False)
    response = models.JSONField(_("response"), null=True, blank=True)
    err_code = models.IntegerField(_("error code"), null=True, blank=True)
    error = models.TextField(_("error"), blank=True)
    source = models.CharField(_("source"), max_length=16, choices=CommandSource.choices,
                              default=CommandSource.API)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, verbose_name=_("created by"),
                                   null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created = models.DateTimeField(_("created"), auto_now_add=True)
    sent = models.DateTimeField(_("sent"), null=True, blank=True)
    completed = models.DateTimeField(_("completed"), null=True, blank=True)

    class Meta:
        verbose_name = _("device command")
        verbose_name_plural = _("device commands")
        ordering = ("-created", "-id")
        indexes = [
            models.Index(fields=("device", "-created"), name="devcmd_device_created"),
            models.Index(fields=("status", "expires"), name="devcmd_status_expires"),
            models.Index(fields=("status", "deadline"), name="devcmd_status_deadline"),
        ]

    def __str__(self) -> str:
        return f"{self.service}.{self.command} → {self.device_id} ({self.status})"

    @property
    def is_open(self) -> bool:
        return self.status in (CommandStatus.PENDING, CommandStatus.SENT)
