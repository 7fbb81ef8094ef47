"""Built-in data: roles, the ThingLinks menu tree, parameters and dictionaries.

Created by migration 0003; `grant_builtin_permissions` runs after every `migrate` so that the
built-in roles also cover the models of apps added later.
"""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext_noop as _

ADMINISTRATOR, OPERATOR, VIEWER = "administrator", "operator", "viewer"

ROLES = [
    {"code": ADMINISTRATOR, "name": _("Administrator"), "order": 1, "data_scope": "all",
     "remark": "Everything, all data."},
    {"code": OPERATOR, "name": _("Operator"), "order": 2, "data_scope": "department_and_below",
     "remark": "Runs devices, products and rules of their department and below; reads the "
               "system settings."},
    {"code": VIEWER, "name": _("Viewer"), "order": 3, "data_scope": "department_and_below",
     "remark": "Reads what their department and below owns."},
]

# Apps whose records operators manage (the IoT side); everything else they may only view.
OPERATED_APPS = {"products", "devices", "telemetry", "rules", "console"}
# What no one but administrators sees (credentials, the security trail).
# ("monitoring": system.view_monitoring, the console's monitoring page: hosts, databases, queues.)
ADMIN_ONLY_MODELS = {"apikey", "loginsession", "session", "logentry", "permission", "monitoring"}


def wants(role: str, app_label: str, codename: str) -> bool:
    """Does built-in `role` hold the permission `app_label.codename` by default?"""
    if role == ADMINISTRATOR:
        return True
    action, _sep, model = codename.partition("_")
    if model in ADMIN_ONLY_MODELS or app_label in {"auth", "contenttypes", "sessions", "admin"}:
        return app_label == "system" and model == "apikey" and role == OPERATOR
    if role == OPERATOR:
        return action == "view" or app_label in OPERATED_APPS
    return action == "view"


def grant_builtin_permissions(sender: Any = None, apps: Any = None, **kwargs: Any) -> None:
    """Give the built-in roles the permissions they should have (additive, idempotent)."""
    from django.contrib.auth.models import Permission

    from webapp.system.models import Role

    roles = {r.code: r for r in Role.objects.filter(is_builtin=True)}
    if not roles:
        return
    permissions = list(Permission.objects.select_related("content_type"))
    for code, role in roles.items():
        have = set(role.permissions.values_list("pk", flat=True))
        missing = [p for p in permissions if p.pk not in have
                   and wants(code, p.content_type.app_label, p.codename)]
        if missing:
            role.permissions.add(*missing)


def _m(name: str, path: str = "", permission: str = "", icon: str = "",
       children: list[dict[str, Any]] | None = None, menu_type: str = "page") -> dict[str, Any]:
    return {"name": name, "path": path, "permission": permission, "icon": icon,
            "menu_type": menu_type, "children": children or []}


def _page(name: str, app: str, model: str, icon: str = "",
          buttons: tuple[str, ...] = ("add", "change", "delete")) -> dict[str, Any]:
    labels = {"add": _("Add"), "change": _("Edit"), "delete": _("Delete")}
    return _m(name, f"/admin/{app}/{model}/", f"{app}.view_{model}", icon, [
        _m(labels[b], permission=f"{app}.{b}_{model}", menu_type="button")
        for b in buttons])


MENUS = [
    _m(_("Devices"), icon="cpu", menu_type="directory", children=[
        _page(_("Devices"), "devices", "device", "cpu"),
        _m(_("Device debugging"), permission="devices:debug", icon="terminal", children=[]),
    ]),
    _m(_("Products"), icon="box", menu_type="directory", children=[
        _page(_("Products"), "products", "product", "box"),
    ]),
    _m(_("Rules"), icon="git-branch", menu_type="directory", children=[]),
    _m(_("Monitoring"), icon="activity", menu_type="directory", children=[
        _page(_("Online users"), "system", "loginsession", "users", buttons=("delete",)),
        _page(_("Scheduled tasks"), "django_celery_beat", "periodictask", "clock"),
        _page(_("Task runs"), "system", "taskrun", "list", buttons=()),
    ]),
    _m(_("System"), icon="settings", menu_type="directory", children=[
        _page(_("Users"), "system", "user", "user"),
        _page(_("Roles"), "system", "role", "shield"),
        _page(_("Menus"), "system", "menu", "menu"),
        _page(_("Departments"), "system", "department", "git-merge"),
        _page(_("Positions"), "system", "position", "briefcase"),
        _page(_("Dictionaries"), "system", "dicttype", "book"),
        _page(_("Parameters"), "system", "parameter", "sliders"),
        _page(_("Notices"), "system", "notice", "bell"),
        _m(_("Logs"), icon="file-text", menu_type="directory", children=[
            _page(_("Operation log"), "system", "operationlog", "edit", buttons=()),
            _page(_("Login log"), "system", "loginlog", "log-in", buttons=()),
        ]),
    ]),
]

PARAMETERS = [
    ("security.login.max_failures", "Failed logins before lockout", "5", "integer",
     "Failures in a row for one username from one address; 0 disables the lockout."),
    ("security.login.lockout_minutes", "Lockout duration (minutes)", "15", "integer", ""),
    ("security.password.min_classes", "Password character classes", "2", "integer",
     "How many of lower case, upper case, digits and other characters a password mixes."),
    ("log.retention_days", "Log retention (days)", "180", "integer",
     "Operation logs, login logs and task runs older than this are deleted daily."),
    ("console.title", "Console title", "ThingLinks", "string", ""),
]

DICTIONARIES = [
    ("sys_yes_no", "Yes / no", [("1", "Yes", "success"), ("0", "No", "danger")]),
    ("sys_gender", "Gender", [("male", "Male", ""), ("female", "Female", ""),
                              ("", "Unknown", "")]),
    ("device_tag", "Device tags", [("indoor", "Indoor", ""), ("outdoor", "Outdoor", "")]),
]


def create_defaults(apps: Any, schema_editor: Any = None) -> None:
    """Create the built-in roles, menus, parameters and dictionaries (idempotent)."""
    role_model = apps.get_model("system", "Role")
    menu_model = apps.get_model("system", "Menu")
    parameter_model = apps.get_model("system", "Parameter")
    dict_type_model = apps.get_model("system", "DictType")
    dict_item_model = apps.get_model("system", "DictItem")
    department_model = apps.get_model("system", "Department")

    for department in department_model.objects.order_by("id"):
        _fix_path(department_model, department)

    roles = {}
    for spec in ROLES:
        roles[spec["code"]], _ = role_model.objects.get_or_create(
            code=spec["code"], defaults={**spec, "is_builtin": True})

    if not menu_model.objects.exists():
        created: list[tuple[Any, dict[str, Any]]] = []

        def make(nodes: list[dict[str, Any]], parent: Any) -> None:
            for order, node in enumerate(nodes, start=1):
                menu = menu_model.objects.create(
                    parent=parent, name=node["name"], menu_type=node["menu_type"],
                    permission=node["permission"], path=node["path"], icon=node["icon"],
                    order=order)
                created.append((menu, node))
                make(node["children"], menu)

        make(MENUS, None)
        all_menus = [menu for menu, _node in created]
        roles[ADMINISTRATOR].menus.set(all_menus)
        operator = [m for m, node in created if not node["permission"].startswith(
            ("system.add", "system.change", "system.delete", "django_celery_beat.add",
             "django_celery_beat.change", "django_celery_beat.delete"))]
        roles[OPERATOR].menus.set(operator)
        roles[VIEWER].menus.set([m for m, node in created if node["menu_type"] != "button"
                                 and node["permission"] != "devices:debug"])

    for key, name, value, value_type, remark in PARAMETERS:
        parameter_model.objects.get_or_create(key=key, defaults={
            "name": name, "value": value, "value_type": value_type, "remark": remark,
            "is_builtin": True})

    for code, name, items in DICTIONARIES:
        dict_type, created_type = dict_type_model.objects.get_or_create(
            code=code, defaults={"name": name, "is_builtin": True})
        if created_type:
            for order, (value, label, color) in enumerate(items, start=1):
                dict_item_model.objects.create(dict_type=dict_type, value=value, label=label,
                                               color=color, order=order)


def _fix_path(model: Any, department: Any) -> None:
    chain = [department.pk]
    parent_id = department.parent_id
    while parent_id is not None and parent_id not in chain:
        chain.append(parent_id)
        parent_id = model.objects.filter(pk=parent_id).values_list(
            "parent_id", flat=True).first()
    path = "/" + "/".join(str(pk) for pk in reversed(chain)) + "/"
    model.objects.filter(pk=department.pk).update(path=path)
