"""Regressions found walking the admin and the console in a browser after issue 12
(tests/security/test_browser_admin_forms.py), reproduced here without a browser:

- /api/schema/ answered 500 to every signed-in user who has a department (the schema needs a
  login since issue 12): the scoped serializers' default department, a model instance, was
  put in the schema.
- The sink add form said "added successfully" for a sink whose destination was refused (the
  refusal came after validation, in `save_model`): nothing was saved, the message lied.
- A JSON box left empty (a device's tags, a rule's condition, a channel's settings…) was
  None for a NOT NULL column: a 500 when the record was written.
"""

from __future__ import annotations

import json

import pytest

from tests.security.rbac import (  # noqa: F401  (fixtures)
    admin_form,
    form_data,
    org_fixture,
    own_cache_prefix,
)
from tests.system.conftest import PASSWORD, make_product
from webapp.devices.models import Device
from webapp.rules.models import NotificationChannel, Rule, Sink

pytestmark = pytest.mark.django_db

SINK_MANAGER = ("rules.view_sink", "rules.add_sink", "rules.change_sink")


@pytest.fixture
def ops_client(client, org, redis_prefix, settings):
    """A staff operator of department A who manages sinks; no network is allowed."""
    settings.OUTBOUND_ALLOWED_NETWORKS = []
    org.user("ops", org.a, SINK_MANAGER, scope="department", staff=True)
    assert client.login(username="ops", password=PASSWORD)
    return client


def test_api_schema_for_a_user_with_a_department(ops_client):
    """The schema and its docs load for a signed-in user of a department, and the schema
    names no department of theirs (it describes the API, not the caller)."""
    schema = ops_client.get("/api/schema/?format=json")
    assert schema.status_code == 200
    patched = schema.json()["components"]["schemas"]["PatchedSink"]["properties"]
    assert "default" not in patched["department"]
    assert ops_client.get("/api/schema/").status_code == 200
    assert ops_client.get("/api/docs/").status_code == 200


def _sink_post(org, **config):
    return {"name": "archive", "sink_type": "http", "enabled": "on", "department": org.a.pk,
            "config": json.dumps(config), "filter": "", "payload_template": "",
            "credentials": "", "max_retries": 3, "backoff": 2.0}


def test_sink_add_with_a_refused_destination_is_a_form_error(ops_client, org):
    """The form comes back with the reason; no sink, no "added successfully"."""
    page = ops_client.post("/admin/rules/sink/add/",
                           _sink_post(org, url="http://127.0.0.1:9/in"), follow=True)
    body = page.content.decode()
    assert page.status_code == 200 and page.redirect_chain == []
    assert "The destination 127.0.0.1 is refused" in body
    assert "was added successfully" not in body
    assert not Sink.objects.exists()

    bad_filter = ops_client.post("/admin/rules/sink/add/", {
        **_sink_post(org, url="https://93.184.215.14/in"), "filter": "temperature >"})
    assert bad_filter.status_code == 200 and not Sink.objects.exists()

    saved = ops_client.post("/admin/rules/sink/add/",
                            _sink_post(org, url="https://93.184.215.14/in"), follow=True)
    assert saved.redirect_chain and "was added successfully" in saved.content.decode()
    assert Sink.objects.get().department == org.a


def test_an_old_sink_with_a_refused_destination_can_still_be_disabled(ops_client, org):
    """Its destination is not checked again when it is unchanged (every delivery checks it):
    an operator can still switch it off."""
    old = Sink.objects.create(name="old", sink_type="http", department=org.a,
                              config={"url": "http://10.0.0.7/in"})
    url = f"/admin/rules/sink/{old.pk}/change/"
    data = form_data(admin_form(ops_client, url))
    data.pop("enabled")
    response = ops_client.post(url, data)
    assert response.status_code == 302, response.content.decode()[-2000:]
    old.refresh_from_db()
    assert old.enabled is False
    data["config"] = json.dumps({"url": "http://10.0.0.8/in"})  # a new destination: checked
    refused = ops_client.post(url, data)
    assert refused.status_code == 200 and "10.0.0.8" in refused.content.decode()


def test_empty_json_boxes_save_as_their_defaults(client, org, redis_prefix):
    """A superuser leaves the JSON boxes of the device, rule, channel and sink forms empty:
    each record is saved with `{}` / `[]`; a required box (a rule's trigger) still says so."""
    from webapp.system.models import User

    User.objects.create_superuser("root", "root@example.com", PASSWORD)
    assert client.login(username="root", password=PASSWORD)
    product = make_product("thermo", org.a)
    trigger = json.dumps({"type": "property", "product": "thermo", "service": "env",
                          "property": "temperature"})
    posts = {
        "/admin/devices/device/add/": {"identifier": "dev-1", "product": product.pk,
                                       "status": "activated", "tags": ""},
        "/admin/rules/rule/add/": {"name": "hot", "trigger": trigger, "condition": "",
                                   "debounce": "", "actions": "", "cooldown": 0,
                                   "fire_mode": "each"},
        "/admin/rules/notificationchannel/add/": {
            "name": "inbox", "channel_type": "insite", "config": "", "roles": "",
            "emails": "", "max_retries": 1},
        "/admin/rules/sink/add/": {"name": "log", "sink_type": "log", "config": "",
                                   "payload_template": "", "credentials": "",
                                   "max_retries": 1, "backoff": 1},
    }
    for url, data in posts.items():
        response = client.post(url, data)
        assert response.status_code == 302, (url, response.content.decode()[-2000:])
    assert Device.objects.get(identifier="dev-1").tags == {}
    rule = Rule.objects.get(name="hot")
    assert (rule.condition, rule.actions, rule.debounce) == ({}, [], {})
    channel = NotificationChannel.objects.get(name="inbox")
    assert (channel.config, channel.roles, channel.emails) == ({}, [], [])
    assert Sink.objects.get(name="log").config == {}
    no_trigger = client.post("/admin/rules/rule/add/", {**posts["/admin/rules/rule/add/"],
                                                        "name": "none", "trigger": ""})
    assert no_trigger.status_code == 200
    assert no_trigger.context["adminform"].form.errors["trigger"]
