"""No admin form and no API serializer lets a scoped operator raise his own rights (issue 12).

Rights come from a handful of models: users (flags, roles, groups, direct permissions),
roles (permissions, menus, data scope, custom departments, activation), menus (their
permission code, activation) and Django groups. For each of them, every field that can
carry a right is submitted through every admin change form and every API endpoint that
edits it, one field at a time, by an operator who holds every permission except the
`delete_*` ones and reaches department A only; the operator's rights, read afresh, must not
grow. The same submission by a superuser is the control: it must grow the operator's rights
where the field is a real lever, so the escalation attempts are known to be the right ones.
A user created by the operator must hold no more than the operator.

Any other admin or serializer field carrying one of these names must be listed in `EXEMPT`
with the reason it grants nothing; a new one fails here until it is guarded (and added to
the grant models) or explained.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth.models import Group, Permission
from django.test import Client, RequestFactory
from rest_framework import serializers

from tests.security.rbac import (  # noqa: F401  (fixtures)
    form_data,
    org_fixture,
    own_cache_prefix,
    rights,
    within,
)
from tests.security.scoped_operator import jwt_client
from tests.system.conftest import PASSWORD
from webapp.system.models import Menu, Role, User
from webapp.system.serializers import PermissionField

pytestmark = pytest.mark.django_db

# Field names that carry rights (`is_active` only on the grant models, where it switches a
# role or a menu, and so its grants, on).
RIGHT_FIELDS = ("is_superuser", "is_staff", "user_permissions", "groups", "roles",
                "permissions", "menus", "data_scope", "departments", "permission")
GRANT_MODELS = {"system.user", "system.role", "system.menu", "auth.group",
                "auth.permission"}

# Fields named like a right that grant nothing, with the reason.
EXEMPT = {
    ("system.notice", "roles"): "a notice's audience (who receives it)",
    ("system.notice", "departments"): "a notice's audience (who receives it)",
    ("rules.notificationchannel", "roles"): "a channel's recipients",
    ("rules.notificationchannel", "departments"): "a channel's recipients",
    ("devices.device", "groups"): "device groups a device belongs to, not auth groups",
}

WITHHELD = ("system.delete_user", "devices.delete_device")

# The objects the operator could use to raise his rights, by name: (model, fields to try).
TARGETS = {
    "self": User,            # the operator's own account
    "own-role": Role,        # his active role (custom scope: department A)
    "dormant-role": Role,    # an inactive role of his that holds the withheld permissions
    "page": Menu,            # an active menu of his role without a code
    "sleeper": Menu,         # an inactive menu of another role of his, its code withheld
    "crew": Group,           # a Django group he is in, without permissions
}
API_ROUTES = {User: "users", Role: "roles", Menu: "menus"}

# (surface, target, field) whose control submission must grow the operator's rights.
LEVERS = {
    *(("admin", "self", f) for f in ("is_superuser", "user_permissions", "groups", "roles")),
    *(("api", "self", f) for f in ("roles", "is_staff")),
    *((s, "own-role", f) for s in ("admin", "api")
      for f in ("permissions", "menus", "data_scope", "departments")),
    *((s, t, "is_active") for s in ("admin", "api") for t in ("dormant-role", "sleeper")),
    ("admin", "page", "permission"), ("api", "page", "permission"),
    ("admin", "crew", "permissions"),
}


def _label(model: Any) -> str:
    return model._meta.label_lower


def _model_fields(model: Any) -> set[str]:
    return {f.name for f in model._meta.get_fields() if not f.auto_created}


def _candidate_fields(model: Any) -> list[str]:
    """The right-carrying fields of `model`, or declared on its admin form or serializer."""
    names = _model_fields(model)
    model_admin = admin.site._registry.get(model)
    for form in (getattr(model_admin, "form", None), getattr(model_admin, "add_form", None)):
        names |= set(getattr(form, "base_fields", {}))
    return [f for f in (*RIGHT_FIELDS, "is_active") if f in names]


def _cases() -> list[tuple[str, str, str]]:
    cases = []
    for surface in ("admin", "api"):
        for target, model in TARGETS.items():
            if surface == "api" and model not in API_ROUTES:
                continue
            cases.extend((surface, target, f) for f in _candidate_fields(model))
    return cases


class World:
    """The operator, the objects he could abuse, and the prizes (a role, a group and a menu
    carrying the withheld permissions and the all scope)."""

    def __init__(self, org: Any, staff: bool) -> None:
        self.org = org
        withheld = [self.perm(code) for code in WITHHELD]
        self.withheld = withheld
        held = Permission.objects.exclude(codename__startswith="delete_")
        own_role = Role.objects.create(code="ops-role", name="Ops", data_scope="custom")
        own_role.permissions.set(held)
        own_role.departments.set([org.a])
        self.page = Menu.objects.create(name="Page", menu_type="page")
        self.sleeper = Menu.objects.create(name="Sleeper", menu_type="button",
                                           permission=WITHHELD[0], is_active=False)
        own_role.menus.set([self.page])
        menu_role = Role.objects.create(code="ops-menus", name="Ops menus",
                                        data_scope="custom")
        menu_role.departments.set([org.a])
        menu_role.menus.set([self.sleeper])
        dormant = Role.objects.create(code="dormant", name="Dormant", data_scope="all",
                                      is_active=False)
        dormant.permissions.set(withheld)
        self.operator = org.user("ops", org.a, roles=[own_role, menu_role, dormant],
                                 staff=staff)
        self.crew = Group.objects.create(name="crew")
        self.operator.groups.add(self.crew)
        self.prize_role = Role.objects.create(code="prize", name="Prize", data_scope="all")
        self.prize_role.permissions.set(withheld)
        self.prize_group = Group.objects.create(name="prize")
        self.prize_group.permissions.set(withheld)
        self.prize_menu = Menu.objects.create(name="Prize", menu_type="button",
                                              permission=WITHHELD[0])
        self.root = User.objects.create_superuser("root", "root@example.com", PASSWORD)
        self.targets = {"self": self.operator, "own-role": own_role, "dormant-role": dormant,
                        "page": self.page, "sleeper": self.sleeper, "crew": self.crew}

    @staticmethod
    def perm(code: str) -> Permission:
        app_label, codename = code.split(".")
        return Permission.objects.get(content_type__app_label=app_label, codename=codename)

    def escalation(self, target: Any, field: str) -> Any:
        """The value of `field` that would raise the operator's rights on `target` (model
        instances; the surface encodes them)."""
        def current(name: str) -> list[Any]:
            if target.pk is None or not hasattr(target, name):
                return []
            return list(getattr(target, name).all())

        return {
            "is_superuser": True, "is_staff": True, "is_active": True,
            "user_permissions": current("user_permissions") + self.withheld,
            "groups": [*current("groups"), self.prize_group],
            "roles": [*current("roles"), self.prize_role],
            "permissions": current("permissions") + self.withheld,
            "menus": [*current("menus"), self.prize_menu],
            "data_scope": "all",
            "departments": [*current("departments"), self.org.b],
            "permission": WITHHELD[0],
        }[field]


def _admin_url(obj: Any) -> str:
    return f"/admin/{obj._meta.app_label}/{obj._meta.model_name}/{obj.pk}/change/"


def _admin_submit(client: Client, user: Any, obj: Any, field: str, value: Any) -> None:
    """POST the change form of `obj` as `user` sees it (its initial values, built without
    rendering the page) with `field` set to `value`."""
    model_admin = admin.site._registry[type(obj)]
    request = RequestFactory().get("/")
    request.user = user
    data = form_data(model_admin.get_form(request, obj)(instance=obj))
    if isinstance(value, bool):
        data[field] = "on"
    elif isinstance(value, list):
        data[field] = [str(v.pk) for v in value]
    else:
        data[field] = value
    response = client.post(_admin_url(obj), data)
    assert response.status_code in (200, 302), (_admin_url(obj), response.status_code)


def _api_value(serializer: Any, field: str, value: Any) -> Any:
    if not isinstance(value, list):
        return value
    declared = serializer.fields.get(field)
    child = getattr(declared, "child_relation", None)
    if isinstance(child, PermissionField):
        return [f"{p.content_type.app_label}.{p.codename}" for p in value]
    return [v.pk for v in value]


def _api_submit(client: Any, target: Any, field: str, value: Any) -> int:
    from config.api import router

    route = API_ROUTES[type(target)]
    viewset = next(v for prefix, v, _b in router.registry if prefix == route)
    payload = {field: _api_value(viewset.serializer_class(), field, value)}
    return client.patch(f"/api/v1/{route}/{target.pk}/", payload, format="json").status_code


@pytest.mark.parametrize(("surface", "target", "field"), _cases(),
                         ids=lambda v: str(v))
def test_no_field_raises_the_operators_rights(org, surface, target, field):
    """The operator submits the escalation: refused or without effect; the superuser's
    identical submission shows the field is a real lever."""
    world = World(org, staff=surface == "admin")
    obj = world.targets[target]
    value = world.escalation(obj, field)
    before = rights(world.operator)
    if surface == "admin":
        operator = Client()
        assert operator.login(username="ops", password=PASSWORD)
        _admin_submit(operator, world.operator, obj, field, value)
    else:
        _api_submit(jwt_client(world.operator), obj, field, value)
    assert rights(world.operator) == before, f"{surface} {target}.{field} raised the rights"

    if surface == "admin":
        control = Client()
        control.force_login(world.root)
        _admin_submit(control, world.root, obj, field, value)
    else:
        _api_submit(jwt_client(world.root), obj, field, value)
    grew = rights(world.operator) != before
    if (surface, target, field) in LEVERS:
        assert grew, f"the control submission of {surface} {target}.{field} changed nothing"


@pytest.mark.parametrize("surface", ["admin", "api"])
@pytest.mark.parametrize("field", _candidate_fields(User))
def test_users_created_by_the_operator_hold_no_more_than_him(org, surface, field):
    """A new user with a known password is a way in: whatever field the operator fills, the
    account he creates holds nothing he does not (the superuser's identical creation is
    the control)."""
    world = World(org, staff=surface == "admin")
    value = world.escalation(User(), field)

    def create(as_user: Any, username: str) -> User | None:
        if surface == "admin":
            client = Client()
            client.force_login(as_user)
            page = client.get("/admin/system/user/add/")
            data = {**form_data(page.context["adminform"].form), "username": username,
                    "password1": "Known-pass-2468", "password2": "Known-pass-2468",
                    "usable_password": "true"}
            data[field] = "on" if value is True else [str(v.pk) for v in value] \
                if isinstance(value, list) else value
            client.post("/admin/system/user/add/", data)
        else:
            from webapp.system.serializers import UserSerializer

            jwt_client(as_user).post("/api/v1/users/", {
                "username": username, "password": "Known-pass-2468", "department": org.a.pk,
                field: _api_value(UserSerializer(), field, value)}, format="json")
        return User.objects.filter(username=username).first()

    mine = create(world.operator, "sockpuppet")
    if mine is not None:
        assert within(rights(mine), rights(world.operator)), f"{surface} {field}"
    theirs = create(world.root, "control")
    assert theirs is not None
    if (surface, field) in {("admin", "roles"), ("api", "roles"), ("api", "is_staff")}:
        assert not within(rights(theirs), rights(world.operator)), f"control {field}"


def _admin_fields(operator: Any) -> dict[tuple[str, str], str]:
    """(model, field) of every right-named field of every admin form the operator gets."""
    request = RequestFactory().get("/")
    request.user = operator
    found = {}
    for model, model_admin in admin.site._registry.items():
        if not model_admin.has_add_permission(request):
            continue
        form = model_admin.get_form(request, None)
        for name in set(form.base_fields) & set(RIGHT_FIELDS):
            found[(_label(model), name)] = f"admin {type(model_admin).__name__}"
    return found


def _serializer_fields() -> dict[tuple[str, str], str]:
    """(model, field) of every writable right-named field of every serializer in webapp."""
    import webapp

    found = {}
    for info in pkgutil.walk_packages(webapp.__path__, "webapp."):
        if ".migrations" in info.name or info.name.endswith(".tests"):
            continue
        module = importlib.import_module(info.name)
        for cls in vars(module).values():
            if not (inspect.isclass(cls) and issubclass(cls, serializers.Serializer)
                    and cls.__module__ == module.__name__):
                continue
            fields = cls().fields
            meta = getattr(cls, "Meta", None)
            label = _label(meta.model) if getattr(meta, "model", None) else cls.__name__
            for name, declared in fields.items():
                if name in RIGHT_FIELDS and not declared.read_only:
                    found[(label, name)] = f"serializer {cls.__module__}.{cls.__name__}"
    return found


def test_every_right_named_field_is_tested_or_explained(org):
    """Walks the admin and every serializer: a right-named writable field outside the grant
    models needs an entry in EXEMPT (and a stale entry is reported too)."""
    world = World(org, staff=True)
    found = {**_serializer_fields(), **_admin_fields(world.operator)}
    assert ("system.user", "roles") in found and ("system.role", "permissions") in found
    unexplained = {key: where for key, where in found.items()
                   if key[0] not in GRANT_MODELS and key not in EXEMPT}
    assert not unexplained, (
        "fields that may carry rights, neither tested as a grant model nor explained in "
        f"EXEMPT: {unexplained}")
    label_models = {label.split(".")[0] for label, _f in found}
    assert label_models & {"system", "auth"}
    stale = set(EXEMPT) - set(found)
    assert not stale, f"EXEMPT lists fields that no longer exist: {stale}"
