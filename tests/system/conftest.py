"""Fixtures for system management tests: an organisation with two departments, users with
roles, and API clients that log in through the API."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest
from django.contrib.auth.models import Permission

PASSWORD = "Pw-test-2468"


@pytest.fixture(autouse=True)
def _own_cache_prefix(settings, redis_prefix):
    """The Django cache (lockout counters, sessions, dictionaries) of this test only."""
    caches = {**settings.CACHES}
    caches["default"] = {**caches["default"], "KEY_PREFIX": redis_prefix + "cache"}
    settings.CACHES = caches


def perms(*codes: str) -> list[Permission]:
    found = []
    for code in codes:
        app_label, codename = code.split(".")
        found.append(Permission.objects.get(content_type__app_label=app_label,
                                            codename=codename))
    return found


class Org:
    """Departments A (with A1 below it) and B, and helpers to make users and roles."""

    def __init__(self) -> None:
        from webapp.system.models import Department

        self.a = Department.objects.create(name="Dept A")
        self.a1 = Department.objects.create(name="Dept A1", parent=self.a)
        self.b = Department.objects.create(name="Dept B")
        self._n = 0

    def role(self, permissions: Iterable[str] = (), scope: str = "all",
             departments: Iterable[Any] = ()) -> Any:
        from webapp.system.models import Role

        self._n += 1
        role = Role.objects.create(code=f"r{self._n}", name=f"Role {self._n}", data_scope=scope)
        role.permissions.set(perms(*permissions))
        role.departments.set(list(departments))
        return role

    def user(self, username: str, department: Any = None, permissions: Iterable[str] = (),
             scope: str = "all", roles: Iterable[Any] = (), staff: bool = False,
             **extra: Any) -> Any:
        from webapp.system.models import User

        user = User.objects.create_user(username, f"{username}@example.com", PASSWORD,
                                        department=department, is_staff=staff, **extra)
        roles = list(roles)
        if permissions or not roles:
            roles.append(self.role(permissions, scope))
        user.roles.set(roles)
        return user


@pytest.fixture
def org(db):
    return Org()


def login(client: Any, username: str, password: str = PASSWORD, **extra: Any) -> Any:
    return client.post("/api/v1/auth/token/", {"username": username, "password": password},
                       format="json", **extra)


@pytest.fixture
def api_as():
    """`api_as(user)`: an APIClient holding a JWT of `user`, obtained through the API."""
    from rest_framework.test import APIClient

    def make(user: Any) -> Any:
        client = APIClient()
        response = login(client, user.username)
        assert response.status_code == 200, response.content
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {response.json()['access']}")
        client.tokens = response.json()
        return client

    return make


THERMO_LITE = {
    "identifier": "thermo", "name": "Thermometer", "product_type": "common", "protocol": "mqtt",
    "services": [{"code": "env", "name": "Environment", "properties": [
        {"code": "temperature", "datatype": "decimal", "min": -40, "max": 125}],
        "commands": [{"code": "set_interval", "requests": [
            {"code": "seconds", "datatype": "int", "min": 1, "max": 3600}]}]}],
}


def make_product(identifier: str, department: Any = None, created_by: Any = None) -> Any:
    from webapp.products import actions

    product = actions.create_product(acting_user=created_by, data={
        **THERMO_LITE, "identifier": identifier, "name": f"Product {identifier}",
        "services": [dict(s) for s in THERMO_LITE["services"]]})
    if department is not None:
        product.department = department
        product.save(update_fields=["department"])
    return product


def make_device(identifier: str, product: Any, department: Any = None,
                created_by: Any = None) -> Any:
    from webapp.devices import actions

    device, _secret = actions.create_device(acting_user=created_by, product=product,
                                            identifier=identifier, department=department)
    return device
