"""`GET <list>/export/?file_format=csv|xlsx|json`: the filtered (and data-scoped) list as a
file, rendered from the view's serializer. Part of every scoped ViewSet."""

from __future__ import annotations

import json
from typing import Any

import tablib
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request

from webapp.core.spreadsheet import escape_cell

MAX_ROWS = 50_000
CONTENT_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "json": "application/json",
}


def _cell(value: Any) -> Any:
    if isinstance(value, dict | list):
        value = json.dumps(value, ensure_ascii=False)
    return escape_cell(value)  # a spreadsheet must not run a cell as a formula


class ExportMixin:
    export_basename: str | None = None

    @extend_schema(
        parameters=[OpenApiParameter("file_format", str, enum=list(CONTENT_TYPES),
                                     description="csv (default), xlsx or json")],
        responses={(200, "text/csv"): OpenApiTypes.BINARY})
    @action(detail=False, methods=["get"], url_path="export")
    def export(self: Any, request: Request) -> HttpResponse:
        """The filtered list as a file (up to 50,000 rows)."""
        file_format = request.query_params.get("file_format", "csv")
        if file_format not in CONTENT_TYPES:
            raise ValidationError({"file_format": ["csv, xlsx or json"]})
        queryset = self.filter_queryset(self.get_queryset())[:MAX_ROWS]
        rows = self.get_serializer(queryset, many=True).data
        name = self.export_basename or getattr(self, "basename", None) or "export"
        if file_format == "json":
            body: bytes | str = json.dumps(rows, ensure_ascii=False, default=str)
        else:
            headers = list(rows[0].keys()) if rows else []
            data = tablib.Dataset(headers=headers)
            for row in rows:
                data.append([_cell(row.get(h)) for h in headers])
            body = data.export(file_format)
        response = HttpResponse(body, content_type=CONTENT_TYPES[file_format])
        response["Content-Disposition"] = f'attachment; filename="{name}.{file_format}"'
        return response
