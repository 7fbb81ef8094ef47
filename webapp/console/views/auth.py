"""Signing in and out, the language switch and one's own password."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import update_session_auth_hash
from django.contrib.auth.views import LoginView, LogoutView
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import translation
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from webapp.console.access import console_view
from webapp.core.errors import DomainError
from webapp.system import actions as system_actions


class ConsoleLoginView(LoginView):
    template_name = "console/login.html"
    redirect_authenticated_user = True

    def get_default_redirect_url(self) -> str:
        return reverse("console:dashboard")


class ConsoleLogoutView(LogoutView):
    def get_default_redirect_url(self) -> str:
        return reverse("console:login")


def _safe_next(request: HttpRequest, fallback: str) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    if target and url_has_allowed_host_and_scheme(target, {request.get_host()},
                                                  require_https=request.is_secure()):
        return target
    return fallback


@require_POST
def language(request: HttpRequest) -> HttpResponse:
    """Switch the language: a cookie, and the signed-in user's own setting."""
    code = request.POST.get("language", "")
    response = HttpResponseRedirect(_safe_next(request, reverse("console:dashboard")))
    if code not in dict(settings.LANGUAGES):
        return response
    user: Any = request.user
    if user.is_authenticated and getattr(user, "language", code) != code:
        system_actions.update_user(acting_user=user, user=user, data={"language": code})
    translation.activate(code)
    response.set_cookie(settings.LANGUAGE_COOKIE_NAME, code,
                        max_age=settings.LANGUAGE_COOKIE_AGE, samesite="Lax",
                        secure=request.is_secure())
    return response


@console_view(password_page=True)
def password(request: HttpRequest) -> HttpResponse:
    """Change one's own password (the current one is required)."""
    user: Any = request.user
    errors: list[str] = []
    if request.method == "POST":
        new = request.POST.get("new_password", "")
        if new != request.POST.get("new_password_again", ""):
            errors.append(_("The two new passwords differ."))
        else:
            try:
                system_actions.set_password(user=user, password=new,
                                            old_password=request.POST.get("old_password", ""))
            except DomainError as exc:
                errors.extend(_error_lines(exc))
            else:
                update_session_auth_hash(request, user)
                messages.success(request, _("Your password was changed."))
                return redirect(_safe_next(request, reverse("console:dashboard")))
    return TemplateResponse(request, "console/password.html", {
        "errors": errors, "next": _safe_next(request, ""),
        "must_change": getattr(user, "must_change_password", False)})


def _error_lines(exc: DomainError) -> list[str]:
    nested = exc.extra.get("errors")
    if isinstance(nested, dict):
        return [str(line) for lines in nested.values() for line in
                (lines if isinstance(lines, list) else [lines])]
    return [str(exc.detail)]
