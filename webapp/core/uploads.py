"""Budgets for what clients upload: request bodies, import files and the spreadsheets in them.

- A JSON body is refused (413) above `DATA_UPLOAD_MAX_MEMORY_SIZE` before it is read
  (`webapp.core.parsers.JSONParser`; DRF reads JSON past Django's own check of that setting).
- An upload's request is refused from its Content-Length before it is parsed
  (`check_request_size`), its file from the size the parser found (`check_size`).
- An import file (CSV or XLSX) holds at most `IMPORT_MAX_BYTES` bytes and `IMPORT_MAX_CELLS`
  cells; a workbook's parts expand to at most `XLSX_MAX_EXPANSION` times the file limit.
  `load_dataset` stops at the first budget passed, never reading the whole file first.
- The admin's imports (django-import-export) offer only those two formats and check the
  file size in the form (`webapp.core.admin.BoundedImportMixin`, on every
  `ImportExportModelAdmin`).

The web process (Daphne) still receives a whole body before Django sees it: the transport
limit belongs to the reverse proxy in front (docs/security.md).
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Iterator
from typing import Any

import tablib
from django.conf import settings
from django.utils.translation import gettext as _

from webapp.core.errors import DomainError, TooLarge

#: The parts of a workbook (a zip) may expand to this many times the file size limit: an
#: ordinary workbook compresses 5 to 10 times, a zip bomb thousands of times.
XLSX_MAX_EXPANSION = 10
READABLE = ("csv", "xlsx")


class UnreadableFile(ValueError):
    """An import file the admin's import form reports with its reason."""


def max_body_bytes() -> int:
    """The largest request body besides files (`DATA_UPLOAD_MAX_MEMORY_SIZE`)."""
    return int(settings.DATA_UPLOAD_MAX_MEMORY_SIZE or 0)


def max_import_bytes() -> int:
    """The largest import file (`IMPORT_MAX_BYTES`, 10 MiB by default)."""
    return int(getattr(settings, "IMPORT_MAX_BYTES", 10 * 2**20))


def max_cells() -> int:
    """The most cells an import file may hold, headers included (`IMPORT_MAX_CELLS`)."""
    return int(getattr(settings, "IMPORT_MAX_CELLS", 1_000_000))


def check_size(size: int | None, limit: int, setting: str) -> None:
    """Refuse a file of ``size`` bytes over ``limit`` (named by its ``setting``)."""
    if size is not None and size > limit:
        raise TooLarge(_("the file has {size} bytes; at most {max} are accepted "
                         "({setting})").format(size=size, max=limit, setting=setting),
                       code="file_too_large")


def check_request_size(request: Any, limit: int, setting: str) -> None:
    """Refuse, before parsing it, a request too large to carry a file of at most ``limit``
    bytes (plus the form fields next to it)."""
    meta = getattr(request, "META", {})
    try:
        length = int(meta.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    allowed = limit + max_body_bytes()
    if length > allowed:
        raise TooLarge(_("the request has {size} bytes; a file of at most {max} bytes is "
                         "accepted here ({setting})").format(size=length, max=limit,
                                                             setting=setting),
                       code="file_too_large")


# import files -----------------------------------------------------------------------------


def _csv_rows(content: bytes) -> Iterator[list[Any]]:
    for row in csv.reader(io.StringIO(content.decode("utf-8-sig"))):
        if row:  # a blank line is no row (as tablib reads CSV)
            yield row


def _xlsx_rows(content: bytes) -> Iterator[list[Any]]:
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        # zipfile never inflates a member past the size its header declares.
        expanded = sum(info.file_size for info in archive.infolist())
    limit = max_import_bytes() * XLSX_MAX_EXPANSION
    if expanded > limit:
        raise TooLarge(_("the workbook expands to {size} bytes; at most {max} are read "
                         "({ratio} times IMPORT_MAX_BYTES)").format(
                             size=expanded, max=limit, ratio=XLSX_MAX_EXPANSION),
                       code="file_too_large")
    import openpyxl

    # read_only streams the sheet; its XML goes through defusedxml (no entity expansion).
    workbook = openpyxl.load_workbook(io.BytesIO(content), read_only=True, data_only=True)
    try:
        sheet: Any = workbook.active
        if sheet is None:
            return
        # The declared dimension is the file's word: a row is as wide as its cells.
        sheet.reset_dimensions()
        for row in sheet.iter_rows(values_only=True):
            yield list(row)
    finally:
        workbook.close()


def load_dataset(content: bytes, file_format: str, *, max_rows: int | None = None
                 ) -> tablib.Dataset:
    """A tablib dataset (first row: the headers) from a CSV (UTF-8, with or without BOM) or
    XLSX file, read row by row within the budgets: `IMPORT_MAX_BYTES`, `IMPORT_MAX_CELLS`,
    ``max_rows`` data rows, and for XLSX the expanded size of the zip. A file over a budget is
    refused (413) when the budget is passed; an unreadable one with the reason (400)."""
    if file_format not in READABLE:
        raise DomainError(_("the file format is csv or xlsx"), code="invalid_format")
    check_size(len(content), max_import_bytes(), "IMPORT_MAX_BYTES")
    budget = max_cells()
    dataset = tablib.Dataset()
    cells = 0
    try:
        rows = _csv_rows(content) if file_format == "csv" else _xlsx_rows(content)
        for number, values in enumerate(rows):
            if number and len(values) < dataset.width:
                values += [""] * (dataset.width - len(values))
            cells += len(values)
            if cells > budget:
                raise TooLarge(_("the file has more than {max} cells (IMPORT_MAX_CELLS)").format(
                    max=budget), code="too_many_cells")
            if number == 0:
                dataset.headers = values
            elif max_rows is not None and len(dataset) >= max_rows:
                raise TooLarge(_("at most {max} rows per import").format(max=max_rows),
                               code="too_many_rows")
            else:
                dataset.append(values)
    except DomainError:
        raise
    except Exception as exc:  # openpyxl and defusedxml raise many kinds for a bad workbook
        raise DomainError(_("the file cannot be read as {format}: {error}").format(
            format=file_format, error=_reason(exc)), code="invalid_file") from None
    return dataset


def _reason(exc: BaseException) -> str:
    """Why a file could not be read: the innermost error (openpyxl wraps what the XML parser
    found), its message for the errors of reading text and zips, else only its name."""
    for _depth in range(8):
        inner = exc.__cause__ or exc.__context__
        if inner is None:
            break
        exc = inner
    if isinstance(exc, UnicodeDecodeError | ValueError | KeyError | csv.Error
                  | zipfile.BadZipFile | tablib.InvalidDimensions):
        return str(exc) or exc.__class__.__name__
    return exc.__class__.__name__
