"""Helpers of the RBAC security tests (review H2-H4): fixtures shared with tests/system/,
the rights a user effectively has, admin forms turned back into POST data, CSV uploads.

Test modules import the fixtures they use (`org_fixture` is the fixture `org`)."""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest
from django import forms
from django.core.files.uploadedfile import SimpleUploadedFile

from tests.system.conftest import Org

__all__ = ["Org", "admin_form", "csv_upload", "fast_hasher", "form_data", "org_fixture",
           "own_cache_prefix", "rights", "within"]


@pytest.fixture(autouse=True)
def fast_hasher(settings: Any) -> None:
    """For the browser tests: tests/conftest.py leaves slow tests the platform's hashers, but
    their live server runs in this process, so a fast hasher applies to it and keeps the
    frequent logins quick (other tests get one from tests/conftest.py)."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def own_cache_prefix(settings: Any, redis_prefix: str) -> None:
    """The Django cache (lockout counters, sessions) of this test only."""
    caches = {**settings.CACHES}
    caches["default"] = {**caches["default"], "KEY_PREFIX": redis_prefix + "cache"}
    settings.CACHES = caches


@pytest.fixture(name="org")
def org_fixture(db: Any) -> Org:
    """Departments A (A1 below it) and B, and helpers to make users with roles."""
    return Org()


def rights(user: Any) -> dict[str, Any]:
    """What `user` can do, read afresh from the database (no cached permission or scope):
    the superuser and staff flags, every permission code (roles, menus, groups, direct),
    the all scope and the departments reached."""
    from webapp.system.models import User
    from webapp.system.scope import department_queryset, user_scope

    fresh = User.objects.get(pk=user.pk)
    return {
        "superuser": fresh.is_superuser,
        "staff": fresh.is_staff,
        "permissions": frozenset(fresh.get_all_permissions()),
        "everything": user_scope(fresh).everything,
        "departments": frozenset(department_queryset(fresh).values_list("pk", flat=True)),
    }


def within(small: dict[str, Any], big: dict[str, Any]) -> bool:
    """Does `small` (rights) hold nothing that `big` does not?"""
    return ((not small["superuser"] or big["superuser"])
            and (not small["staff"] or big["staff"])
            and small["permissions"] <= big["permissions"]
            and (not small["everything"] or big["everything"])
            and (big["everything"] or small["departments"] <= big["departments"]))


def form_data(form: forms.BaseForm) -> dict[str, Any]:
    """The POST body a browser sends for `form` as rendered (files and disabled fields
    left out, unticked boxes absent)."""
    data: dict[str, Any] = {}
    for name, field in form.fields.items():
        if field.disabled or isinstance(field, forms.FileField):
            continue
        value = form[name].value()
        if isinstance(field, forms.BooleanField):
            if value:
                data[name] = "on"
        elif isinstance(value, list | tuple):
            data[name] = [str(v) for v in value]
        elif value is not None:
            data[name] = value
    return data


def admin_form(client: Any, url: str) -> forms.BaseForm:
    """The form of an admin add or change page, as `client`'s user gets it."""
    page = client.get(url)
    assert page.status_code == 200, (url, page.status_code)
    return page.context["adminform"].form


def csv_upload(rows: list[dict[str, Any]], name: str = "import.csv") -> SimpleUploadedFile:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return SimpleUploadedFile(name, buffer.getvalue().encode(), content_type="text/csv")
