"""The admin site: ThingLinks navigation (system, devices, products, rules, monitoring), the
lockout-aware login form and the per-user language switch."""

from __future__ import annotations

import contextlib
from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.http import HttpRequest, HttpResponseRedirect
from django.urls import path
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_POST

from webapp.core.context import client_address

# Navigation groups: (label, key, [app labels or "app.model" labels]); first match wins.
NAVIGATION: list[tuple[Any, str, list[str]]] = [
    (_("Monitoring"), "monitoring", [
        "system.loginsession", "system.operationlog", "system.loginlog", "system.taskrun",
        "django_celery_beat", "telemetry"]),
    (_("Devices"), "devices", ["devices"]),
    (_("Products"), "products", ["products"]),
    (_("Rules"), "rules", ["rules"]),
    (_("System"), "system", ["system", "auth"]),
]


class LockoutAuthenticationForm(AdminAuthenticationForm):
    """Says so when a (username, address) pair is locked out instead of "wrong password"."""

    error_messages = {
        **AdminAuthenticationForm.error_messages,
        "locked": _("Too many failed logins: this account is locked from your address for a "
                    "while. Try again later."),
    }

    def clean(self) -> dict[str, Any]:
        from webapp.system import lockout

        username = self.cleaned_data.get("username")
        if username and lockout.is_locked(username, client_address(self.request)):
            with contextlib.suppress(forms.ValidationError):  # logs the attempt as locked
                super().clean()
            raise forms.ValidationError(self.error_messages["locked"], code="locked")
        return super().clean()


class ThingLinksAdminSite(admin.AdminSite):
    site_header = _("ThingLinks")
    site_title = _("ThingLinks")
    index_title = _("Console")
    login_form = LockoutAuthenticationForm

    def get_app_list(self, request: HttpRequest, app_label: str | None = None) -> list:
        apps = super().get_app_list(request, app_label)
        if app_label is not None:
            return apps
        groups: dict[str, dict[str, Any]] = {}
        order = [key for _label, key, _members in NAVIGATION]
        rest = []
        for app in apps:
            for model in app["models"]:
                label = f"{app['app_label']}.{model['object_name'].lower()}"
                key = next((key for _l, key, members in NAVIGATION
                            if label in members or app["app_label"] in members), None)
                if key is None:
                    rest.append((app, model))
                    continue
                name = next(str(lbl) for lbl, k, _m in NAVIGATION if k == key)
                group = groups.setdefault(key, {
                    "name": name, "app_label": key, "app_url": app["app_url"],
                    "has_module_perms": True, "models": []})
                group["models"].append(model)
        extra: dict[str, dict[str, Any]] = {}
        for app, model in rest:
            extra.setdefault(app["app_label"], {**app, "models": []})["models"].append(model)
        return [groups[key] for key in order if key in groups] + list(extra.values())

    def get_urls(self) -> list:
        return [path("language/", self.admin_view(set_language), name="set_language"),
                *super().get_urls()]


@require_POST
def set_language(request: HttpRequest) -> HttpResponseRedirect:
    """Save the signed-in user's language and switch to it."""
    from django.conf import settings
    from django.utils import translation

    from webapp.system import actions

    language = request.POST.get("language", "")
    if language not in dict(settings.LANGUAGES):
        language = ""
    user: Any = request.user
    actions.update_user(acting_user=user, user=user, data={"language": language})
    target = request.POST.get("next") or "/admin/"
    if not url_has_allowed_host_and_scheme(target, {request.get_host()},
                                           require_https=request.is_secure()):
        target = "/admin/"
    response = HttpResponseRedirect(target)
    response.set_cookie(settings.LANGUAGE_COOKIE_NAME,
                        language or translation.get_language_from_request(request),
                        samesite="Lax")
    return response
