"""ModelAdmin mixins of every app: JSON boxes left empty read as their column's default, and
imports read within the upload budgets. (The data scope's mixins: `webapp.system.admin_scope`.)"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django import forms
from django.db import models
from import_export import forms as import_forms

from webapp.core import spreadsheet
from webapp.core.errors import TooLarge
from webapp.core.uploads import UnreadableFile, check_size, max_import_bytes

#: The formats the admin imports: read row by row within the budgets
#: (`webapp.core.uploads.load_dataset`), cells unescaped as exported (`webapp.core.spreadsheet`).
BOUNDED_IMPORT_FORMATS: tuple[type, ...] = (spreadsheet.CSV, spreadsheet.XLSX)



class DefaultingJSONField(forms.JSONField):
    """A JSON box left empty is the model field's default (`{}`, `[]`), not None: the
    column is NOT NULL, so None failed only when the record was written (a 500). A required
    field still refuses an empty box."""

    def __init__(self, *args: Any, empty: Callable[[], Any], **kwargs: Any) -> None:
        self.empty = empty
        super().__init__(*args, **kwargs)

    def to_python(self, value: Any) -> Any:
        if not self.disabled and value in self.empty_values:
            return self.empty()
        return super().to_python(value)


class EmptyJSONAdminMixin:
    """Form fields of NOT NULL JSON columns with a default are `DefaultingJSONField`s (the
    fields a ModelAdmin's form builds from the model, its `Meta.widgets` kept)."""

    def formfield_for_dbfield(self, db_field: Any, request: Any, **kwargs: Any) -> Any:
        if isinstance(db_field, models.JSONField) and not db_field.null \
                and db_field.has_default():
            kwargs.setdefault("form_class", DefaultingJSONField)
            if kwargs["form_class"] is DefaultingJSONField:
                kwargs["empty"] = db_field.get_default
        return super().formfield_for_dbfield(db_field, request, **kwargs)  # type: ignore[misc]


# the admin's imports (django-import-export) -----------------------------------------------


class ImportForm(import_forms.ImportForm):
    """The admin's import form, refusing a file over `IMPORT_MAX_BYTES` with the reason."""

    def clean_import_file(self) -> Any:
        upload = self.cleaned_data["import_file"]
        try:
            check_size(upload.size, max_import_bytes(), "IMPORT_MAX_BYTES")
        except TooLarge as exc:
            raise forms.ValidationError(str(exc.detail)) from None
        return upload


class BoundedImportMixin:
    """For every `ImportExportModelAdmin` of the project (tests/security/test_system_imports.py
    walks the admin site): the admin imports only the formats read within the budgets (CSV,
    XLSX; tablib reads XLS, ODS, TSV, JSON and YAML whole, so they are export formats only),
    the import form checks the file size, and a file the budgets refuse is reported with the
    reason (not only the exception's name)."""

    import_form_class = ImportForm

    @property
    def import_formats(self) -> list[type]:
        return list(BOUNDED_IMPORT_FORMATS)

    def add_data_read_fail_error_to_form(self, form: Any, e: Exception) -> None:
        if isinstance(e, UnreadableFile):
            form.add_error("import_file", str(e))
            return
        super().add_data_read_fail_error_to_form(form, e)  # type: ignore[misc]
