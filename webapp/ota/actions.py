"""Over-the-air upgrades (docs/devices.md, "OTA"): packages, campaigns, and the
ThingLinks OTA topics.

- Down ``/v1/devices/{id}/topo/otaCommand``: "upgrade to this package" with a signed download
  URL; the device answers (and reports progress) on ``/topo/otaCommandResponse`` with
  ``upgradeStatus`` 0 pending / 1 in progress / 2 succeeded / 3 failed and ``progress`` (%).
- Up ``/topo/otaPull``: the device asks for the latest (or a given) package → ``otaPullResponse``.
- Up ``/topo/otaReport``: the device reports its version → ``otaReportResponse``.
- Down ``/topo/otaRead``: the platform asks for the version → up ``/topo/otaReadResponse``.

A task whose device is offline waits and is sent when the device connects; the beat sweep
(:func:`advance`) resends unacknowledged commands, fails silent devices after the campaign's
``task_timeout`` and closes finished campaigns.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core import signing
from django.db import transaction
from django.db.models import Count, F, Q
from django.utils import timezone
from django.utils.translation import gettext as _

from webapp.core import uploads
from webapp.core.errors import Conflict, DomainError, NotFound
from webapp.core.types import Actor
from webapp.devices import actions as device_actions
from webapp.devices import downlink
from webapp.devices.actions.commands import carrier
from webapp.devices.models import Device, DeviceGroup
from webapp.ota.choices import (
    UPGRADE_STATUS,
    WIRE_PACKAGE_TYPE,
    CampaignStatus,
    PackageType,
    TargetType,
    TaskStatus,
)
from webapp.ota.models import OtaCampaign, OtaPackage, OtaTask
from webapp.products.models import Product
from webapp.system.actors import recorded_user

log = logging.getLogger(__name__)

DOWNLOAD_SALT = "webapp.ota.download"
OPEN_TASKS = (TaskStatus.PENDING, TaskStatus.IN_PROGRESS)
RESEND_AFTER = timedelta(seconds=120)
MAX_ATTEMPTS = 3


def url_ttl() -> int:
    """Seconds a download URL stays valid (`OTA_URL_TTL`, a day like ThingLinks)."""
    return int(getattr(settings, "OTA_URL_TTL", 86_400))


def max_package_bytes() -> int:
    """The largest package file (`OTA_MAX_BYTES`, 512 MiB by default)."""
    return int(getattr(settings, "OTA_MAX_BYTES", 512 * 2**20))


# packages ---------------------------------------------------------------------------------


@transaction.atomic
def create_package(*, acting_user: Actor, product: Product, name: str, version: str,
                   package_type: str, upload: Any, description: str = "",
                   custom_info: dict[str, Any] | None = None,
                   expected_checksum: str = "") -> OtaPackage:
    """Store an uploaded package with its size and checksums (at most `OTA_MAX_BYTES`);
    with ``expected_checksum`` (SHA-256 hex, the uploader's own), a file whose digest differs
    is refused (`checksum_mismatch`)."""
    limit = max_package_bytes()
    uploads.check_size(getattr(upload, "size", None), limit, "OTA_MAX_BYTES")
    if OtaPackage.objects.filter(product=product, package_type=package_type,
                                 version=version).exists():
        raise Conflict(_("{product} already has a {type} package {version}").format(
            product=product.identifier, type=package_type, version=version), code="duplicate")
    sha256, md5, size = hashlib.sha256(), hashlib.md5(usedforsecurity=False), 0
    for chunk in upload.chunks():
        sha256.update(chunk)
        md5.update(chunk)
        size += len(chunk)
        uploads.check_size(size, limit, "OTA_MAX_BYTES")
    if size == 0:
        raise DomainError(_("the package file is empty"), code="empty_file")
    expected = expected_checksum.strip().lower()
    if expected and expected != sha256.hexdigest():
        raise DomainError(_("the file's SHA-256 is {actual}, not {expected}: the upload is "
                            "damaged or not the intended file").format(
            actual=sha256.hexdigest(), expected=expected[:64]), code="checksum_mismatch")
    upload.seek(0)
    return OtaPackage.objects.create(
        product=product, name=name, version=version, package_type=package_type, file=upload,
        size=size, checksum=sha256.hexdigest(), md5=md5.hexdigest(), description=description,
        custom_info=custom_info or {}, created_by=recorded_user(acting_user))


@transaction.atomic
def delete_package(*, package: OtaPackage) -> None:
    if package.campaigns.exists():
        raise Conflict(_("campaigns use this package; delete them first"), code="in_use")
    stored = package.file.name or ""
    storage = package.file.storage
    package.delete()
    if stored:
        transaction.on_commit(lambda: storage.delete(stored))


def download_url(package: OtaPackage, device: str, task: int | None = None) -> str:
    """A URL that serves the package without login for `url_ttl()` seconds."""
    token = signing.dumps({"p": package.pk, "d": device, "t": task}, salt=DOWNLOAD_SALT,
                          compress=True)
    base = str(getattr(settings, "PUBLIC_BASE_URL", "http://127.0.0.1:8000")).rstrip("/")
    return f"{base}/api/v1/ota/download/{token}/"


def resolve_download(token: str) -> OtaPackage:
    """The package a download token grants; raises NotFound / DomainError('expired')."""
    try:
        grant = signing.loads(token, salt=DOWNLOAD_SALT, max_age=url_ttl())
    except signing.SignatureExpired:
        raise DomainError(_("this download link has expired"), code="expired") from None
    except signing.BadSignature:
        raise NotFound(_("no such download"), code="not_found") from None
    package = OtaPackage.objects.filter(pk=grant.get("p")).first()
    if package is None:
        raise NotFound(_("the package no longer exists"), code="not_found")
    return package


# campaigns --------------------------------------------------------------------------------


def resolve_targets(package: OtaPackage, target_type: str, *, group: DeviceGroup | None = None,
                    identifiers: Iterable[str] = (), visible: Any = None) -> list[Device]:
    """The devices a campaign upgrades: always devices of the package's product, and only those
    ``visible`` (the caller's data scope)."""
    pool = (visible if visible is not None else Device.objects.all()).filter(
        product=package.product)
    if target_type == TargetType.PRODUCT:
        return list(pool)
    if target_type == TargetType.GROUP:
        if group is None:
            raise DomainError(_("a group campaign needs a group"), code="invalid_target")
        return list(pool.filter(groups=group))
    wanted = sorted(set(identifiers))
    if not wanted:
        raise DomainError(_("give the devices to upgrade"), code="invalid_target")
    found = {d.identifier: d for d in pool.filter(identifier__in=wanted)}
    missing = [i for i in wanted if i not in found]
    if missing:
        raise DomainError(
            _("not devices of product {product}: {ids}").format(
                product=package.product.identifier, ids=", ".join(missing[:20])),
            code="invalid_target", extra={"devices": missing})
    return [found[i] for i in wanted]


@transaction.atomic
def create_campaign(*, acting_user: Actor, package: OtaPackage, name: str, target_type: str,
                    devices: list[Device], group: DeviceGroup | None = None,
                    description: str = "", task_timeout: int = 3600,
                    start: bool = True) -> OtaCampaign:
    """A campaign with one task per device; started at once unless ``start`` is false."""
    if not devices:
        raise DomainError(_("the campaign has no device to upgrade"), code="invalid_target")
    campaign = OtaCampaign.objects.create(
        name=name, package=package, target_type=target_type, group=group,
        description=description, task_timeout=task_timeout,
        created_by=recorded_user(acting_user))
    version_field = "fw_version" if package.package_type == PackageType.FIRMWARE \
        else "sw_version"
    OtaTask.objects.bulk_create(
        [OtaTask(campaign=campaign, device=d, from_version=getattr(d, version_field))
         for d in devices], batch_size=1000)
    if start:
        start_campaign(campaign=campaign)
    return campaign


@transaction.atomic
def start_campaign(*, campaign: OtaCampaign) -> OtaCampaign:
    if campaign.status != CampaignStatus.DRAFT:
        raise Conflict(_("only a draft campaign can start"), code="not_draft")
    campaign.status = CampaignStatus.RUNNING
    campaign.started = timezone.now()
    campaign.save(update_fields=["status", "started"])
    pk = campaign.pk
    transaction.on_commit(lambda: dispatch(OtaTask.objects.filter(campaign_id=pk)))
    return campaign


@transaction.atomic
def cancel_campaign(*, campaign: OtaCampaign) -> OtaCampaign:
    """Stop a campaign: tasks not started yet are cancelled; running upgrades finish."""
    if campaign.status not in (CampaignStatus.DRAFT, CampaignStatus.RUNNING):
        raise Conflict(_("the campaign is already over"), code="not_running")
    now = timezone.now()
    campaign.tasks.filter(status=TaskStatus.PENDING).update(status=TaskStatus.CANCELLED,
                                                            finished=now, updated=now)
    campaign.status = CampaignStatus.CANCELLED
    campaign.finished = now
    campaign.save(update_fields=["status", "finished"])
    return campaign


def summary(campaign: OtaCampaign) -> dict[str, int]:
    counts = dict(campaign.tasks.values_list("status").annotate(n=Count("id")))
    body = {status.value: int(counts.get(status.value, 0)) for status in TaskStatus}
    body["total"] = sum(body.values())
    return body


# sending ----------------------------------------------------------------------------------


def _command_body(task: OtaTask) -> dict[str, Any]:
    package = task.campaign.package
    device = task.device
    return {
        "deviceIdentification": device.identifier,
        "productIdentification": package.product.identifier,
        "otaTaskId": task.pk,
        "packageType": WIRE_PACKAGE_TYPE[PackageType(package.package_type)],
        "version": package.version,
        "fileLocation": download_url(package, device.identifier, task.pk),
        "fileSize": package.size,
        "checksum": package.checksum,
        "checksumAlgorithm": "SHA256",
        "md5": package.md5,
        "description": package.description,
        "customInfo": package.custom_info,
    }


def send_task(task: OtaTask) -> bool:
    """Send the upgrade command of an open task if its device is reachable."""
    via = carrier(task.device)
    node = downlink.route(via)
    if node is None:
        return False
    now = timezone.now()
    claimed = OtaTask.objects.filter(pk=task.pk, status__in=OPEN_TASKS,
                                     campaign__status=CampaignStatus.RUNNING).update(
        status=TaskStatus.IN_PROGRESS, sent=now, updated=now, attempts=F("attempts") + 1)
    if not claimed:
        return False
    downlink.publish(node, downlink.topic(task.device.identifier, "topo/otaCommand"),
                     downlink.envelope(_command_body(task)), device=task.device.identifier)
    return True


def dispatch(tasks: Any) -> int:
    """Send the pending tasks (of running campaigns) among ``tasks`` whose device is online."""
    waiting = list(tasks.filter(status=TaskStatus.PENDING,
                                campaign__status=CampaignStatus.RUNNING)
                   .select_related("device__gateway", "campaign__package__product")[:5000])
    if not waiting:
        return 0
    online = downlink.routes(sorted({carrier(t.device) for t in waiting}))
    sent = 0
    for task in waiting:
        if carrier(task.device) in online:
            try:
                sent += send_task(task)
            except Exception:
                log.exception("OTA task %s could not be sent; it stays pending", task.pk)
    return sent


def dispatch_for_devices(identifiers: Iterable[str]) -> int:
    """Devices (or gateways of sub-devices) that came online get their waiting upgrades."""
    ids = list(identifiers)
    return dispatch(OtaTask.objects.filter(
        Q(device__identifier__in=ids) | Q(device__gateway__identifier__in=ids))) if ids else 0


def _finish_campaigns(campaign_ids: Iterable[int]) -> None:
    for campaign in OtaCampaign.objects.filter(pk__in=set(campaign_ids),
                                               status=CampaignStatus.RUNNING):
        if not campaign.tasks.filter(status__in=OPEN_TASKS).exists():
            OtaCampaign.objects.filter(pk=campaign.pk, status=CampaignStatus.RUNNING).update(
                status=CampaignStatus.FINISHED, finished=timezone.now())


def advance() -> dict[str, int]:
    """The beat sweep: send waiting tasks to online devices, resend unanswered commands, fail
    silent devices, close finished campaigns."""
    now = timezone.now()
    running = OtaTask.objects.filter(campaign__status=CampaignStatus.RUNNING)
    sent = dispatch(running)
    unanswered = running.filter(status=TaskStatus.IN_PROGRESS, last_report__isnull=True,
                                sent__lt=now - RESEND_AFTER, attempts__lt=MAX_ATTEMPTS)
    resent = 0
    for task in unanswered.select_related("device__gateway", "campaign__package__product"):
        if downlink.route(carrier(task.device)) is not None:
            resent += send_task(task)
    failed = 0
    for task in running.filter(status=TaskStatus.IN_PROGRESS).select_related("campaign"):
        if task.updated < now - timedelta(seconds=task.campaign.task_timeout):
            failed += OtaTask.objects.filter(pk=task.pk, status=TaskStatus.IN_PROGRESS).update(
                status=TaskStatus.FAILED, finished=now, updated=now, error_code="timeout",
                error_message=_("no report from the device for {seconds} s").format(
                    seconds=task.campaign.task_timeout))
    _finish_campaigns(OtaCampaign.objects.filter(status=CampaignStatus.RUNNING)
                      .values_list("pk", flat=True))
    return {"sent": sent, "resent": resent, "failed": failed}


# device messages --------------------------------------------------------------------------


def _package_type(value: Any) -> str | None:
    if value in (0, "0", PackageType.SOFTWARE, "SOFTWARE"):
        return PackageType.SOFTWARE
    if value in (1, "1", PackageType.FIRMWARE, "FIRMWARE"):
        return PackageType.FIRMWARE
    return None


def _subject(sender: Device, body: dict[str, Any]) -> Device | None:
    """The device a message is about: the sender, or one of its sub-devices it names."""
    named = body.get("deviceIdentification")
    if not named or named == sender.identifier:
        return sender
    return Device.objects.select_related("product", "gateway").filter(
        identifier=named, gateway=sender).first()


def _set_version(device: Device, package_type: str, version: str) -> None:
    field = "fw_version" if package_type == PackageType.FIRMWARE else "sw_version"
    if version and getattr(device, field) != version[:50]:
        device_actions.update_device(device=device,
                                     data={field: version[:50]})


def _complete_by_version(device: Device, package_type: str, version: str) -> None:
    """An open task of the device whose package has this version succeeded."""
    done = OtaTask.objects.filter(device=device, status__in=OPEN_TASKS,
                                  campaign__status=CampaignStatus.RUNNING,
                                  campaign__package__package_type=package_type,
                                  campaign__package__version=version)
    campaigns = list(done.values_list("campaign_id", flat=True))
    if campaigns:
        now = timezone.now()
        done.update(status=TaskStatus.SUCCEEDED, progress=100, finished=now, updated=now)
        _finish_campaigns(campaigns)


def _reply(sender: Device, suffix: str, body: dict[str, Any], mid: Any) -> None:
    downlink.send(sender.identifier, suffix, body, mid=mid if isinstance(mid, int) else None,
                  via=carrier(sender))


def _failed(reason: str) -> dict[str, Any]:
    return {"statusCode": 1, "statusDesc": reason}


def _on_command_response(device: Device, body: dict[str, Any]) -> None:
    task_id = str(body.get("otaTaskId", ""))
    task = OtaTask.objects.select_related("campaign__package").filter(
        pk=int(task_id), device=device).first() if task_id.isdigit() else None
    if task is None or task.status not in OPEN_TASKS:
        log.info("OTA response of %s for unknown or closed task %s", device.identifier,
                 body.get("otaTaskId"))
        return
    try:
        upgrade = int(body.get("upgradeStatus", 1))
    except (TypeError, ValueError):
        upgrade = 1
    status = UPGRADE_STATUS.get(upgrade, TaskStatus.IN_PROGRESS)
    try:
        progress = max(0, min(100, int(body.get("progress") or 0)))
    except (TypeError, ValueError):
        progress = task.progress
    fields: dict[str, Any] = {"status": status, "last_report": body, "updated": timezone.now(),
                              "progress": 100 if status == TaskStatus.SUCCEEDED else progress}
    if status == TaskStatus.FAILED:
        fields["error_code"] = str(body.get("errorCode") or "failed")[:50]
        fields["error_message"] = str(body.get("errorMessage") or body.get("failureDetails")
                                      or "")
    if status in (TaskStatus.SUCCEEDED, TaskStatus.FAILED):
        fields["finished"] = timezone.now()
    if OtaTask.objects.filter(pk=task.pk, status__in=OPEN_TASKS).update(**fields) and \
            status == TaskStatus.SUCCEEDED:
        package = task.campaign.package
        _set_version(device, package.package_type, package.version)
    if status in (TaskStatus.SUCCEEDED, TaskStatus.FAILED):
        _finish_campaigns([task.campaign_id])


def _on_pull(sender: Device, device: Device, body: dict[str, Any], mid: Any) -> None:
    package_type = _package_type(body.get("packageType", 1)) or PackageType.FIRMWARE
    packages = OtaPackage.objects.select_related("product").filter(
        product=device.product, package_type=package_type)
    wanted = body.get("requestVersion")
    package = packages.filter(version=wanted).first() if wanted else packages.first()
    if package is None:
        _reply(sender, "topo/otaPullResponse", _failed(
            _("no {type} package {version}for product {product}").format(
                type=package_type, version=f"{wanted} " if wanted else "",
                product=device.product.identifier)), mid)
        return
    if not wanted and package.version == body.get("currentVersion"):
        _reply(sender, "topo/otaPullResponse", {
            **_failed(_("already at the latest version {version}").format(
                version=package.version)), "version": package.version}, mid)
        return
    task = OtaTask.objects.filter(device=device, status__in=OPEN_TASKS,
                                  campaign__package=package).first()
    _reply(sender, "topo/otaPullResponse", {
        "statusCode": 0, "statusDesc": "successful",
        "deviceIdentification": device.identifier,
        "productIdentification": device.product.identifier,
        "otaTaskId": task.pk if task else None,
        "packageType": WIRE_PACKAGE_TYPE[PackageType(package.package_type)],
        "version": package.version,
        "fileLocation": download_url(package, device.identifier, task.pk if task else None),
        "fileSize": package.size, "checksum": package.checksum, "checksumAlgorithm": "SHA256",
        "md5": package.md5, "description": package.description,
        "customInfo": package.custom_info,
    }, mid)


def handle_message(sender: Device, op: str, body: Any, ts: int, mid: Any = None) -> None:
    """One OTA message from a device (`ota` uplink event). Bad input is answered, not raised."""
    if not isinstance(body, dict):
        if op in ("otaPull", "otaReport"):
            _reply(sender, f"topo/{op}Response", _failed(_("the body must be a JSON object")),
                   mid)
        return
    device = _subject(sender, body)
    if device is None:
        if op in ("otaPull", "otaReport"):
            _reply(sender, f"topo/{op}Response", _failed(
                _("unknown sub-device {identifier}").format(
                    identifier=body.get("deviceIdentification"))), mid)
        return
    with transaction.atomic():
        if op == "otaCommandResponse":
            _on_command_response(device, body)
        elif op == "otaPull":
            _on_pull(sender, device, body, mid)
        elif op in ("otaReport", "otaReadResponse"):
            package_type = _package_type(body.get("packageType"))
            version = body.get("currentVersion")
            if package_type is None or not isinstance(version, str) or not version:
                if op == "otaReport":
                    _reply(sender, "topo/otaReportResponse", _failed(
                        _("give packageType (0 software, 1 firmware) and currentVersion")),
                        mid)
                return
            _set_version(device, package_type, version)
            _complete_by_version(device, package_type, version)
            if op == "otaReport":
                _reply(sender, "topo/otaReportResponse",
                       {"statusCode": 0, "statusDesc": "successful"}, mid)


def read_version(*, device: Device, package_type: str) -> bool:
    """Ask a device for its version (``/topo/otaRead``); False when it is offline."""
    return downlink.send(device.identifier, "topo/otaRead", {
        "deviceIdentification": device.identifier,
        "packageType": WIRE_PACKAGE_TYPE[PackageType(package_type)],
    }, via=carrier(device))
