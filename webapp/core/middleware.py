"""Request middleware: the operation context (who acts, from where) for every request, and
the refusal of NUL characters in query strings and forms."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest

from webapp.core.context import operation_context


class OperationContextMiddleware:
    """Changes made while serving a request are attributed to its user, address and source."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        source = "api" if request.path.startswith("/api/") else "admin"
        with operation_context(source, request=request):
            return self.get_response(request)


class RefuseNulMiddleware:
    """Refuse a query string or form that carries a NUL character (400 with the reason).

    No identifier, filter or text of the platform holds one, and PostgreSQL refuses NUL in
    text parameters with an error that would otherwise surface as a 500 from whichever view
    passed it to a query first.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        query = request.META.get("QUERY_STRING", "")
        carries = "\x00" in query or "%00" in query
        # Only url-encoded forms: reading a multipart body here would leave the views that
        # read `request.body` nothing to read.
        if not carries and request.method == "POST" and request.content_type == \
                "application/x-www-form-urlencoded":
            carries = any("\x00" in value for values in request.POST.lists()
                          for value in values[1]) or any("\x00" in key for key in request.POST)
        if carries:
            return HttpResponseBadRequest("NUL characters are not accepted.",
                                          content_type="text/plain; charset=utf-8")
        return self.get_response(request)
