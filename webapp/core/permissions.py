"""API permissions: Django model permissions (with `view` required for reads as well), which
users get from their roles (`webapp.system.backends.RoleBackend`: role permissions plus the
permission codes of the role's menus and buttons).

A view can name the permissions of its extra actions instead of the method-based default:
`action_permissions = {"force_logout": ["system.logout_loginsession"]}`.
"""

from typing import Any

from django.utils.translation import gettext_lazy as _
from rest_framework import status
from rest_framework.exceptions import APIException
from rest_framework.permissions import DjangoModelPermissions


class PasswordChangeRequired(APIException):
    status_code = status.HTTP_403_FORBIDDEN
    default_detail = _("Change your password first (POST /api/v1/auth/password/).")
    default_code = "password_change_required"


def _check_password_age(user: Any) -> None:
    if getattr(user, "password_change_required", False):
        raise PasswordChangeRequired()


class ModelPermissions(DjangoModelPermissions):
    perms_map = {
        "GET": ["%(app_label)s.view_%(model_name)s"],
        "OPTIONS": [],
        "HEAD": ["%(app_label)s.view_%(model_name)s"],
        "POST": ["%(app_label)s.add_%(model_name)s"],
        "PUT": ["%(app_label)s.change_%(model_name)s"],
        "PATCH": ["%(app_label)s.change_%(model_name)s"],
        "DELETE": ["%(app_label)s.delete_%(model_name)s"],
    }

    def has_permission(self, request: Any, view: Any) -> bool:
        user = request.user
        if user and user.is_authenticated:
            _check_password_age(user)
        required = getattr(view, "action_permissions", {}).get(getattr(view, "action", None))
        if required is None:
            return super().has_permission(request, view)
        return bool(user and user.is_authenticated and user.has_perms(required))


class IsAuthenticated(ModelPermissions):
    """Any signed-in user (their own profile, messages, keys); still honours
    `action_permissions`."""

    def has_permission(self, request: Any, view: Any) -> bool:
        required = getattr(view, "action_permissions", {}).get(getattr(view, "action", None))
        user = request.user
        if not (user and user.is_authenticated):
            return False
        return required is None or user.has_perms(required)
