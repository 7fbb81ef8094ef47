"""Self-service password reset by email (the admin login page links to it)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import views as auth_views
from django.urls import path

from webapp.system import actions


class PasswordResetConfirmView(auth_views.PasswordResetConfirmView):
    """Setting a new password from the emailed link ends every login of the user."""

    def form_valid(self, form: Any) -> Any:
        response = super().form_valid(form)
        actions.logout_user(acting_user=form.user, user=form.user)
        return response


urlpatterns = [
    path("admin/password_reset/", auth_views.PasswordResetView.as_view(),
         name="admin_password_reset"),
    path("admin/password_reset/done/", auth_views.PasswordResetDoneView.as_view(),
         name="password_reset_done"),
    path("reset/<uidb64>/<token>/", PasswordResetConfirmView.as_view(),
         name="password_reset_confirm"),
    path("reset/done/", auth_views.PasswordResetCompleteView.as_view(),
         name="password_reset_complete"),
]
