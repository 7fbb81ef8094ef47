"""Authentication backend: login lockout, and permissions from roles and menus."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import Permission
from django.core.exceptions import PermissionDenied

from webapp.core.context import client_address
from webapp.system import lockout


class RoleBackend(ModelBackend):
    """Django's model backend plus:

    - a locked (username, address) pair is refused before the password is checked;
    - a user's permissions include those of their active roles and the permission codes of
      those roles' active menus and buttons (`devices.add_device`, `devices:debug`).
    """

    def authenticate(self, request: Any, username: str | None = None,
                     password: str | None = None, **kwargs: Any) -> Any:
        if username and request is not None and lockout.is_locked(
                username, client_address(request)):
            raise PermissionDenied("locked")
        return super().authenticate(request, username=username, password=password, **kwargs)

    def _get_role_permissions(self, user_obj: Any) -> set[str]:
        from webapp.system.models import Menu

        if not hasattr(user_obj, "_role_perm_cache"):
            perms = Permission.objects.filter(
                roles__users=user_obj, roles__is_active=True,
            ).values_list("content_type__app_label", "codename")
            codes = Menu.objects.filter(
                roles__users=user_obj, roles__is_active=True, is_active=True,
            ).exclude(permission="").values_list("permission", flat=True)
            user_obj._role_perm_cache = {f"{app}.{name}" for app, name in perms} | set(codes)
        return user_obj._role_perm_cache

    def get_all_permissions(self, user_obj: Any, obj: Any = None) -> set[str]:
        if not user_obj.is_active or user_obj.is_anonymous or obj is not None:
            return set()
        return {*super().get_all_permissions(user_obj, obj),
                *self._get_role_permissions(user_obj)}


def forget_permissions(user_obj: Any) -> None:
    """Drop the permission caches on a user object (after a role change)."""
    for name in ("_role_perm_cache", "_perm_cache", "_user_perm_cache", "_group_perm_cache",
                 "_tl_scope"):
        user_obj.__dict__.pop(name, None)
