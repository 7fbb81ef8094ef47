"""Bulk import and export of devices (CSV and XLSX), for the API and the admin."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import tablib
from django.utils.translation import gettext as _

from webapp.core import spreadsheet, uploads
from webapp.core.errors import DomainError
from webapp.core.types import Actor
from webapp.devices import secrets_once
from webapp.devices.resources import DeviceResource
from webapp.system.actors import recorded_user

FORMATS = ("csv", "xlsx")
MAX_IMPORT_ROWS = 50_000
MAX_REPORTED_ERRORS = 1000


@dataclass
class ImportOutcome:
    """What an import did; `secrets_token` downloads the generated secrets once."""

    result: Any
    dry_run: bool
    totals: dict[str, int]
    errors: list[dict[str, Any]] = field(default_factory=list)
    secrets_token: str | None = None
    secrets_count: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors


def read_dataset(content: bytes, file_format: str) -> tablib.Dataset:
    """A tablib dataset from an uploaded CSV (UTF-8, with or without BOM) or XLSX file, read
    within the upload budgets (`webapp.core.uploads`: bytes, cells, `MAX_IMPORT_ROWS` rows),
    with the formula-injection escaping of an export removed (`webapp.core.spreadsheet`)."""
    dataset = uploads.load_dataset(content, file_format, max_rows=MAX_IMPORT_ROWS)
    # The quote the export put before text such as "=…" is not part of the value.
    return spreadsheet.unescape_dataset(dataset)


def _row_errors(result: Any, dataset: tablib.Dataset) -> list[dict[str, Any]]:
    """Every problem with its row number (1 = the first row after the headers)."""
    headers = list(dataset.headers or ())
    column = headers.index("identifier") if "identifier" in headers else None

    def identifier(number: int) -> Any:
        if column is None or not 1 <= number <= len(dataset):
            return None
        return dataset[number - 1][column]

    errors: list[dict[str, Any]] = []
    for error in result.base_errors:
        errors.append({"row": None, "errors": {"__all__": [str(error.error)]}})
    for invalid in result.invalid_rows:
        errors.append({"row": invalid.number, "identifier": identifier(invalid.number),
                       "errors": {k: [str(m) for m in v]
                                  for k, v in invalid.error_dict.items()}})
    for number, row_errors in result.row_errors():
        errors.append({"row": number, "identifier": identifier(number),
                       "errors": {"__all__": [str(e.error) for e in row_errors]}})
    errors.sort(key=lambda e: e["row"] or 0)
    return errors[:MAX_REPORTED_ERRORS]


def import_devices(*, acting_user: Actor, dataset: tablib.Dataset, dry_run: bool = False,
                   retain_instances: bool = False) -> ImportOutcome:
    """Create or update the devices of a file in one transaction: all rows or none.

    Rows are matched on `identifier`; new devices get a generated secret unless the file has
    a `secret` column. After a real import the new secrets can be downloaded once.
    """
    if len(dataset) > MAX_IMPORT_ROWS:
        raise DomainError(_("at most {max} rows per import").format(max=MAX_IMPORT_ROWS),
                          code="too_many_rows")
    resource = DeviceResource(user=acting_user)
    result = resource.import_data(dataset, dry_run=dry_run, raise_errors=False,
                                  use_transactions=True, rollback_on_validation_errors=True,
                                  user=acting_user,
                                  retain_instance_in_row_result=retain_instances)
    totals = {key.lower(): value for key, value in result.totals.items()}
    outcome = ImportOutcome(result=result, dry_run=dry_run, totals=totals,
                            errors=_row_errors(result, dataset))
    if outcome.ok and not dry_run and resource.secrets:
        user = recorded_user(acting_user)
        outcome.secrets_token = secrets_once.stash(resource.secrets,
                                                   user.pk if user else None)
        outcome.secrets_count = len(resource.secrets)
    return outcome


def export_devices(queryset: Any, file_format: str) -> bytes | str:
    """The devices in the import format (re-importable), as CSV or XLSX; text that a
    spreadsheet would run as a formula is written with a leading quote."""
    if file_format not in FORMATS:
        raise DomainError(_("the file format is csv or xlsx"), code="invalid_format")
    dataset = DeviceResource().export(queryset=queryset)
    return spreadsheet.export(dataset, file_format)
