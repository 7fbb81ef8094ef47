"""The permission matrix: one case per (URL name, method) of the API.

`test_permissions.py` runs every case three ways (no credentials → 401; authenticated without
the permission → 403; with exactly the permission → the success status) and fails when a
route of the API has no case here (or in another area's `tests/<area>/permission_cases.py`).

A case's `perms` are the permissions the endpoint needs; `ANY_USER` marks endpoints open to
every signed-in user (their own profile, messages, keys), `PUBLIC` those open to anyone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

ANY_USER: tuple[str, ...] = ()
PUBLIC = ("<public>",)


@dataclass
class Case:
    name: str  # URL name
    method: str
    perms: tuple[str, ...]
    ok: tuple[int, ...]
    # (ctx) -> (url kwargs, body); ctx is tests.system.test_permissions.Ctx
    make: Callable[[Any], tuple[dict[str, Any], Any]] = field(
        default=lambda ctx: ({}, None))
    query: str = ""

    @property
    def id(self) -> str:
        return f"{self.name}:{self.method}"


def _crud(basename: str, app: str, model: str, make: Callable[[Any], Any],
          create: Callable[[Any], dict[str, Any]], update: dict[str, Any],
          lookup: str = "pk", attr: str = "pk", export: bool = True,
          delete_ok: tuple[int, ...] = (204,), write_once: tuple[str, ...] = ()) -> list[Case]:
    def detail(body: Any = None) -> Callable[[Any], tuple[dict[str, Any], Any]]:
        return lambda ctx: ({lookup: getattr(make(ctx), attr)}, body)

    view, add, change, delete = (f"{app}.{a}_{model}" for a in ("view", "add", "change",
                                                                 "delete"))
    cases = [
        Case(f"{basename}-list", "get", (view,), (200,)),
        Case(f"{basename}-list", "post", (add,), (201,), lambda ctx: ({}, create(ctx))),
        Case(f"{basename}-detail", "get", (view,), (200,), detail()),
        Case(f"{basename}-detail", "patch", (change,), (200,), detail(update)),
        Case(f"{basename}-detail", "put", (change,), (200,),
             lambda ctx: ({lookup: getattr(make(ctx), attr)}, {
                 **{k: v for k, v in create(ctx).items() if k not in write_once}, **update})),
        Case(f"{basename}-detail", "delete", (delete,), delete_ok, detail()),
    ]
    if export:
        cases.append(Case(f"{basename}-export", "get", (view,), (200,)))
    return cases


def _n(ctx: Any) -> int:
    ctx.n += 1
    return ctx.n


def _held(ctx: Any) -> str:
    """A permission code the actor holds (a menu's code is a grant: only held ones pass)."""
    return min(ctx.actor.get_all_permissions(), default="")


CASES: list[Case] = [
    # Auth
    Case("token_obtain_pair", "post", PUBLIC, (200,), lambda ctx: (
        {}, {"username": ctx.plain_user.username, "password": ctx.password})),
    Case("token_refresh", "post", PUBLIC, (200,), lambda ctx: (
        {}, {"refresh": ctx.refresh_token()})),
    Case("logout", "post", ANY_USER, (204,)),
    Case("me", "get", ANY_USER, (200,)),
    Case("me", "patch", ANY_USER, (200,), lambda ctx: ({}, {"nickname": "Me"})),
    Case("change_password", "post", ANY_USER, (204,), lambda ctx: (
        {}, {"old_password": ctx.password, "password": "New-pass-1357"})),
    # Users and organisation
    *_crud("user", "system", "user", lambda ctx: ctx.other_user(),
           lambda ctx: {"username": f"new{_n(ctx)}", "password": "Pw-new-24680",
                        "department": ctx.org.a.pk},
           {"nickname": "Changed"}, write_once=("password",)),
    Case("user-reset-password", "post", ("system.change_user",), (200,),
         lambda ctx: ({"pk": ctx.other_user().pk}, {})),
    Case("user-logout", "post", ("system.logout_loginsession",), (200,),
         lambda ctx: ({"pk": ctx.other_user().pk}, None)),
    *_crud("department", "system", "department", lambda ctx: ctx.leaf_department(),
           lambda ctx: {"name": f"D{_n(ctx)}", "parent": ctx.org.a.pk}, {"leader": "Ann"}),
    Case("department-tree", "get", ("system.view_department",), (200,)),
    *_crud("position", "system", "position", lambda ctx: ctx.position(),
           lambda ctx: {"code": f"p{_n(ctx)}", "name": "Engineer"}, {"name": "Lead"}),
    *_crud("role", "system", "role", lambda ctx: ctx.role(),
           lambda ctx: {"code": f"role{_n(ctx)}", "name": "Ops", "data_scope": "department"},
           {"name": "Ops 2"}),
    *_crud("menu", "system", "menu", lambda ctx: ctx.menu(),
           lambda ctx: {"name": "Page", "menu_type": "page", "permission": _held(ctx)},
           {"icon": "box"}),
    Case("menu-tree", "get", ("system.view_menu",), (200,)),
    *_crud("dictionary", "system", "dicttype", lambda ctx: ctx.dictionary(),
           lambda ctx: {"code": f"dict{_n(ctx)}", "name": "Colours"}, {"name": "Hues"},
           lookup="code", attr="code"),
    Case("dictionary-items", "get", ("system.view_dicttype",), (200,),
         lambda ctx: ({"code": ctx.dictionary().code}, None)),
    *_crud("dictionary-item", "system", "dictitem", lambda ctx: ctx.dict_item(),
           lambda ctx: {"dictionary": ctx.dictionary().code, "value": f"v{_n(ctx)}",
                        "label": "Value"}, {"label": "Other"}),
    *_crud("parameter", "system", "parameter", lambda ctx: ctx.parameter(),
           lambda ctx: {"key": f"test.p{_n(ctx)}", "name": "P", "value": "1",
                        "value_type": "integer"}, {"value": "2"}, lookup="key", attr="key"),
    *_crud("notice", "system", "notice", lambda ctx: ctx.notice(),
           lambda ctx: {"title": "Maintenance", "content": "Tonight"}, {"title": "Later"}),
    Case("notice-publish", "post", ("system.change_notice",), (200,),
         lambda ctx: ({"pk": ctx.notice().pk}, None)),
    Case("notice-close", "post", ("system.change_notice",), (200,),
         lambda ctx: ({"pk": ctx.notice().pk}, None)),
    # The caller's own things
    Case("message-list", "get", ANY_USER, (200,)),
    Case("message-detail", "get", ANY_USER, (200,), lambda ctx: (
        {"pk": ctx.own_message().pk}, None)),
    Case("message-detail", "delete", ANY_USER, (204,), lambda ctx: (
        {"pk": ctx.own_message().pk}, None)),
    Case("message-mark-read", "post", ANY_USER, (200,), lambda ctx: ({}, {})),
    Case("message-unread-count", "get", ANY_USER, (200,)),
    Case("api-key-list", "get", ("system.view_apikey",), (200,)),
    Case("api-key-list", "post", ("system.add_apikey",), (201,), lambda ctx: (
        {}, {"name": "ci"})),
    Case("api-key-detail", "get", ("system.view_apikey",), (200,), lambda ctx: (
        {"pk": ctx.own_api_key().pk}, None)),
    Case("api-key-detail", "delete", ("system.delete_apikey",), (204,), lambda ctx: (
        {"pk": ctx.own_api_key().pk}, None)),
    # Logs and monitoring
    Case("operation-log-list", "get", ("system.view_operationlog",), (200,)),
    Case("operation-log-export", "get", ("system.view_operationlog",), (200,)),
    Case("operation-log-detail", "get", ("system.view_operationlog",), (200,), lambda ctx: (
        {"pk": ctx.operation_log().pk}, None)),
    Case("login-log-list", "get", ("system.view_loginlog",), (200,)),
    Case("login-log-export", "get", ("system.view_loginlog",), (200,)),
    Case("login-log-detail", "get", ("system.view_loginlog",), (200,), lambda ctx: (
        {"pk": ctx.login_log().pk}, None)),
    Case("login-log-unlock", "post", ("system.unlock_login",), (204,), lambda ctx: (
        {}, {"username": "someone", "address": "10.0.0.1"})),
    Case("online-user-list", "get", ("system.view_loginsession",), (200,)),
    Case("online-user-export", "get", ("system.view_loginsession",), (200,)),
    Case("online-user-detail", "get", ("system.view_loginsession",), (200,), lambda ctx: (
        {"pk": ctx.online_session().pk}, None)),
    Case("online-user-detail", "delete", ("system.logout_loginsession",), (204,),
         lambda ctx: ({"pk": ctx.online_session().pk}, None)),
    Case("online-user-logout", "post", ("system.logout_loginsession",), (204,),
         lambda ctx: ({"pk": ctx.online_session().pk}, None)),
    Case("task-run-list", "get", ("system.view_taskrun",), (200,)),
    Case("task-run-export", "get", ("system.view_taskrun",), (200,)),
    Case("task-run-detail", "get", ("system.view_taskrun",), (200,), lambda ctx: (
        {"pk": ctx.task_run().pk}, None)),
    # Products and devices (data-scoped)
    Case("product-list", "get", ("products.view_product",), (200,)),
    Case("product-list", "post", ("products.add_product",), (201,), lambda ctx: (
        {}, ctx.product_payload())),
    Case("product-export", "get", ("products.view_product",), (200,)),
    Case("product-detail", "get", ("products.view_product",), (200,), lambda ctx: (
        {"identifier": ctx.product().identifier}, None)),
    Case("product-detail", "patch", ("products.change_product",), (200,), lambda ctx: (
        {"identifier": ctx.product().identifier}, {"name": "Renamed"})),
    Case("product-detail", "put", ("products.change_product",), (200,), lambda ctx: (
        {"identifier": ctx.product().identifier},
        {**ctx.product_payload(), "identifier": ctx.product().identifier})),
    Case("product-detail", "delete", ("products.delete_product",), (204,), lambda ctx: (
        {"identifier": ctx.product(fresh=True).identifier}, None)),
    Case("product-thing-model", "get", ("products.view_product",), (200,), lambda ctx: (
        {"identifier": ctx.product().identifier}, None)),
    Case("device-list", "get", ("devices.view_device",), (200,)),
    Case("device-list", "post", ("devices.add_device",), (201,), lambda ctx: (
        {}, {"product": ctx.product().identifier, "identifier": f"dev-new-{_n(ctx)}"})),
    Case("device-export", "get", ("devices.view_device",), (200,)),
    Case("device-detail", "get", ("devices.view_device",), (200,), lambda ctx: (
        {"identifier": ctx.device().identifier}, None)),
    Case("device-detail", "patch", ("devices.change_device",), (200,), lambda ctx: (
        {"identifier": ctx.device().identifier}, {"name": "Renamed"})),
    Case("device-detail", "put", ("devices.change_device",), (200,), lambda ctx: (
        {"identifier": ctx.device().identifier},
        {"identifier": ctx.device().identifier, "product": ctx.product().identifier,
         "name": "Put"})),
    Case("device-detail", "delete", ("devices.delete_device",), (204,), lambda ctx: (
        {"identifier": ctx.device().identifier}, None)),
    Case("device-rotate-secret", "post", ("devices.change_device",), (200,), lambda ctx: (
        {"identifier": ctx.device().identifier}, None)),
    Case("device-shadow", "get", ("devices.view_device",), (200,), lambda ctx: (
        {"identifier": ctx.device().identifier}, None)),
    Case("device-shadow", "put", ("devices.change_device",), (200, 400), lambda ctx: (
        {"identifier": ctx.device().identifier}, {"desired": {}})),
    Case("device-shadow", "patch", ("devices.change_device",), (200, 400), lambda ctx: (
        {"identifier": ctx.device().identifier}, {"desired": {}})),
    Case("device-telemetry", "get", ("devices.view_device",), (200,), lambda ctx: (
        {"identifier": ctx.device().identifier}, None), query="service=env"),
    Case("device-messages", "get", ("devices.view_device",), (200,), lambda ctx: (
        {"identifier": ctx.device().identifier}, None)),
    Case("device-connections", "get", ("devices.view_device",), (200,), lambda ctx: (
        {"identifier": ctx.device().identifier}, None)),
    Case("device-commands", "get", ("devices.view_device", "devices.view_devicecommand"),
         (200,), lambda ctx: ({"identifier": ctx.device().identifier}, None)),
    Case("device-commands", "post", ("devices.view_device", "devices.add_devicecommand"),
         (201,), lambda ctx: ({"identifier": ctx.device().identifier}, {
             "service": "env", "command": "set_interval", "params": {"seconds": 5},
             "ttl": 60})),
    Case("command-list", "get", ("devices.view_devicecommand",), (200,)),
    Case("command-detail", "get", ("devices.view_devicecommand",), (200,), lambda ctx: (
        {"pk": ctx.command().pk}, None)),
    Case("command-cancel", "post", ("devices.view_devicecommand",
                                    "devices.change_devicecommand"), (200, 409),
         lambda ctx: ({"pk": ctx.command().pk}, None)),
]
