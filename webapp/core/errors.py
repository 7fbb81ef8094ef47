"""Typed domain errors with stable codes, rendered as JSON by one handler (docs/api.md)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.http import Http404
from django.utils.translation import gettext_lazy as _
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler


class DomainError(Exception):
    """A refusal a client can act on: a stable `code`, an HTTP status and a human message."""

    code = "invalid"
    http_status: int = status.HTTP_400_BAD_REQUEST
    default_detail: Any = _("The request is invalid.")

    def __init__(self, detail: Any = None, *, code: str | None = None,
                 extra: dict[str, Any] | None = None) -> None:
        self.detail = detail if detail is not None else self.default_detail
        if code:
            self.code = code
        self.extra = extra or {}
        super().__init__(str(self.detail))


class NotFound(DomainError):
    code = "not_found"
    http_status = status.HTTP_404_NOT_FOUND
    default_detail = _("Not found.")


class Conflict(DomainError):
    code = "conflict"
    http_status = status.HTTP_409_CONFLICT
    default_detail = _("The resource changed or already exists.")


class TooLarge(DomainError):
    """An upload or a request body over its size, row or cell budget (HTTP 413)."""

    code = "too_large"
    http_status = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = _("The request is too large.")


class Busy(DomainError):
    """The server is at the limit of some resource for the moment: retry later (HTTP 429)."""

    code = "busy"
    http_status = status.HTTP_429_TOO_MANY_REQUESTS
    default_detail = _("Too many requests of this kind at the moment; retry later.")


_DRF_CODES = {
    exceptions.NotAuthenticated: "not_authenticated",
    exceptions.AuthenticationFailed: "authentication_failed",
    exceptions.PermissionDenied: "permission_denied",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.Throttled: "throttled",
    exceptions.ValidationError: "invalid",
    exceptions.ParseError: "parse_error",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
}


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Render every API error as `{"code": …, "detail": …}` (plus `errors` for field errors)."""
    if isinstance(exc, RequestDataTooBig):
        exc = TooLarge(_("the request body is larger than {max} bytes "
                         "(DATA_UPLOAD_MAX_MEMORY_SIZE)").format(
                             max=settings.DATA_UPLOAD_MAX_MEMORY_SIZE), code="body_too_large")
    if isinstance(exc, DomainError):
        body = {"code": exc.code, "detail": exc.detail, **exc.extra}
        return Response(body, status=exc.http_status)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    code = next((c for cls, c in _DRF_CODES.items() if isinstance(exc, cls)), "error")
    if isinstance(exc, exceptions.APIException) and code == "error":
        code = exc.default_code
    if isinstance(exc, exceptions.ValidationError):
        response.data = {"code": "invalid", "detail": str(_("Invalid input.")),
                         "errors": response.data}
    else:
        detail = response.data.get("detail", response.data) if isinstance(
            response.data, dict) else response.data
        response.data = {"code": code, "detail": detail}
    return response
