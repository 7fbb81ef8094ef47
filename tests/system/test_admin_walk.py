"""Walk the admin and the console as their users do, so that no page ships answering 5xx.

For every ModelAdmin registered on the admin site (read from the site when the tests are
collected, so a new one is walked without editing this file), as a superuser: the change list
(plain, with a search, and with each list filter's first choice), the add page, the change,
history and delete pages of an existing record, a POST of the change page as shown, and a POST
of the add form filled generically from the form as rendered. Admin → Products → Add and
Devices → Add once answered 500 on save because no test saved them; here every form is saved.
Every console URL (read from its URL resolver) is opened, then posted to, by a superuser and
by an operator of one department.
"""

from __future__ import annotations

import datetime
import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from django import forms
from django.contrib import admin
from django.contrib.admin.utils import quote
from django.db import models
from django.test import Client
from django.urls import URLPattern, get_resolver, reverse
from django.utils import timezone

from tests.system.conftest import PASSWORD, Org, make_device, make_product

pytestmark = pytest.mark.django_db

REGISTERED = sorted(admin.site._registry, key=lambda m: m._meta.label)
TEXT = "walk1"  # what a required text box gets: a valid code, name or identifier alike


class World:
    """A superuser, department A with a product and a device made by the platform's actions,
    and an operator of department A (the built-in operator role, scoped to it)."""

    def __init__(self) -> None:
        from webapp.system.defaults import OPERATOR
        from webapp.system.models import Role, User

        self.org = Org()
        self.root = User.objects.create_superuser("root", "root@example.com", PASSWORD)
        self.product = make_product("thermo", self.org.a, created_by=self.root)
        self.device = make_device("dev-1", self.product, self.org.a, created_by=self.root)
        self.other = make_device("dev-b", make_product("thermo-b", self.org.b), self.org.b)
        self.operator = self.org.user("ops", self.org.a,
                                      roles=[Role.objects.get(code=OPERATOR)])
        self.made: dict[str, Any] = {}

    def one(self, model: type[models.Model]) -> models.Model:
        """A record of `model`: an existing one, or one made by its factory."""
        found = model._default_manager.order_by("pk").first()
        if found is not None:
            return found
        label = model._meta.label
        assert label in FACTORIES, f"{label} has no record: add a factory to FACTORIES"
        if label not in self.made:
            self.made[label] = FACTORIES[label](self)
        return self.made[label]


# ---------------------------------------------------------------------------------------------
# Factories: one record of each model the world does not hold already, made the way the
# platform makes it (its actions) where it has a way.


def _channel(world: World) -> Any:
    from webapp.rules.actions.channels import save_channel

    return save_channel(acting_user=world.root, channel=None,
                        data={"name": "inbox", "channel_type": "insite", "config": {}})


def _sink(world: World) -> Any:
    from webapp.rules.actions.sinks import save_sink

    return save_sink(acting_user=world.root, sink=None,
                     data={"name": "log", "sink_type": "log", "config": {}})


def _rule(world: World) -> Any:
    from webapp.rules.actions.rules import create_rule

    return create_rule(acting_user=world.root, data={
        "name": "hot", "product": world.product,
        "trigger": {"type": "property", "product": "thermo", "service": "env",
                    "property": "temperature"},
        "condition": {"property": "temperature", "op": ">", "value": 30}, "actions": []})


def _alarm(world: World) -> Any:
    from webapp.rules.actions.alarms import raise_alarm

    alarm, _raised = raise_alarm(rule=None, device=world.device.identifier, severity="major",
                                 name="hot", message="too hot", details={})
    return alarm


def _trace(world: World) -> Any:
    from webapp.rules.actions.rules import record_trace

    return record_trace(rule=world.one(_model("rules.Rule")), kind="test",
                        device=world.device.identifier, ts_ms=1_700_000_000_000,
                        message={"temperature": 40}, conditions={}, results=[{"ok": True}])


def _dead_letter(world: World) -> Any:
    from webapp.rules.actions.sinks import record_dead_letter

    return record_dead_letter(sink=world.one(_model("rules.Sink")), rule_id=None,
                              message={"temperature": 40}, payload="{}", error="refused",
                              attempts=3)


def _notification(world: World) -> Any:
    from webapp.rules.actions.notifications import create_notification

    return create_notification(channel=world.one(_model("rules.NotificationChannel")),
                               channel_type="insite", user=world.root, title="hot",
                               body="too hot")


def _command(world: World) -> Any:
    from webapp.devices.actions.commands import send_command

    return send_command(acting_user=world.root, device=world.device, service="env",
                        command="set_interval", params={"seconds": 10})


def _group(world: World) -> Any:
    from webapp.devices.actions.groups import create_group

    return create_group(data={"name": "boilers"})


def _acl_rule(world: World) -> Any:
    from webapp.access.actions import create_rule

    return create_rule(product=world.product, topic="/thermo/alerts", decision="allow")


def _registration(world: World) -> Any:
    from webapp.access.actions import enable_registration

    return enable_registration(product=world.product)[0]


def _device_keys(world: World) -> Any:
    from webapp.access.actions import set_device_keys

    return set_device_keys(device=world.device)[0]


def _package(world: World) -> Any:
    from django.core.files.uploadedfile import SimpleUploadedFile

    from webapp.ota.actions import create_package

    return create_package(acting_user=world.root, product=world.product, name="firmware",
                          version="1.0.0", package_type="firmware",
                          upload=SimpleUploadedFile("fw.bin", b"\x00" * 64))


def _campaign(world: World) -> Any:
    from webapp.ota.actions import create_campaign

    return create_campaign(acting_user=world.root, package=world.one(_model("ota.OtaPackage")),
                           name="roll-out", target_type="devices", devices=[world.device],
                           start=False)


def _message_log(world: World) -> Any:
    from webapp.telemetry.messagelog import LoggedMessage, store
    from webapp.telemetry.models import DeviceMessage

    store([LoggedMessage(world.device.identifier, timezone.now(), "up",
                         "/v1/devices/dev-1/datas", '{"temperature": 21}', "ok", "", None)])
    return DeviceMessage.objects.get()


def _retention(world: World) -> Any:
    from webapp.telemetry.models import RetentionPolicy

    return RetentionPolicy.objects.create(product=world.product)


def _interval(world: World) -> Any:
    from django_celery_beat.models import IntervalSchedule

    return IntervalSchedule.objects.create(every=10, period="seconds")


def _periodic_task(world: World) -> Any:
    from django_celery_beat.models import PeriodicTask

    return PeriodicTask.objects.create(name="sweep", task="devices.sweep_offline",
                                       interval=world.one(_model("django_celery_beat."
                                                                 "IntervalSchedule")))


def _event(world: World) -> Any:
    from webapp.products.actions import create_product

    product = create_product(acting_user=world.root, data={
        "identifier": "door", "name": "Door", "product_type": "common", "protocol": "mqtt",
        "services": [{"code": "door", "name": "Door", "events": [
            {"code": "forced", "name": "Forced open", "outputs": [
                {"code": "force", "datatype": "int", "min": 0, "max": 100}]}]}]})
    return _model("products.Event")._default_manager.get(service__product=product)


def _api_key(world: World) -> Any:
    from webapp.system.actions import create_api_key

    return create_api_key(acting_user=world.root, user=world.root, name="ci")[0]


def _notice(world: World) -> Any:
    from webapp.system.actions import publish_notice
    from webapp.system.models import Notice

    notice = Notice.objects.create(title="maintenance", content="tonight",
                                   department=world.org.a, created_by=world.root)
    publish_notice(acting_user=world.root, notice=notice)
    return notice


def _message(world: World) -> Any:
    world.one(_model("system.Notice"))  # publishing it messages its audience
    return _model("system.Message")._default_manager.order_by("pk").first()


def _operation_log(world: World) -> Any:
    from webapp.core.context import operation_context
    from webapp.system.models import OperationLog, Position

    with operation_context("api", user=world.root):
        Position.objects.create(code="ops", name="Operator")
    return OperationLog.objects.get()


def _simple(label: str, **fields: Any) -> Callable[[World], Any]:
    """A record with plain `fields`, for models the platform writes with a bare create."""
    return lambda world: _model(label)._default_manager.create(**fields)


FACTORIES: dict[str, Callable[[World], Any]] = {
    "access.AclRule": _acl_rule,
    "access.DeviceKeys": _device_keys,
    "access.ProductRegistration": _registration,
    "auth.Group": _simple("auth.Group", name="auditors"),
    "devices.DeviceCommand": _command,
    "devices.DeviceGroup": _group,
    "django_celery_beat.ClockedSchedule": _simple("django_celery_beat.ClockedSchedule",
                                                  clocked_time=timezone.now()),
    "django_celery_beat.CrontabSchedule": _simple("django_celery_beat.CrontabSchedule",
                                                  minute="0", hour="3"),
    "django_celery_beat.IntervalSchedule": _interval,
    "django_celery_beat.PeriodicTask": _periodic_task,
    "django_celery_beat.SolarSchedule": _simple("django_celery_beat.SolarSchedule",
                                                event="sunrise", latitude=31.23,
                                                longitude=121.47),
    "ota.OtaCampaign": _campaign,
    "ota.OtaPackage": _package,
    "rules.Alarm": _alarm,
    "rules.DeadLetter": _dead_letter,
    "rules.Notification": _notification,
    "rules.NotificationChannel": _channel,
    "rules.Rule": _rule,
    "rules.RuleTrace": _trace,
    "rules.Sink": _sink,
    "products.Event": _event,
    "system.ApiKey": _api_key,
    "system.Message": _message,
    "system.Notice": _notice,
    "system.OperationLog": _operation_log,
    "system.Position": _simple("system.Position", code="eng", name="Engineer"),
    "system.TaskRun": _simple("system.TaskRun", task_id="r1",
                              task_name="devices.sweep_offline", status="success"),
    "telemetry.DeviceMessage": _message_log,
    "telemetry.RetentionPolicy": _retention,
}


def _model(label: str) -> type[models.Model]:
    from django.apps import apps

    return apps.get_model(label)


# ---------------------------------------------------------------------------------------------
# The add form, filled as a user would: what it shows, and a valid value in each required box
# left empty.


def _upload(world: World) -> dict[str, Any]:
    from django.core.files.uploadedfile import SimpleUploadedFile

    return {"file": SimpleUploadedFile("fw.bin", b"\x00" * 64), "version": "2.0.0"}


# Where the generic filling cannot be valid; each with the reason.
OVERRIDES: dict[str, Callable[[World], dict[str, Any]]] = {
    # A command is checked against the device's thing model: a service and command it has.
    "devices.DeviceCommand": lambda world: {"device": world.device.pk, "service": "env",
                                            "command": "set_interval",
                                            "params": json.dumps({"seconds": 10})},
    # django-celery-beat's form wants a task name and one of its four kinds of schedule.
    "django_celery_beat.PeriodicTask": lambda world: {
        "regtask": "", "task": "devices.sweep_offline",
        "interval": world.one(_model("django_celery_beat.IntervalSchedule")).pk},
    # A package is an uploaded file (and a version the product has not yet).
    "ota.OtaPackage": _upload,
    # A rule's trigger names a property of a product's thing model.
    "rules.Rule": lambda world: {"trigger": json.dumps({
        "type": "property", "product": "thermo", "service": "env",
        "property": "temperature"})},
    # The first sink type (HTTP) sends outside: its URL must reach an allowed network.
    "rules.Sink": lambda world: {"sink_type": "log"},
}


def _first_choice(field: forms.ChoiceField) -> Any:
    for value, label in field.choices:
        if isinstance(label, list | tuple):  # an option group
            for inner, _inner_label in label:
                if inner not in ("", None):
                    return inner
        elif value not in ("", None):
            return value
    raise AssertionError(f"no choice offered in {field!r}")


def _filler(model: type[models.Model], name: str, field: forms.Field) -> Any:
    """A valid value for the required, empty box `name`."""
    if isinstance(field, forms.ModelMultipleChoiceField):
        return [field.queryset.order_by("pk").values_list("pk", flat=True)[0]]
    if isinstance(field, forms.ModelChoiceField):
        choices = field.queryset.order_by("pk")
        model_field = model._meta.get_field(name)
        if model_field.unique:  # a one-to-one: a record that has none yet
            choices = choices.exclude(pk__in=model._default_manager.values(
                model_field.attname))
        first = choices.first()
        assert first is not None, f"{model._meta.label}.{name}: nothing to choose"
        return first.pk
    if isinstance(field, forms.MultipleChoiceField):
        return [_first_choice(field)]
    if isinstance(field, forms.ChoiceField):
        return _first_choice(field)
    if isinstance(field, forms.JSONField):
        return json.dumps(model._meta.get_field(name).get_default())
    if isinstance(field, forms.BooleanField):
        return True
    if isinstance(field, forms.IntegerField | forms.FloatField | forms.DecimalField):
        return field.min_value if field.min_value is not None else 1
    if isinstance(field, forms.SplitDateTimeField | forms.DateTimeField):
        return timezone.localtime()
    if isinstance(field, forms.DateField):
        return timezone.localdate()
    if isinstance(field, forms.TimeField):
        return datetime.time(3, 0)
    if isinstance(field, forms.DurationField):
        return "00:01:00"
    if isinstance(field, forms.EmailField):
        return "walk@example.com"
    if isinstance(field, forms.URLField):
        return "https://example.com/walk"
    if isinstance(field, forms.GenericIPAddressField):
        return "192.0.2.1"
    if isinstance(field, forms.UUIDField):
        return str(uuid.uuid4())
    if isinstance(field.widget, forms.PasswordInput):
        return PASSWORD  # the same in both boxes, and strong enough
    if isinstance(field, forms.CharField):
        return TEXT
    raise AssertionError(f"{model._meta.label}.{name}: no generic value for {field!r}")


def _post_value(data: dict[str, Any], name: str, field: forms.Field, value: Any) -> None:
    """Put `value` in the POST body the way the field's widget reads it back."""
    widget = field.widget
    if isinstance(field, forms.BooleanField):
        if value:
            data[name] = "on"
    elif isinstance(widget, forms.MultiWidget):
        parts = value if isinstance(value, list | tuple) else widget.decompress(value)
        for suffix, sub, part in zip(widget.widgets_names, widget.widgets, parts, strict=True):
            data[name + suffix] = "" if part is None else sub.format_value(part)
    elif isinstance(value, list | tuple):
        data[name] = [str(v) for v in value]
    elif value is not None:
        data[name] = value


def add_form_data(page: Any, model: type[models.Model], world: World) -> dict[str, Any]:
    """The POST body of the admin add page `page`: each box as rendered, required empty ones
    filled, inlines left empty (their management forms only), then the model's override."""
    form = page.context["adminform"].form
    data: dict[str, Any] = {}
    for name, field in form.fields.items():
        if field.disabled or isinstance(field, forms.FileField):
            continue
        value = form[name].value()
        empty = value in (None, "", [], (), "{}", "[]", "null")
        # A password box is never shown filled, and an account needs one.
        if empty and (field.required or isinstance(field.widget, forms.PasswordInput)):
            value = _filler(model, name, field)
        _post_value(data, name, field, value)
    for inline in page.context["inline_admin_formsets"]:
        formset = inline.formset
        management = formset.management_form
        data.update({f"{formset.prefix}-TOTAL_FORMS": "0",
                     f"{formset.prefix}-INITIAL_FORMS": "0",
                     f"{formset.prefix}-MIN_NUM_FORMS": management["MIN_NUM_FORMS"].value(),
                     f"{formset.prefix}-MAX_NUM_FORMS": management["MAX_NUM_FORMS"].value()})
    override = OVERRIDES.get(model._meta.label)
    if override is not None:
        data.update(override(world))
    return data


def change_form_data(page: Any) -> dict[str, Any]:
    """The POST body of an admin change page `page` sent back as rendered: its form, and
    each inline formset's management form and forms (the browser's "Save" with no edit)."""
    data: dict[str, Any] = {}
    rendered = [page.context["adminform"].form]
    for inline in page.context["inline_admin_formsets"]:
        rendered += [inline.formset.management_form, *inline.formset.forms]
    for form in rendered:
        for name, field in form.fields.items():
            if field.disabled or isinstance(field, forms.FileField):
                continue
            _post_value(data, form[name].html_name, field, form[name].value())
            if field.show_hidden_initial:  # what the box held, for has_changed()
                _post_value(data, form[name].html_initial_name, field, form[name].value())
    return data


def _errors(page: Any) -> Any:
    """What the add page said was wrong, for an assertion's message."""
    context = page.context or {}
    found: dict[str, Any] = {}
    if "adminform" in context:
        found["form"] = context["adminform"].form.errors
    for inline in context.get("inline_admin_formsets", ()):
        found[inline.formset.prefix] = inline.formset.errors
    return found or page.content.decode()[-1500:]


# ---------------------------------------------------------------------------------------------
# The admin walk.


@pytest.fixture
def world(redis_prefix: str) -> World:
    return World()


@pytest.fixture
def root_client(client: Client, world: World) -> Client:
    client.force_login(world.root)
    return client


def _get(client: Client, url: str) -> Any:
    response = client.get(url)
    assert response.status_code < 500, (url, response.status_code)
    return response


@pytest.mark.parametrize("model", REGISTERED, ids=lambda m: m._meta.label)
def test_admin_pages_render_and_add_forms_save(root_client: Client, world: World,
                                               model: type[models.Model]) -> None:
    """As a superuser: every page of the model's admin answers 200 (or 403 where the admin
    refuses by design), a change page saved as shown saves, and the add form, filled with
    valid data, saves a record."""
    model_admin = admin.site._registry[model]
    info = f"admin:{model._meta.app_label}_{model._meta.model_name}"
    record = world.one(model)

    changelist_url = reverse(f"{info}_changelist")
    changelist = _get(root_client, changelist_url)
    assert changelist.status_code == 200
    request = changelist.wsgi_request
    assert _get(root_client, changelist_url + "?q=walk").status_code == 200
    for spec in changelist.context["cl"].filter_specs:
        choice = next((c for c in spec.choices(changelist.context["cl"])
                       if not c["selected"]), None)
        if choice is not None:
            assert _get(root_client, changelist_url + choice["query_string"]).status_code == 200

    change_url = reverse(f"{info}_change", args=[quote(record.pk)])
    change_page = _get(root_client, change_url)
    assert change_page.status_code == 200
    if change_page.context["has_change_permission"]:  # "Save" with nothing edited
        saved = root_client.post(change_url, change_form_data(change_page))
        assert saved.status_code == 302, (change_url, saved.status_code, _errors(saved))
    assert _get(root_client, reverse(f"{info}_history",
                                     args=[quote(record.pk)])).status_code == 200
    deletable = model_admin.has_delete_permission(request, record)
    assert _get(root_client, reverse(f"{info}_delete", args=[quote(record.pk)])).status_code \
        == (200 if deletable else 403)

    add_url = reverse(f"{info}_add")
    add_page = _get(root_client, add_url)
    if not model_admin.has_add_permission(request):
        assert add_page.status_code == 403, "the admin offers no add: the page must refuse"
        return
    assert add_page.status_code == 200
    before = model._default_manager.count()
    saved = root_client.post(add_url, add_form_data(add_page, model, world))
    assert saved.status_code == 302, (add_url, saved.status_code, _errors(saved))
    assert model._default_manager.count() == before + 1


def test_product_pages_show_their_own_thing_model(root_client: Client, world: World) -> None:
    """A product's change page shows its thing model as JSON that saves back unchanged, and
    the next add page starts empty (the model was set on the form class shared by all
    product forms, encoded twice: the add page showed the last product opened and neither
    page could be saved)."""
    change_url = reverse("admin:products_product_change", args=[world.product.pk])
    page = root_client.get(change_url)
    shown = page.context["adminform"].form["thing_model"].value()
    assert json.loads(shown)[0]["code"] == "env"
    assert root_client.post(change_url, change_form_data(page)).status_code == 302
    add_page = root_client.get(reverse("admin:products_product_add"))
    assert json.loads(add_page.context["adminform"].form["thing_model"].value()) is None


def test_the_walk_tables_name_registered_models() -> None:
    """The walk's tables name only registered models (a stale entry is a mistake)."""
    labels = {m._meta.label for m in REGISTERED}
    assert set(FACTORIES) <= labels and set(OVERRIDES) <= labels


# ---------------------------------------------------------------------------------------------
# The console walk.

CONSOLE = get_resolver().namespace_dict["console"][1]


def _console_urls(world: World, alarm: Any) -> list[str]:
    """Every console URL, its arguments taken from the world (a record in the operator's
    department, and one outside it)."""
    urls = []
    for pattern in CONSOLE.url_patterns:
        assert isinstance(pattern, URLPattern), "the console nests no URL list"
        params = set(pattern.pattern.converters)
        if not params:
            urls.append(reverse(f"console:{pattern.name}"))
            continue
        assert params in ({"identifier"}, {"pk"}), f"{pattern.name}: unknown arguments {params}"
        if params == {"pk"}:
            urls.append(reverse(f"console:{pattern.name}", kwargs={"pk": alarm.pk}))
            continue
        if str(pattern.name).startswith("product"):
            records = [world.product.identifier, world.other.product.identifier]
        else:
            records = [world.device.identifier, world.other.identifier, "no-such-device"]
        urls += [reverse(f"console:{pattern.name}", kwargs={"identifier": r}) for r in records]
    return urls


@pytest.mark.parametrize("who", ["root", "operator"])
def test_every_console_url_answers_below_500(client: Client, world: World, who: str) -> None:
    """A superuser and a department's operator open, then post an empty form to, every
    console page: none answers 5xx (refusals and form errors are 4xx or a page)."""
    user = world.root if who == "root" else world.operator
    alarm = FACTORIES["rules.Alarm"](world)
    urls = _console_urls(world, alarm)
    assert len(urls) >= len(CONSOLE.url_patterns)
    for method in ("get", "post"):
        for url in urls:
            client.force_login(user)  # the logout page signs out
            response = getattr(client, method)(url)
            assert response.status_code < 500, (method, url, response.status_code)
