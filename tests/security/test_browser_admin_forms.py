"""The admin and the console after the security changes of issue 12, used as an operator
would in a real browser (Debian's Chromium driven by Playwright, against pytest-django's
`live_server`): as a superuser whose generated password must be changed at the first login,
and as a staff operator scoped to department A, in English and in Simplified Chinese (the
admin's own language switch).

Each walk opens and saves, with valid data, the forms the security changes touched: user
add and change (no escalation fields for the operator), role add and change, menu change,
group change (superuser), product add, device add, device command add (another department's
device refused), notification channel add (a robot URL checked as a destination; a name that
does not resolve is a form error), sink add (an internal destination refused as a form
error), rule add with a webhook action (some JSON boxes left empty: their defaults); then
the console pages (/, /devices/, /products/ and each device's page) and the API schema,
which now needs a login.

A page answering 5xx, or a save without its success message, is recorded with a screenshot
(under the test's tmp_path) and the server's traceback; the test fails listing them all.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Group, Permission
from django.db import connections

from tests.conftest import missing
from tests.console.browsing import CHROMIUM, CHROMIUM_ARGS
from tests.security.rbac import fast_hasher, org_fixture, own_cache_prefix  # noqa: F401
from tests.system.conftest import PASSWORD, make_device, make_product

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

NEW_PASSWORD = "Changed-pw-8642"
# Destinations saved in the forms. The names resolve (through `public_names`) to a public
# address: this machine has no DNS, and nothing is sent when a form is saved.
PUBLIC_ADDRESS = "93.184.215.14"
ROBOT_URL = "https://oapi.dingtalk.com/robot/send?access_token=abc"
WEBHOOK_URL = "https://hooks.example.com/thinglinks"
SINK_URL = f"https://{PUBLIC_ADDRESS}/ingest"
# What an operator holds besides the built-in operator role: user, role and menu management.
USER_MANAGER = ("system.view_user", "system.change_user", "system.add_user",
                "system.view_role", "system.change_role", "system.add_role",
                "system.view_menu", "system.change_menu", "system.add_menu", "auth.view_group")


# --- fixtures --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One Chromium for the module (each walk has a context, i.e. cookies, of its own)."""
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        missing(f"{CHROMIUM} is missing (apt-get install -y chromium)")
    # Playwright's sync API keeps an event loop in this thread; the test's own database
    # calls are synchronous all the same (Django's documented setting for this case).
    before = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    from playwright.sync_api import sync_playwright

    try:
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=[
                *CHROMIUM_ARGS, "--blink-settings=imagesEnabled=false"])
            try:
                yield chromium
            finally:
                chromium.close()
    finally:
        if before is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = before
        connections.close_all()


@pytest.fixture
def public_names(monkeypatch: Any) -> None:
    """The destination names used here resolve to a public address (the live server runs in
    this process: its outbound checks resolve through this); every other name as usual."""
    real = socket.getaddrinfo
    names = {"oapi.dingtalk.com", "hooks.example.com"}

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        return real(PUBLIC_ADDRESS if host in names else host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


class ServerErrors(logging.Handler):
    """Errors the server logged (Django logs a 500's traceback on `django.request`)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(self.format(record))


@pytest.fixture
def server_errors() -> Iterator[ServerErrors]:
    handler = ServerErrors()
    root = logging.getLogger()
    root.addHandler(handler)
    yield handler
    root.removeHandler(handler)


class World:
    """Departments A (A1 below it) and B with a product and a device each; a superuser whose
    password was generated (to be changed at the first login); a staff operator of A holding
    the built-in operator's permissions and user, role and menu management (scope: A)."""

    def __init__(self, org: Any) -> None:
        from webapp.system.defaults import OPERATOR, wants
        from webapp.system.models import Menu, User

        self.org = org
        self.product_a = make_product("thermo-a", org.a)
        self.product_b = make_product("thermo-b", org.b)
        self.device_a = make_device("dev-a1", self.product_a, org.a)
        self.device_b = make_device("dev-b1", self.product_b, org.b)
        self.root = User.objects.create_superuser("root", "root@example.com", PASSWORD)
        self.root.must_change_password = True
        self.root.save(update_fields=["must_change_password"])
        self.ops = org.user("ops", org.a, USER_MANAGER, scope="department", staff=True)
        self.ops_role = self.ops.roles.get()
        self.ops_role.permissions.add(*[
            p for p in Permission.objects.select_related("content_type")
            if wants(OPERATOR, p.content_type.app_label, p.codename)])
        self.menu = Menu.objects.create(name="Device list", menu_type="page",
                                        permission="devices.view_device",
                                        path="/admin/devices/device/")
        self.group = Group.objects.create(name="field-team")
        self.group.permissions.set(Permission.objects.filter(
            content_type__app_label="devices", codename="view_device"))

    @staticmethod
    def permission(code: str) -> int:
        app_label, codename = code.split(".")
        return Permission.objects.get(content_type__app_label=app_label,
                                      codename=codename).pk


@pytest.fixture
def world(org: Any, redis_prefix: str, public_names: None) -> World:
    return World(org)


# --- the walker ------------------------------------------------------------------------------

@dataclass
class Walk:
    page: Any
    base: str
    shots: Path
    server: ServerErrors
    label: str
    language: str = "en"  # what every admin and console page is expected to be shown in
    problems: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # 5xx responses seen by the browser
    steps: int = 0

    def __post_init__(self) -> None:
        self.page.on("response", lambda r: self.failed.append(f"{r.status} {r.url}")
                     if r.status >= 500 else None)

    def problem(self, what: str, detail: str) -> None:
        self.steps += 1
        shot = self.shots / f"{self.label}-{self.steps:02d}.png"
        self.page.screenshot(path=str(shot), full_page=True)
        traceback = "\n".join(self.server.records[-3:])
        self.problems.append(f"[{self.label}] {what}: {detail} (at {self.page.url}, "
                             f"screenshot {shot})\n{traceback}")

    def _no_5xx(self, what: str, response: Any = None) -> bool:
        bad = list(self.failed)
        if response is not None and response.status >= 500:
            bad.append(f"{response.status} {response.url}")
        self.failed.clear()
        if bad:
            self.problem(what, "server error " + ", ".join(sorted(set(bad))))
            return False
        return True

    def open(self, path: str, what: str = "", status: int = 200) -> Any:
        response = self.page.goto(self.base + path, wait_until="domcontentloaded")
        if self._no_5xx(what or path, response):
            if response.status != status:
                self.problem(what or path, f"HTTP {response.status}, expected {status}")
            elif status == 200:
                self._in_language(what or path)
        return response

    def _in_language(self, what: str) -> None:
        if "/api/" in self.page.url:
            return
        shown = self.page.locator("html").get_attribute("lang")
        if shown != self.language:
            self.problem(what, f"shown in {shown!r}, not {self.language!r}")

    def submit(self, what: str, button: str = "input[name=_save]") -> None:
        with self.page.expect_navigation(wait_until="domcontentloaded"):
            self.page.click(button)
        if self._no_5xx(what):
            self._in_language(what)

    def save(self, what: str, path: str, fill: Callable[[Any], None]) -> None:
        """Open an admin add/change page, fill it, save, expect the success message."""
        self.open(path, what)
        fill(self.page)
        self.submit(what)
        if self.page.locator(".messagelist .success").count() == 0:
            errors = self.page.locator(".errornote, .errorlist, .messagelist .error")
            self.problem(what, "no success message; " + " | ".join(errors.all_inner_texts()))

    def refused(self, what: str, path: str, fill: Callable[[Any], None],
                reasons: dict[str, tuple[str, ...]] | None = None,
                where: str = ".errorlist") -> None:
        """Open an admin form, fill it with what must be refused: the form again with an
        error in `where` (holding the words `reasons` gives for the page's language), no
        server error, nothing saved."""
        self.open(path, what)
        fill(self.page)
        self.submit(what)
        shown = " | ".join(self.page.locator(where).all_inner_texts())
        words = (reasons or {}).get(self.language, ())
        if self.page.locator(".messagelist .success").count() or not shown or not all(
                word in shown for word in words):
            self.problem(what, f"expected a refusal naming {words!r}; shown: {shown!r}")


def choose(page: Any, name: str, *values: Any) -> None:
    """Move options to the chosen side of a filter_horizontal widget, as a person does."""
    for value in values:
        page.select_option(f"#id_{name}_from", str(value))
        page.click(f"#id_{name}_add")


def fill_json(page: Any, name: str, value: Any) -> None:
    page.fill(f"#id_{name}", json.dumps(value))


# --- the walk --------------------------------------------------------------------------------

def sign_in(walk: Walk, username: str, password: str) -> None:
    page = walk.page
    walk.open("/admin/", "admin login page")
    assert "/admin/login/" in page.url
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    walk.submit("admin login", "input[type=submit]")


def change_generated_password(walk: Walk) -> None:
    """The first login with a generated password lands on the password change page, and every
    admin page leads back there until the password is changed."""
    page = walk.page
    assert "/admin/password_change/" in page.url, page.url
    walk.open("/admin/devices/device/", "admin page before the password change")
    assert "/admin/password_change/" in page.url, page.url
    page.fill("#id_old_password", PASSWORD)
    page.fill("#id_new_password1", NEW_PASSWORD)
    page.fill("#id_new_password2", NEW_PASSWORD)
    walk.submit("password change", "input[type=submit]")
    assert "/admin/password_change/done/" in page.url, page.url
    walk.open("/admin/", "admin index after the password change")
    assert page.url.rstrip("/").endswith("/admin"), page.url
    from webapp.system.models import User

    root = User.objects.get(username="root")
    assert root.check_password(NEW_PASSWORD) and not root.must_change_password


def switch_language(walk: Walk, language: str) -> None:
    page = walk.page
    if language == "en":
        return
    walk.open("/admin/", "admin index")
    with page.expect_navigation():  # the select submits the language form on change
        page.select_option("#tl-language-select", language)
    page.wait_for_load_state()
    walk._no_5xx("language switch")
    walk.language = language
    walk._in_language("language switch")


def walk_admin(walk: Walk, world: World, superuser: bool) -> None:
    org = world.org
    own_role = world.ops_role.pk
    department = org.a.pk

    # Users: add, then change (the add page leads to the change page).
    def user_add(page: Any) -> None:
        if not superuser:
            assert page.locator("[name=is_superuser], [name=groups], "
                                "[name=user_permissions]").count() == 0
        page.fill("#id_username", "fieldtech")
        page.fill("#id_password1", "Kq7-wire-5531")
        page.fill("#id_password2", "Kq7-wire-5531")
        page.select_option("#id_department", str(department))
        choose(page, "roles", own_role)
        page.check("#id_is_staff")

    walk.save("user add", "/admin/system/user/add/", user_add)
    from webapp.system.models import Role, User

    user = User.objects.filter(username="fieldtech").first()
    if user is not None:
        def user_change(page: Any) -> None:
            escalation = page.locator("[name=is_superuser], [name=groups], "
                                      "[name=user_permissions]")
            if superuser:
                assert escalation.count() == 3
            else:
                assert escalation.count() == 0, "escalation fields on the operator's form"
            page.fill("#id_nickname", "Field technician")
            page.fill("#id_email", "fieldtech@example.com")

        walk.save("user change", f"/admin/system/user/{user.pk}/change/", user_change)

    # Roles: add, then change.
    def role_add(page: Any) -> None:
        page.fill("#id_code", "field_ops")
        page.fill("#id_name", "Field operations")
        page.select_option("#id_data_scope", "department")
        choose(page, "permissions", world.permission("devices.view_device"),
               world.permission("devices.add_devicecommand"))
        choose(page, "menus", world.menu.pk)

    walk.save("role add", "/admin/system/role/add/", role_add)
    role = Role.objects.filter(code="field_ops").first()
    if role is not None:
        walk.save("role change", f"/admin/system/role/{role.pk}/change/",
                  lambda page: page.fill("#id_name", "Field operations (day)"))

    walk.save("menu change", f"/admin/system/menu/{world.menu.pk}/change/",
              lambda page: page.fill("#id_name", "Devices (list)"))
    if superuser:
        walk.save("group change", f"/admin/auth/group/{world.group.pk}/change/",
                  lambda page: page.fill("#id_name", "field-team-east"))

    # Products and devices.
    def product_add(page: Any) -> None:
        page.fill("#id_identifier", "meter")
        page.fill("#id_name", "Power meter")
        page.select_option("#id_department", str(department))
        fill_json(page, "thing_model", [{"code": "power", "name": "Power", "properties": [
            {"code": "watts", "datatype": "decimal", "min": 0, "max": 10000}],
            "commands": [{"code": "reset", "requests": []}]}])

    walk.save("product add", "/admin/products/product/add/", product_add)
    from webapp.products.models import Product

    product = Product.objects.filter(identifier="meter").first()

    def device_add(page: Any) -> None:
        page.select_option("#id_product", str(product.pk if product else world.product_a.pk))
        page.fill("#id_identifier", "meter-01")
        page.fill("#id_name", "Meter 01")
        page.select_option("#id_department", str(department))
        page.fill("#id_tags", "")  # an empty JSON box is its default ({})

    walk.save("device add", "/admin/devices/device/add/", device_add)

    def command(device: Any) -> Callable[[Any], None]:
        def fill(page: Any) -> None:
            page.fill("#id_device", str(device.pk))
            page.fill("#id_service", "env")
            page.fill("#id_command", "set_interval")
            fill_json(page, "params_json", {"seconds": 15})
            page.fill("#id_ttl", "60")
        return fill

    walk.save("device command add", "/admin/devices/devicecommand/add/",
              command(world.device_a))
    if not superuser:  # the device choices stop at the operator's scope
        walk.refused("device command to department B", "/admin/devices/devicecommand/add/",
                     command(world.device_b), where=".field-device .errorlist")

    # Notification channel: a name that does not resolve is a form error, a robot URL saves.
    def channel(url: str) -> Callable[[Any], None]:
        def fill(page: Any) -> None:
            page.fill("#id_name", "duty-robot")
            page.select_option("#id_channel_type", "dingtalk")
            page.select_option("#id_department", str(department))
            fill_json(page, "config", {"url": url})
            page.fill("#id_emails", "")
        return fill

    if not superuser:
        walk.refused("channel to a name that does not resolve",
                     "/admin/rules/notificationchannel/add/",
                     channel("https://robot.does-not-exist.invalid/send?access_token=abc"),
                     {"en": ("robot.does-not-exist.invalid", "does not resolve"),
                      "zh-hans": ("robot.does-not-exist.invalid", "无法解析")})
    walk.save("channel add", "/admin/rules/notificationchannel/add/", channel(ROBOT_URL))

    # Sink: the platform's own Redis is refused (a form error), a public address saves.
    def sink(url: str) -> Callable[[Any], None]:
        def fill(page: Any) -> None:
            page.fill("#id_name", "archive")
            page.select_option("#id_sink_type", "http")
            page.select_option("#id_department", str(department))
            fill_json(page, "config", {"url": url})
        return fill

    if not superuser:
        walk.refused("sink to loopback", "/admin/rules/sink/add/",
                     sink("http://127.0.0.1:9/in"),
                     {"en": ("127.0.0.1", "loopback"), "zh-hans": ("127.0.0.1", "环回")})
    walk.save("sink add", "/admin/rules/sink/add/", sink(SINK_URL))

    def rule_add(page: Any) -> None:
        page.fill("#id_name", "too-hot")
        fill_json(page, "trigger", {"type": "property", "product": "thermo-a",
                                    "service": "env", "property": "temperature"})
        fill_json(page, "condition", {"op": ">", "value": 30})
        page.fill("#id_debounce", "")
        fill_json(page, "actions", [
            {"type": "alarm", "severity": "minor"},
            {"type": "notify", "channel": "duty-robot"},
            {"type": "forward", "sink": "archive"},
            {"type": "webhook", "url": WEBHOOK_URL}])

    walk.save("rule add", "/admin/rules/rule/add/", rule_add)
    check_saved(walk, world, superuser)


def check_saved(walk: Walk, world: World, superuser: bool) -> None:
    """What the walk saved is in the database as entered; nothing refused was saved."""
    from webapp.devices.models import Device, DeviceCommand
    from webapp.products.models import Product
    from webapp.rules.models import NotificationChannel, Rule, Sink
    from webapp.system.models import Menu, Role, User

    a = world.org.a
    channel = NotificationChannel.objects.filter(name="duty-robot", department=a).first()
    saved = {
        "user": User.objects.filter(username="fieldtech", nickname="Field technician",
                                    department=a, roles=world.ops_role).exists(),
        "role": Role.objects.filter(code="field_ops", name="Field operations (day)",
                                    permissions__codename="add_devicecommand",
                                    menus=world.menu).exists(),
        "menu": Menu.objects.filter(pk=world.menu.pk, name="Devices (list)").exists(),
        "product": Product.objects.filter(identifier="meter", department=a,
                                          services__code="power").exists(),
        "device": Device.objects.filter(identifier="meter-01", department=a, tags={},
                                        product__identifier="meter").exists(),
        "command": list(DeviceCommand.objects.values_list("device__identifier", "params"))
        == [("dev-a1", {"seconds": 15})],
        "channel (robot token kept out of the URL)": channel is not None
        and "abc" not in json.dumps(channel.config)
        and not NotificationChannel.objects.exclude(pk=channel.pk).exists(),
        "sink": list(Sink.objects.values_list("name", "department")) == [("archive", a.pk)],
        "rule": Rule.objects.filter(name="too-hot", product=world.product_a,
                                    debounce={}).exists(),
    }
    if superuser:
        saved["group"] = Group.objects.filter(pk=world.group.pk,
                                              name="field-team-east").exists()
    for what, ok in saved.items():
        if not ok:
            walk.problem(f"{what} in the database", "not saved as entered")


def walk_console(walk: Walk, world: World, superuser: bool, api_docs: bool) -> None:
    from webapp.devices.models import Device

    for path in ("/", "/devices/", "/products/"):
        walk.open(path, f"console {path}")
    devices = Device.objects.order_by("identifier")
    for device in devices:
        mine = superuser or device.department_id == world.org.a.pk
        walk.open(f"/devices/{device.identifier}/", f"console device {device.identifier}",
                  status=200 if mine else 404)
    if not api_docs:
        return
    # The API schema and its docs need a login now: the signed-in browser gets them (once
    # per user: the schema takes seconds to generate).
    # (The page's own request: two at once would race in drf-spectacular's lazy imports.)
    with walk.page.expect_response(lambda r: "/api/schema/" in r.url) as schema:
        walk.open("/api/docs/", "API docs")
    if schema.value.status != 200 or "openapi" not in schema.value.text():
        walk.problem("API schema", f"HTTP {schema.value.status}")


@pytest.mark.parametrize("language", ["en", "zh-hans"])
@pytest.mark.parametrize("who", ["superuser", "operator"])
def test_admin_forms_and_console_in_a_browser(who, language, world, browser, live_server,
                                              server_errors, tmp_path):
    superuser = who == "superuser"
    context = browser.new_context(locale="en-US")
    page = context.new_page()
    page.set_default_timeout(15_000)
    walk = Walk(page, live_server.url, tmp_path, server_errors, f"{who}-{language}")
    try:
        if superuser:
            sign_in(walk, "root", PASSWORD)
            change_generated_password(walk)
        else:
            sign_in(walk, "ops", PASSWORD)
            assert page.url.rstrip("/").endswith("/admin"), page.url
        switch_language(walk, language)
        walk_admin(walk, world, superuser)
        walk_console(walk, world, superuser,
                     api_docs=(superuser, language) in {(True, "en"), (False, "zh-hans")})
    finally:
        context.close()
    assert not walk.problems, "\n\n".join(walk.problems)
    assert not server_errors.records, "\n\n".join(server_errors.records)
