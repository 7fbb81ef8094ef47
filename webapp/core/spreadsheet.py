"""Spreadsheet cells that stay text: protection of CSV/XLSX exports against formula injection
(CWE-1236), in one place for every export of the project.

A spreadsheet runs a cell as a formula when its text starts with ``=``, ``+``, ``-`` or ``@``
(a leading tab or carriage return can hide one). Such a text cell is written with a single
quote in front (``=HYPERLINK(…)`` → ``'=HYPERLINK(…)``), which Excel and LibreOffice show as
text. Only text is escaped: numbers, dates and booleans keep their type, and a text that is
a plain number (``-3.5``, ``+12``, ``1e-3``, what a serializer makes of a decimal) stays as it
is, since a spreadsheet reads it as that number and nothing else.

Escaping is reversible, so an exported file imports back unchanged: `unescape_cell` removes
exactly the quote `escape_cell` added. To make that exact, a text that already starts with
quotes followed by one of those characters (``'=x``) gets one more quote too.

Used by: the list exports of every API ViewSet (`webapp.core.export`), the device export and
import (`webapp.devices.actions.imports`), the telemetry CSV export
(`webapp.telemetry.queries.export_csv`) and, through ``IMPORT_EXPORT_FORMATS`` in the settings,
every admin import/export of django-import-export (`FORMATS`).
"""

from __future__ import annotations

import re
from typing import Any

import tablib
from import_export.formats import base_formats

TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
QUOTE = "'"

# Quotes (possibly none) then a character that starts a formula.
_NEEDS_QUOTE = re.compile(r"'*[=+\-@\t\r]")
# A plain number: a spreadsheet reads it as a number, never as a formula.
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


def escape_cell(value: Any) -> Any:
    """``value`` as it may be written to a spreadsheet cell (text that cannot run)."""
    if not isinstance(value, str) or not _NEEDS_QUOTE.match(value) or _NUMBER.fullmatch(value):
        return value
    return QUOTE + value


def unescape_cell(value: Any) -> Any:
    """A cell read from a file, without the quote `escape_cell` added."""
    if isinstance(value, str) and value.startswith(QUOTE) and _NEEDS_QUOTE.match(value, 1):
        return value[1:]
    return value


def _mapped(dataset: tablib.Dataset, cell: Any) -> tablib.Dataset:
    out = tablib.Dataset(title=dataset.title)
    if dataset.headers:
        out.headers = [cell(h) for h in dataset.headers]
    for row in dataset:
        out.append([cell(v) for v in row])
    return out


def escape_dataset(dataset: tablib.Dataset) -> tablib.Dataset:
    """A copy of ``dataset`` with every text cell (and header) escaped."""
    return _mapped(dataset, escape_cell)


def unescape_dataset(dataset: tablib.Dataset) -> tablib.Dataset:
    """A copy of an imported ``dataset`` without the quotes added on export."""
    return _mapped(dataset, unescape_cell)


def export(dataset: tablib.Dataset, file_format: str) -> Any:
    """``dataset`` as a file of ``file_format``, text cells escaped for csv/tsv/xls/xlsx/ods."""
    if file_format in ("csv", "tsv", "xls", "xlsx", "ods"):
        dataset = escape_dataset(dataset)
    return dataset.export(file_format)


# django-import-export (admin) --------------------------------------------------------------


class _Escaping:
    """Escapes the cells of an export and removes the escaping from an import; CSV and XLSX
    are read within the upload budgets (`webapp.core.uploads.load_dataset`)."""

    reads: str | None = None

    def export_data(self, dataset: tablib.Dataset, **kwargs: Any) -> Any:
        return super().export_data(escape_dataset(dataset), **kwargs)  # type: ignore[misc]

    def create_dataset(self, in_stream: Any, **kwargs: Any) -> tablib.Dataset:
        if self.reads is None:
            return unescape_dataset(super().create_dataset(  # type: ignore[misc]
                in_stream, **kwargs))
        # Imported here: the settings import this module, before DRF may be imported.
        from webapp.core.errors import DomainError
        from webapp.core.uploads import UnreadableFile, load_dataset

        content = in_stream.encode("utf-8") if isinstance(in_stream, str) else in_stream
        try:
            dataset = load_dataset(content, self.reads)
        except DomainError as exc:
            # What the admin's import form reports (`webapp.core.admin.BoundedImportMixin`).
            raise UnreadableFile(str(exc.detail)) from None
        return unescape_dataset(dataset)


class CSV(_Escaping, base_formats.CSV):
    reads = "csv"


class TSV(_Escaping, base_formats.TSV):
    pass


class XLSX(_Escaping, base_formats.XLSX):
    reads = "xlsx"


class XLS(_Escaping, base_formats.XLS):
    pass


class ODS(_Escaping, base_formats.ODS):
    pass


_SAFE: dict[type, type] = {base_formats.CSV: CSV, base_formats.TSV: TSV,
                           base_formats.XLSX: XLSX, base_formats.XLS: XLS,
                           base_formats.ODS: ODS}

#: The admin's import/export formats (``IMPORT_EXPORT_FORMATS``): django-import-export's
#: defaults, the spreadsheet ones escaping.
FORMATS: list[type] = [_SAFE.get(f, f) for f in base_formats.DEFAULT_FORMATS]

# The admin exports numbers and dates with their own type to the binary formats it lists
# here (`type(format) in BINARY_FORMATS`); the escaping subclasses are the same formats.
for _binary in list(base_formats.BINARY_FORMATS):
    if _binary in _SAFE and _SAFE[_binary] not in base_formats.BINARY_FORMATS:
        base_formats.BINARY_FORMATS.append(_SAFE[_binary])
