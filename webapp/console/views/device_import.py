"""Importing devices in the console: a CSV or XLSX file through the devices app's import
action (every row or none), with every refused row listed by number, identifier and column.

New devices' generated secrets are not shown on the page: the action keeps them for one
download by the importing user (`webapp.devices.secrets_once`), and the page links to it.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.translation import gettext_lazy as _

from webapp.console.access import console_view
from webapp.core import uploads
from webapp.core.errors import DomainError
from webapp.devices import actions as device_actions


class ImportForm(forms.Form):
    file = forms.FileField(label=_("File (CSV or XLSX)"))
    dry_run = forms.BooleanField(label=_("Only check the file, import nothing"), required=False)


def _page(request: HttpRequest, form: ImportForm, status: int = 200,
          **context: Any) -> HttpResponse:
    return TemplateResponse(request, "console/devices/import.html",
                            {"form": form, **context}, status=status)


@console_view("devices.view_device", "devices.add_device")
def device_import(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        return _page(request, ImportForm())
    try:
        uploads.check_request_size(request, uploads.max_import_bytes(), "IMPORT_MAX_BYTES")
        form = ImportForm(request.POST, request.FILES)
        if not form.is_valid():
            return _page(request, form, status=400)
        upload = form.cleaned_data["file"]
        uploads.check_size(upload.size, uploads.max_import_bytes(), "IMPORT_MAX_BYTES")
        file_format = "xlsx" if upload.name.lower().endswith(".xlsx") else "csv"
        dataset = device_actions.read_dataset(upload.read(), file_format)
        outcome = device_actions.import_devices(acting_user=request.user, dataset=dataset,
                                                dry_run=form.cleaned_data["dry_run"])
    except DomainError as exc:
        return _page(request, ImportForm(), status=400, failure=str(exc))
    if not outcome.ok:
        return _page(request, ImportForm(), status=400, errors=outcome.errors,
                     totals=outcome.totals)
    secrets_url = (reverse("device-import-secrets", kwargs={"token": outcome.secrets_token})
                   if outcome.secrets_token else "")
    response = _page(request, ImportForm(), totals=outcome.totals, dry_run=outcome.dry_run,
                     done=True, secrets_url=secrets_url, secrets_count=outcome.secrets_count)
    response["Cache-Control"] = "no-store"
    return response
