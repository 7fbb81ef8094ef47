"""The menu tree a user sees, and trees of departments."""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext

from webapp.system.choices import MenuType
from webapp.system.models import Department, Menu


def build_tree(rows: list[dict[str, Any]], parent_key: str = "parent") -> list[dict[str, Any]]:
    """Nest flat rows (each with `id` and a parent id) into `children` lists, keeping order."""
    nodes = {row["id"]: {**row, "children": []} for row in rows}
    roots: list[dict[str, Any]] = []
    for node in nodes.values():
        parent = nodes.get(node[parent_key])
        (parent["children"] if parent else roots).append(node)
    return roots


def menus_for(user: Any, *, include_buttons: bool = False) -> list[dict[str, Any]]:
    """The active, visible menus the user's roles grant (all of them for a superuser)."""
    queryset = Menu.objects.filter(is_active=True, is_visible=True)
    if not include_buttons:
        queryset = queryset.exclude(menu_type=MenuType.BUTTON)
    if not user.is_superuser:
        queryset = queryset.filter(roles__users=user, roles__is_active=True).distinct()
    rows: list[Any] = list(queryset.order_by("order", "id").values(
        "id", "parent", "name", "menu_type", "permission", "path", "icon"))
    for row in rows:
        row["name"] = gettext(row["name"])  # built-in menu names are in the catalogue
    return build_tree(rows)


def department_tree(queryset: Any) -> list[dict[str, Any]]:
    rows: list[Any] = list(queryset.order_by("order", "name").values(
        "id", "name", "parent", "is_active"))
    return build_tree(rows)


def departments() -> Any:
    return Department.objects.all()
