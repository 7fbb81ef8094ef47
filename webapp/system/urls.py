"""Self-service password reset by email (the admin login page links to it)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth import forms as auth_forms
from django.contrib.auth import views as auth_views
from django.urls import path

from webapp.system import actions


class PasswordResetForm(auth_forms.PasswordResetForm):
    """The emailed link points at PUBLIC_BASE_URL, never at the request's Host header (which
    a client chooses: a poisoned link would hand the reset token to its host)."""

    def save(self, *args: Any, **kwargs: Any) -> None:
        base = urlsplit(str(settings.PUBLIC_BASE_URL))
        kwargs["domain_override"] = base.netloc
        kwargs["use_https"] = base.scheme == "https"
        super().save(*args, **kwargs)


class PasswordResetConfirmView(auth_views.PasswordResetConfirmView):
    """Setting a new password from the emailed link ends every login of the user."""

    def form_valid(self, form: Any) -> Any:
        response = super().form_valid(form)
        actions.logout_user(acting_user=form.user, user=form.user)
        return response


urlpatterns = [
    path("admin/password_reset/",
         auth_views.PasswordResetView.as_view(form_class=PasswordResetForm),
         name="admin_password_reset"),
    path("admin/password_reset/done/", auth_views.PasswordResetDoneView.as_view(),
         name="password_reset_done"),
    path("reset/<uidb64>/<token>/", PasswordResetConfirmView.as_view(),
         name="password_reset_confirm"),
    path("reset/done/", auth_views.PasswordResetCompleteView.as_view(),
         name="password_reset_complete"),
]
