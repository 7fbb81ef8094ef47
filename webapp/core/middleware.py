"""Request middleware: the operation context (who acts, from where) for every request."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from webapp.core.context import operation_context


class OperationContextMiddleware:
    """Changes made while serving a request are attributed to its user, address and source."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        source = "api" if request.path.startswith("/api/") else "admin"
        with operation_context(source, request=request):
            return self.get_response(request)
