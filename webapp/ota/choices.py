from django.db import models
from django.utils.translation import gettext_lazy as _


class PackageType(models.TextChoices):
    SOFTWARE = "software", _("Software")
    FIRMWARE = "firmware", _("Firmware")


# ThingLinks numbers package types on the wire: 0 software, 1 firmware.
WIRE_PACKAGE_TYPE = {PackageType.SOFTWARE: 0, PackageType.FIRMWARE: 1}


class TargetType(models.TextChoices):
    PRODUCT = "product", _("Every device of the product")
    GROUP = "group", _("A device group")
    DEVICES = "devices", _("A list of devices")


class CampaignStatus(models.TextChoices):
    DRAFT = "draft", _("Draft")
    RUNNING = "running", _("Running")
    FINISHED = "finished", _("Finished")
    CANCELLED = "cancelled", _("Cancelled")


class TaskStatus(models.TextChoices):
    PENDING = "pending", _("Pending")
    IN_PROGRESS = "in_progress", _("In progress")
    SUCCEEDED = "succeeded", _("Succeeded")
    FAILED = "failed", _("Failed")
    CANCELLED = "cancelled", _("Cancelled")


# ThingLinks `upgradeStatus`: 0 pending, 1 in progress, 2 succeeded, 3 failed.
UPGRADE_STATUS = {0: TaskStatus.IN_PROGRESS, 1: TaskStatus.IN_PROGRESS,
                  2: TaskStatus.SUCCEEDED, 3: TaskStatus.FAILED}
