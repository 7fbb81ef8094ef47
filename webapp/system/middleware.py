"""Admin-session middleware: ends sessions whose login was revoked (forced logout), and
activates the user's own language and time zone."""

from __future__ import annotations

from collections.abc import Callable

from django.contrib.auth import logout
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils import timezone, translation

from webapp.core.zones import user_zone_name
from webapp.system import sessions
from webapp.system.signals import SESSION_ID


class SessionMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            sid = request.session.get(SESSION_ID)
            if sid and not sessions.is_active(sid):
                logout(request)
                return self.get_response(request)
            if getattr(user, "language", ""):
                translation.activate(user.language)
                request.LANGUAGE_CODE = translation.get_language()
            timezone.activate(user_zone_name(user))
            if (getattr(user, "password_change_required", False)
                    and request.path.startswith("/admin/") and not _may_pass(request.path)):
                return redirect("admin:password_change")
        else:
            timezone.deactivate()
        return self.get_response(request)


def _may_pass(path: str) -> bool:
    """Pages a user who must change their password may still open."""
    allowed = [reverse(name) for name in ("admin:password_change", "admin:password_change_done",
                                          "admin:logout", "admin:set_language",
                                          "admin:jsi18n")]
    return path in allowed
