"""Which product templates a user sees (API, admin, a new product's template): the shared ones
(no department) and those of the departments in their data scope."""

from __future__ import annotations

from typing import Any

from webapp.system import scope


def visible_templates(queryset: Any, user: Any) -> Any:
    """`queryset` limited to the templates `user` sees."""
    return (scope.restrict(queryset, user) | queryset.filter(department=None)).distinct()
