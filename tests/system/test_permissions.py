"""The permission matrix of the whole API: 401 without credentials, 403 without the
permission, success with exactly the permission — and no route without a case."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from rest_framework.test import APIClient

from tests.system.conftest import PASSWORD, make_device, make_product
from tests.system.permission_cases import ANY_USER, CASES, PUBLIC, Case

pytestmark = pytest.mark.django_db


def _all_cases() -> list[Case]:
    """This area's cases plus those of other areas (`tests/<area>/permission_cases.py`)."""
    cases = list(CASES)
    tests_dir = Path(__file__).resolve().parent.parent
    for module in pkgutil.iter_modules([str(tests_dir)]):
        if module.name == "system" or not (tests_dir / module.name /
                                            "permission_cases.py").exists():
            continue
        other = importlib.import_module(f"tests.{module.name}.permission_cases")
        cases.extend(getattr(other, "CASES", []))
    return cases


ALL_CASES = _all_cases()


class Ctx:
    """Objects a case needs, created on demand (owned by department A, made by the admin)."""

    password = PASSWORD

    def __init__(self, org: Any, admin: Any, actor: Any) -> None:
        self.org, self.admin, self.actor, self.n = org, admin, actor, 0
        self._cache: dict[str, Any] = {}

    def once(self, key: str, make: Any) -> Any:
        """The object `make()` builds, built once per test (for other areas' cases)."""
        return self._once(key, make)

    def _once(self, key: str, make: Any) -> Any:
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    @property
    def plain_user(self) -> Any:
        return self.actor

    def refresh_token(self) -> str:
        response = APIClient().post("/api/v1/auth/token/", {
            "username": self.actor.username, "password": PASSWORD}, format="json")
        return response.json()["refresh"]

    def other_user(self) -> Any:
        return self._once("user", lambda: self.org.user("someone", self.org.a))

    def leaf_department(self) -> Any:
        from webapp.system.models import Department

        return self._once("dept", lambda: Department.objects.create(name="Leaf",
                                                                    parent=self.org.a))

    def position(self) -> Any:
        from webapp.system.models import Position

        return self._once("pos", lambda: Position.objects.create(code="eng", name="Engineer"))

    def role(self) -> Any:
        from webapp.system.models import Role

        return self._once("role", lambda: Role.objects.create(code="extra", name="Extra"))

    def menu(self) -> Any:
        from webapp.system.models import Menu

        return self._once("menu", lambda: Menu.objects.create(name="Extra page"))

    def dictionary(self) -> Any:
        from webapp.system.models import DictType

        return self._once("dict", lambda: DictType.objects.create(code="colours",
                                                                  name="Colours"))

    def dict_item(self) -> Any:
        from webapp.system.models import DictItem

        return self._once("item", lambda: DictItem.objects.create(
            dict_type=self.dictionary(), value="red", label="Red"))

    def parameter(self) -> Any:
        from webapp.system.models import Parameter

        return self._once("param", lambda: Parameter.objects.create(
            key="test.param", name="P", value="1", value_type="integer"))

    def notice(self) -> Any:
        from webapp.system.models import Notice

        return self._once("notice", lambda: Notice.objects.create(title="Hello"))

    def own_message(self) -> Any:
        from webapp.system.models import Message

        return self._once("msg", lambda: Message.objects.create(recipient=self.actor,
                                                                title="Hi"))

    def own_api_key(self) -> Any:
        from webapp.system import actions

        return self._once("key", lambda: actions.create_api_key(
            acting_user=self.actor, user=self.actor, name="k")[0])

    def operation_log(self) -> Any:
        from webapp.system.models import OperationLog

        return self._once("oplog", lambda: OperationLog.objects.create(
            source="api", action="create", app_label="system", model="role"))

    def login_log(self) -> Any:
        from webapp.system.models import LoginLog

        return self._once("loginlog", lambda: LoginLog.objects.create(
            username="x", channel="api", result="success"))

    def online_session(self) -> Any:
        from webapp.system import sessions

        return self._once("session", lambda: sessions.open_session(self.other_user(), "api"))

    def task_run(self) -> Any:
        from webapp.system.models import TaskRun

        return self._once("run", lambda: TaskRun.objects.create(task_id="t1",
                                                                task_name="system.x"))

    def product_payload(self) -> dict[str, Any]:
        from tests.system.conftest import THERMO_LITE

        self.n += 1
        return {**THERMO_LITE, "identifier": f"prod{self.n}", "department": self.org.a.pk}

    def product(self, fresh: bool = False) -> Any:
        if fresh:
            self.n += 1
            return make_product(f"fresh{self.n}", self.org.a)
        return self._once("product", lambda: make_product("thermo", self.org.a))

    def device(self) -> Any:
        return self._once("device", lambda: make_device("dev-1", self.product(), self.org.a))

    def command(self) -> Any:
        from datetime import timedelta

        from django.utils import timezone

        from webapp.devices.models import DeviceCommand

        return self._once("command", lambda: DeviceCommand.objects.create(
            device=self.device(), service="env", command="set_interval",
            params={"seconds": 5}, expires=timezone.now() + timedelta(minutes=5)))


def _request(client: APIClient, case: Case, ctx: Ctx) -> Any:
    kwargs, body = case.make(ctx)
    url = reverse(case.name, kwargs=kwargs)
    if case.query:
        url += "?" + case.query
    return getattr(client, case.method)(url, body, format="json") if body is not None \
        else getattr(client, case.method)(url)


def _client(user: Any) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def admin(db, django_user_model):
    return django_user_model.objects.create_superuser("root", "root@example.com", PASSWORD)


@pytest.mark.parametrize("case", [c for c in ALL_CASES if c.perms != PUBLIC], ids=lambda c: c.id)
def test_unauthenticated(case, org, admin):
    """Without credentials every protected endpoint answers 401 with a stable code."""
    ctx = Ctx(org, admin, org.user("nobody", org.a))
    response = _request(APIClient(), case, ctx)
    assert response.status_code == 401, (case.id, response.content)
    assert response.json()["code"] in ("not_authenticated", "authentication_failed")


@pytest.mark.parametrize("case", [c for c in ALL_CASES if c.perms not in (PUBLIC, ANY_USER)],
                         ids=lambda c: c.id)
def test_without_permission(case, org, admin):
    """Signed in, with every permission except the ones the endpoint needs: 403."""
    everything_else = [f"{p.content_type.app_label}.{p.codename}"
                       for p in Permission.objects.select_related("content_type")
                       if f"{p.content_type.app_label}.{p.codename}" not in case.perms]
    actor = org.user("almost", org.a, permissions=everything_else)
    ctx = Ctx(org, admin, actor)
    response = _request(_client(actor), case, ctx)
    assert response.status_code == 403, (case.id, response.content)
    assert response.json()["code"] == "permission_denied"
    ctx.actor = org.user("bare", org.a, permissions=[])
    assert _request(_client(ctx.actor), case, ctx).status_code == 403


@pytest.mark.parametrize("case", ALL_CASES, ids=lambda c: c.id)
def test_with_permission(case, org, admin, redis_prefix):
    """With exactly the endpoint's permissions (all data in scope) the call succeeds."""
    granted = () if case.perms == PUBLIC else case.perms
    actor = org.user("allowed", org.a, permissions=granted)
    client = APIClient() if case.perms == PUBLIC else _client(actor)
    response = _request(client, case, Ctx(org, admin, actor))
    assert response.status_code in case.ok, (case.id, response.status_code, response.content)


def _api_routes() -> set[str]:
    """Every (URL name, method) served under /api/v1/."""
    found: set[str] = set()

    def walk(patterns: Any, prefix: str) -> None:
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns, prefix + str(pattern.pattern))
                continue
            assert isinstance(pattern, URLPattern)
            route = prefix + str(pattern.pattern)
            if not route.startswith("api/v1/") or "format" in route or \
                    pattern.name == "api-root":
                continue
            callback = pattern.callback
            actions = getattr(callback, "actions", None)
            if actions:
                methods = set(actions) - {"head", "options"}
            else:
                view = getattr(callback, "view_class", None) or getattr(callback, "cls", None)
                methods = {m for m in view.http_method_names
                           if hasattr(view, m) and m not in ("options", "head")} \
                    if view is not None else {"get"}  # a plain Django view
            found.update(f"{pattern.name}:{m}" for m in methods)

    walk(get_resolver().url_patterns, "")
    return found


def test_every_api_route_has_a_permission_case():
    """A new API view without a case in a permission_cases.py fails here."""
    missing = sorted(_api_routes() - {c.id for c in ALL_CASES})
    assert not missing, (f"API routes without a permission test: {missing} — add a Case to "
                         "tests/<area>/permission_cases.py (see tests/system/permission_cases.py)")


def test_cases_name_real_routes():
    """Cases do not rot: each names a route that exists."""
    assert not sorted({c.id for c in ALL_CASES} - _api_routes())
