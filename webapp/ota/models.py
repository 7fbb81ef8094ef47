"""Firmware and software packages, upgrade campaigns and the per-device upgrade tasks."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _

from webapp.ota.choices import CampaignStatus, PackageType, TargetType, TaskStatus


class OtaPackage(models.Model):
    product = models.ForeignKey("products.Product", verbose_name=_("product"),
                                on_delete=models.PROTECT, related_name="ota_packages")
    name = models.CharField(_("name"), max_length=100)
    package_type = models.CharField(_("type"), max_length=16, choices=PackageType.choices,
                                    default=PackageType.FIRMWARE)
    version = models.CharField(_("version"), max_length=50)
    file = models.FileField(_("file"), upload_to="ota/%Y/%m/")
    size = models.PositiveBigIntegerField(_("size (bytes)"), default=0, editable=False)
    checksum = models.CharField(_("SHA-256"), max_length=64, editable=False)
    md5 = models.CharField(_("MD5"), max_length=32, editable=False, blank=True)
    description = models.TextField(_("description"), blank=True)
    custom_info = models.JSONField(_("custom information"), default=dict, blank=True,
                                   help_text=_("Passed to the device with the upgrade."))
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, verbose_name=_("created by"),
                                   null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created = models.DateTimeField(_("created"), auto_now_add=True)

    class Meta:
        verbose_name = _("OTA package")
        verbose_name_plural = _("OTA packages")
        ordering = ("-created", "-id")
        constraints = [models.UniqueConstraint(fields=("product", "package_type", "version"),
                                               name="ota_package_version_unique")]

    def __str__(self) -> str:
        return f"{self.name} {self.version}"


class OtaCampaign(models.Model):
    """Upgrading a set of devices to one package."""

    name = models.CharField(_("name"), max_length=100)
    package = models.ForeignKey(OtaPackage, verbose_name=_("package"), on_delete=models.PROTECT,
                                related_name="campaigns")
    target_type = models.CharField(_("target"), max_length=16, choices=TargetType.choices,
                                   default=TargetType.PRODUCT)
    group = models.ForeignKey("devices.DeviceGroup", verbose_name=_("group"), null=True,
                              blank=True, on_delete=models.SET_NULL, related_name="+")
    status = models.CharField(_("status"), max_length=16, choices=CampaignStatus.choices,
                              default=CampaignStatus.DRAFT)
    description = models.TextField(_("description"), blank=True)
    task_timeout = models.PositiveIntegerField(_("device timeout (s)"), default=3600, help_text=_(
        "A device that started the upgrade and reports nothing for this long fails."))
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, verbose_name=_("created by"),
                                   null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created = models.DateTimeField(_("created"), auto_now_add=True)
    started = models.DateTimeField(_("started"), null=True, blank=True)
    finished = models.DateTimeField(_("finished"), null=True, blank=True)

    class Meta:
        verbose_name = _("OTA campaign")
        verbose_name_plural = _("OTA campaigns")
        ordering = ("-created", "-id")

    def __str__(self) -> str:
        return self.name


class OtaTask(models.Model):
    """One device's upgrade within a campaign; its id is the `otaTaskId` on the wire."""

    campaign = models.ForeignKey(OtaCampaign, verbose_name=_("campaign"),
                                 on_delete=models.CASCADE, related_name="tasks")
    device = models.ForeignKey("devices.Device", verbose_name=_("device"),
                               on_delete=models.CASCADE, related_name="ota_tasks")
    status = models.CharField(_("status"), max_length=16, choices=TaskStatus.choices,
                              default=TaskStatus.PENDING)
    progress = models.PositiveSmallIntegerField(_("progress (%)"), default=0)
    from_version = models.CharField(_("version before"), max_length=50, blank=True)
    error_code = models.CharField(_("error code"), max_length=50, blank=True)
    error_message = models.TextField(_("error"), blank=True)
    last_report = models.JSONField(_("last report"), null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(_("attempts"), default=0)
    sent = models.DateTimeField(_("sent"), null=True, blank=True)
    finished = models.DateTimeField(_("finished"), null=True, blank=True)
    updated = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("OTA task")
        verbose_name_plural = _("OTA tasks")
        ordering = ("campaign", "device")
        constraints = [models.UniqueConstraint(fields=("campaign", "device"),
                                               name="ota_task_unique_device")]
        indexes = [models.Index(fields=("status", "updated"), name="ota_task_status_updated")]

    def __str__(self) -> str:
        return f"{self.campaign_id}/{self.device_id} {self.status}"
