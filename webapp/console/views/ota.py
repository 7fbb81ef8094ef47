"""OTA in the console (docs/console.md, "OTA"): packages and campaigns in the user's data
scope, uploading a package and starting a campaign through `webapp.ota.actions` (the same
size budget and duplicate check as the API, plus the uploader's SHA-256 when given), and a
campaign page with each device's progress, refreshed from a JSON endpoint.

A campaign targets devices of its package's product that the user reaches: all of them, the
members of a group in scope, or a list of identifiers (any one out of reach refuses the
campaign, naming it).
"""

from __future__ import annotations

import re
from typing import Any

from django import forms
from django.contrib import messages
from django.core.paginator import Paginator
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, pgettext_lazy
from django.views.decorators.http import require_GET, require_POST

from webapp.console import access
from webapp.console.access import console_view
from webapp.core import uploads
from webapp.core.errors import DomainError
from webapp.devices.models import DeviceGroup
from webapp.ota import actions as ota_actions
from webapp.ota.choices import CampaignStatus, PackageType, TargetType, TaskStatus
from webapp.ota.models import OtaCampaign, OtaPackage, OtaTask
from webapp.products.models import Product
from webapp.system import scope

PAGE_SIZE = 25
#: The most device identifiers one campaign form names, and the tasks the progress JSON lists.
MAX_IDENTIFIERS = 5000
PROGRESS_ROWS = 1000
SEPARATORS = re.compile(r"[\s,;]+")
SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")


def packages_for(user: Any) -> QuerySet[OtaPackage]:
    return scope.restrict(OtaPackage.objects.select_related("product"), user)


def campaigns_for(user: Any) -> QuerySet[OtaCampaign]:
    return scope.restrict(OtaCampaign.objects.select_related("package__product", "group"),
                          user)


def groups_for(user: Any) -> QuerySet[DeviceGroup]:
    return scope.restrict(DeviceGroup.objects.all(), user)


class PackageForm(forms.Form):
    product = forms.ModelChoiceField(label=gettext_lazy("Product"),
                                     queryset=Product.objects.none(), to_field_name="identifier")
    name = forms.CharField(label=pgettext_lazy("ota", "Name"), max_length=100)
    package_type = forms.ChoiceField(label=gettext_lazy("Type"), choices=PackageType.choices,
                                     initial=PackageType.FIRMWARE)
    version = forms.CharField(label=gettext_lazy("Version"), max_length=50)
    file = forms.FileField(label=gettext_lazy("File"))
    checksum = forms.CharField(
        label=gettext_lazy("SHA-256 of the file (optional)"), required=False, max_length=64,
        help_text=gettext_lazy("Given, the upload is refused unless the file has this digest."))
    description = forms.CharField(label=gettext_lazy("Description"), required=False,
                                  max_length=2000, widget=forms.Textarea(attrs={"rows": 2}))

    def __init__(self, user: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        fields: Any = self.fields
        fields["product"].queryset = access.products_for(user).order_by("identifier")

    def clean_checksum(self) -> str:
        value = self.cleaned_data.get("checksum", "").strip()
        if value and not SHA256.match(value):
            raise forms.ValidationError(_("A SHA-256 is 64 hexadecimal digits."))
        return value.lower()

    def clean_version(self) -> str:
        value = self.cleaned_data.get("version", "").strip()
        if not value or any(c.isspace() or not c.isprintable() for c in value):
            raise forms.ValidationError(_("A version has no spaces or control characters."))
        return value


class CampaignForm(forms.Form):
    name = forms.CharField(label=pgettext_lazy("ota", "Name"), max_length=100)
    package = forms.ModelChoiceField(label=gettext_lazy("Package"),
                                     queryset=OtaPackage.objects.none())
    target_type = forms.ChoiceField(label=pgettext_lazy("ota", "Devices"),
                                    choices=TargetType.choices,
                                    initial=TargetType.DEVICES, widget=forms.RadioSelect)
    group = forms.ModelChoiceField(label=gettext_lazy("Group"), required=False,
                                   queryset=DeviceGroup.objects.none())
    devices = forms.CharField(
        label=gettext_lazy("Device identifiers"), required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text=gettext_lazy("Separated by spaces, commas or new lines."))
    description = forms.CharField(label=gettext_lazy("Description"), required=False,
                                  max_length=2000, widget=forms.Textarea(attrs={"rows": 2}))
    task_timeout = forms.IntegerField(
        label=gettext_lazy("Device timeout (s)"), initial=3600, min_value=60,
        max_value=7 * 86_400, help_text=gettext_lazy(
            "A device that started the upgrade and reports nothing for this long fails."))
    start = forms.BooleanField(label=gettext_lazy("Start at once (otherwise a draft)"),
                               required=False, initial=True)

    def __init__(self, user: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        fields: Any = self.fields
        fields["package"].queryset = packages_for(user).order_by("product__identifier",
                                                                 "-created")
        fields["package"].label_from_instance = lambda p: (
            f"{p.product.identifier} · {p.name} {p.version} ({p.get_package_type_display()})")
        fields["group"].queryset = groups_for(user).order_by("name")

    def clean_devices(self) -> list[str]:
        names = sorted({n for n in SEPARATORS.split(self.cleaned_data.get("devices", "")) if n})
        if len(names) > MAX_IDENTIFIERS:
            raise forms.ValidationError(_("At most {count} devices per campaign form.").format(
                count=MAX_IDENTIFIERS))
        return names

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        target = data.get("target_type")
        if target == TargetType.GROUP and not data.get("group"):
            self.add_error("group", _("Choose the group to upgrade."))
        if target == TargetType.DEVICES and not data.get("devices"):
            self.add_error("devices", _("Give the devices to upgrade."))
        return data


# packages ---------------------------------------------------------------------------------


def _packages_page(request: HttpRequest, form: PackageForm, status: int = 200) -> HttpResponse:
    user: Any = request.user
    queryset = packages_for(user).select_related("created_by").order_by("-created", "-id")
    # An identifier is never longer than 64 and never holds NUL (PostgreSQL refuses it in text).
    product = request.GET.get("product", "")[:64].replace("\x00", "")
    if product:
        queryset = queryset.filter(product__identifier=product)
    page = Paginator(queryset, PAGE_SIZE).get_page(request.GET.get("page"))
    return TemplateResponse(request, "console/ota/packages.html", {
        "page": page, "form": form, "product": product,
        "query": f"product={product}" if product else "",
        "can_add": user.has_perm("ota.add_otapackage"),
        "max_bytes": ota_actions.max_package_bytes(),
    }, status=status)


@console_view("ota.view_otapackage")
def package_list(request: HttpRequest) -> HttpResponse:
    return _packages_page(request, PackageForm(request.user))


@require_POST
@console_view("ota.view_otapackage", "ota.add_otapackage")
def package_upload(request: HttpRequest) -> HttpResponse:
    user: Any = request.user
    limit = ota_actions.max_package_bytes()
    try:
        uploads.check_request_size(request, limit, "OTA_MAX_BYTES")
    except DomainError as exc:
        form = PackageForm(user)
        form.add_error(None, str(exc.detail))
        return _packages_page(request, form, status=exc.http_status)
    form = PackageForm(user, request.POST, request.FILES)
    if not form.is_valid():
        return _packages_page(request, form, status=400)
    data = form.cleaned_data
    try:
        package = ota_actions.create_package(
            acting_user=user, product=data["product"], name=data["name"],
            version=data["version"], package_type=data["package_type"], upload=data["file"],
            description=data["description"], expected_checksum=data["checksum"])
    except DomainError as exc:
        form.add_error("checksum" if exc.code == "checksum_mismatch" else
                       "version" if exc.code == "duplicate" else "file", str(exc.detail))
        return _packages_page(request, form, status=exc.http_status)
    messages.success(request, _("Package {name} {version} uploaded ({size} bytes).").format(
        name=package.name, version=package.version, size=package.size))
    return redirect("console:ota")


# campaigns --------------------------------------------------------------------------------


def _totals(campaign: Any) -> dict[str, int]:
    """The task counts annotated on a campaign of the list (`n_total`, `n_<status>`)."""
    return {"total": campaign.n_total,
            **{value: getattr(campaign, f"n_{value}") for value in TaskStatus.values}}


@console_view("ota.view_otacampaign")
def campaign_list(request: HttpRequest) -> HttpResponse:
    user: Any = request.user
    queryset = campaigns_for(user).order_by("-created", "-id")
    status = request.GET.get("status", "")
    if status in CampaignStatus.values:
        queryset = queryset.filter(status=status)
    queryset = queryset.annotate(
        n_total=Count("tasks"),
        **{f"n_{value}": Count("tasks", filter=Q(tasks__status=value))
           for value in TaskStatus.values})
    page = Paginator(queryset, PAGE_SIZE).get_page(request.GET.get("page"))
    rows = [(c, _totals(c)) for c in page.object_list]
    return TemplateResponse(request, "console/ota/campaigns.html", {
        "page": page, "rows": rows, "status": status, "statuses": CampaignStatus.choices,
        "query": f"status={status}" if status else "",
        "can_add": user.has_perms(["ota.add_otacampaign", "ota.view_otapackage"]),
    })


def _campaign_form_page(request: HttpRequest, form: CampaignForm, status: int = 200
                        ) -> HttpResponse:
    return TemplateResponse(request, "console/ota/campaign_new.html", {"form": form},
                            status=status)


@console_view("ota.view_otacampaign", "ota.add_otacampaign", "ota.view_otapackage")
def campaign_new(request: HttpRequest) -> HttpResponse:
    user: Any = request.user
    if request.method != "POST":
        initial = {}
        wanted = request.GET.get("package", "")
        if wanted.isdigit():
            initial["package"] = wanted
        return _campaign_form_page(request, CampaignForm(user, initial=initial))
    form = CampaignForm(user, request.POST)
    if not form.is_valid():
        return _campaign_form_page(request, form, status=400)
    data = form.cleaned_data
    package: OtaPackage = data["package"]
    try:
        devices = ota_actions.resolve_targets(
            package, data["target_type"], group=data.get("group"),
            identifiers=data["devices"], visible=access.devices_for(user))
        campaign = ota_actions.create_campaign(
            acting_user=user, package=package, name=data["name"],
            target_type=data["target_type"], devices=devices,
            group=data.get("group") if data["target_type"] == TargetType.GROUP else None,
            description=data["description"], task_timeout=data["task_timeout"],
            start=data["start"])
    except DomainError as exc:
        field = "devices" if data["target_type"] == TargetType.DEVICES else \
            "group" if data["target_type"] == TargetType.GROUP else "package"
        form.add_error(field, str(exc.detail))
        return _campaign_form_page(request, form, status=400)
    messages.success(request, _("Campaign {name} created for {count} devices.").format(
        name=campaign.name, count=len(devices)))
    return redirect("console:ota-campaign", pk=campaign.pk)


def _task_row(task: OtaTask) -> dict[str, Any]:
    return {
        "id": task.pk, "device": task.device.identifier, "status": task.status,
        "status_label": str(task.get_status_display()), "progress": task.progress,
        "from_version": task.from_version, "attempts": task.attempts,
        "error": " ".join(p for p in (task.error_code, task.error_message) if p)[:500],
        "sent": task.sent.isoformat() if task.sent else None,
        "finished": task.finished.isoformat() if task.finished else None,
        "updated": task.updated.isoformat(),
    }


def _progress(campaign: OtaCampaign) -> dict[str, Any]:
    tasks = list(campaign.tasks.select_related("device").order_by(
        "device__identifier")[:PROGRESS_ROWS + 1])
    totals = ota_actions.summary(campaign)
    done = totals["succeeded"] + totals["failed"] + totals["cancelled"]
    return {
        "id": campaign.pk, "status": campaign.status,
        "status_label": str(campaign.get_status_display()),
        "summary": totals, "done_percent": round(100 * done / totals["total"])
        if totals["total"] else 0,
        "tasks": [_task_row(t) for t in tasks[:PROGRESS_ROWS]],
        "truncated": len(tasks) > PROGRESS_ROWS,
        "finished": campaign.finished.isoformat() if campaign.finished else None,
    }


def _campaign(request: HttpRequest, pk: int) -> OtaCampaign:
    return get_object_or_404(campaigns_for(request.user), pk=pk)


@console_view("ota.view_otacampaign", "ota.view_otatask")
def campaign_detail(request: HttpRequest, pk: int) -> HttpResponse:
    user: Any = request.user
    campaign = _campaign(request, pk)
    progress = _progress(campaign)
    return TemplateResponse(request, "console/ota/campaign_detail.html", {
        "campaign": campaign, "progress": progress,
        "statuses": TaskStatus.choices,
        "can_change": user.has_perm("ota.change_otacampaign"),
        "can_retry": user.has_perm("ota.add_otacampaign")
        and progress["summary"].get(TaskStatus.FAILED, 0) > 0,
        "live": campaign.status in (CampaignStatus.DRAFT, CampaignStatus.RUNNING),
    })


@require_GET
@console_view("ota.view_otacampaign", "ota.view_otatask")
def campaign_progress(request: HttpRequest, pk: int) -> JsonResponse:
    return JsonResponse(_progress(_campaign(request, pk)))


def _change(request: HttpRequest, pk: int, operation: str) -> HttpResponse:
    campaign = _campaign(request, pk)
    try:
        if operation == "start":
            ota_actions.start_campaign(campaign=campaign)
            messages.success(request, _("Campaign {name} started.").format(name=campaign.name))
        else:
            ota_actions.cancel_campaign(campaign=campaign)
            messages.success(request, _("Campaign {name} cancelled: devices that had not "
                                        "started are skipped.").format(name=campaign.name))
    except DomainError as exc:
        messages.error(request, str(exc.detail))
    return redirect(reverse("console:ota-campaign", args=[campaign.pk]))


@require_POST
@console_view("ota.view_otacampaign", "ota.change_otacampaign")
def campaign_start(request: HttpRequest, pk: int) -> HttpResponse:
    return _change(request, pk, "start")


@require_POST
@console_view("ota.view_otacampaign", "ota.change_otacampaign")
def campaign_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    return _change(request, pk, "cancel")


@require_POST
@console_view("ota.view_otacampaign", "ota.add_otacampaign")
def campaign_retry(request: HttpRequest, pk: int) -> HttpResponse:
    """A new campaign of the same package over the devices whose upgrade failed in this one
    (those still in the user's reach), started at once; the old campaign is left as it is."""
    user: Any = request.user
    campaign = _campaign(request, pk)
    failed = list(campaign.tasks.filter(status=TaskStatus.FAILED).values_list(
        "device__identifier", flat=True))
    devices = list(access.devices_for(user).filter(
        product=campaign.package.product, identifier__in=failed).order_by("identifier"))
    if not devices:
        messages.error(request, _("No device of this campaign failed (or none is in your "
                                  "reach): there is nothing to retry."))
        return redirect("console:ota-campaign", pk=campaign.pk)
    name = _("{name} (retry)").format(name=campaign.name)[:100]
    try:
        retry = ota_actions.create_campaign(
            acting_user=user, package=campaign.package, name=name,
            target_type=TargetType.DEVICES, devices=devices,
            description=_("Retry of the devices that failed in campaign #{pk}.").format(
                pk=campaign.pk), task_timeout=campaign.task_timeout, start=True)
    except DomainError as exc:
        messages.error(request, str(exc.detail))
        return redirect("console:ota-campaign", pk=campaign.pk)
    messages.success(request, _("Campaign {name} created for {count} devices.").format(
        name=retry.name, count=len(devices)))
    return redirect("console:ota-campaign", pk=retry.pk)


urlpatterns: list[URLPattern] = [
    path("ota/", package_list, name="ota"),
    path("ota/packages/upload/", package_upload, name="ota-package-upload"),
    path("ota/campaigns/", campaign_list, name="ota-campaigns"),
    path("ota/campaigns/new/", campaign_new, name="ota-campaign-new"),
    path("ota/campaigns/<int:pk>/", campaign_detail, name="ota-campaign"),
    path("ota/campaigns/<int:pk>/progress/", campaign_progress, name="ota-campaign-progress"),
    path("ota/campaigns/<int:pk>/start/", campaign_start, name="ota-campaign-start"),
    path("ota/campaigns/<int:pk>/cancel/", campaign_cancel, name="ota-campaign-cancel"),
    path("ota/campaigns/<int:pk>/retry/", campaign_retry, name="ota-campaign-retry"),
]
