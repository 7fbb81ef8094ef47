"""Signing in and out, the language switch, one's own password and settings."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import update_session_auth_hash
from django.contrib.auth.views import LoginView, LogoutView
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
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
from webapp.core.zones import zone_choices, zone_named
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


@console_view()
def profile(request: HttpRequest) -> HttpResponse:
    """One's own settings: name, e-mail, language and time zone (times on every page and the
    calendar days of the charts follow the zone)."""
    user: Any = request.user
    errors: dict[str, str] = {}
    if request.method == "POST":
        # A field the form does not carry is left as it is.
        data = {name: request.POST.get(name, "").strip()[:limit] for name, limit in
                (("nickname", 100), ("email", 254), ("language", 10), ("time_zone", 64))
                if name in request.POST}
        if data.get("language") and data["language"] not in dict(settings.LANGUAGES):
            errors["language"] = _("Choose one of the languages offered.")
        if data.get("time_zone") and zone_named(data["time_zone"]) is None:
            errors["time_zone"] = _("Unknown time zone: use an IANA name like Asia/Shanghai.")
        if data.get("email"):
            try:
                validate_email(data["email"])
            except ValidationError:
                errors["email"] = _("Enter a valid e-mail address.")
        # Password reset mails go to this address: moving it needs the current password, so
        # that a stolen session cannot take the account over for good.
        if data.get("email") and "email" not in errors and data["email"] != user.email \
                and not user.check_password(request.POST.get("current_password", "")):
            errors["email"] = _("Enter your current password to change the e-mail address.")
        if not errors:
            system_actions.update_user(acting_user=user, user=user, data=data)
            if data.get("language"):
                translation.activate(data["language"])
            messages.success(request, _("Your settings were saved."))
            response = redirect(reverse("console:profile"))
            if data.get("language"):
                response.set_cookie(settings.LANGUAGE_COOKIE_NAME, data["language"],
                                    max_age=settings.LANGUAGE_COOKIE_AGE, samesite="Lax",
                                    secure=request.is_secure())
            return response
    values = {"nickname": user.nickname, "email": user.email, "language": user.language,
              "time_zone": user.time_zone}
    if errors:
        values.update(data)
    return TemplateResponse(request, "console/profile.html", {
        "values": values, "errors": errors, "zones": zone_choices(),
        "default_zone": settings.TIME_ZONE}, status=400 if errors else 200)
