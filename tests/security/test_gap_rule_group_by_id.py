"""Known gap closed: rules named their trigger's device group by name. An operator of A made a
scheduled rule (no product) over A's group "north"; the group was deleted, and department B
created a group "north" of its own: the rule then watched B's devices and ran its actions on
B's latest values. A rule now keeps the group's id (a name is still accepted from clients,
resolved within the caller's data scope), so a re-created name is another group."""

from __future__ import annotations

import json

import pytest

from tests.rules.test_scope import PERMS
from tests.security.rbac import own_cache_prefix  # noqa: F401  (fixtures)
from tests.security.scoped_operator import jwt_client
from tests.system.conftest import Org, make_device, make_product
from webapp.core.redis import get_redis, keys

pytestmark = pytest.mark.django_db

GROUP_PERMS = [*PERMS, "devices.view_device", "devices.change_device",
               *(f"devices.{verb}_devicegroup" for verb in ("view", "add", "change", "delete"))]


@pytest.fixture
def world(db, redis_prefix):
    org = Org()
    org.alice = org.user("alice", org.a, GROUP_PERMS, scope="department")
    org.bob = org.user("bob", org.b, GROUP_PERMS, scope="department")
    org.dev_a = make_device("dev-a", make_product("p-a", org.a), org.a)
    org.dev_b = make_device("dev-b", make_product("p-b", org.b), org.b)
    for device in ("dev-a", "dev-b"):
        get_redis().hset(keys().latest(device), "env", json.dumps(
            {"temperature": {"value": 45, "ts": 1}}))
    return org


def _group(client, name: str, device) -> int:
    made = client.post("/api/v1/device-groups/", {"name": name,
                                                  "department": device.department_id},
                       format="json")
    assert made.status_code == 201, made.content
    pk = made.json()["id"]
    added = client.post(f"/api/v1/device-groups/{pk}/devices/",
                        {"add": [device.identifier]}, format="json")
    assert added.status_code in (200, 201), added.content
    return pk


SCHEDULED = {"name": "hot-north", "trigger": {"type": "schedule", "cron": "*/5 * * * *",
                                              "service": "env", "group": "north"},
             "condition": {"property": "temperature", "op": ">", "value": 30},
             "actions": [{"type": "alarm", "severity": "major"}]}


def test_a_recreated_group_name_is_not_watched(world):
    from webapp.rules.models import Alarm, Rule, RuleTrace
    from webapp.rules.tasks import run_schedule

    alice, bob = jwt_client(world.alice), jwt_client(world.bob)
    north = _group(alice, "north", world.dev_a)
    created = alice.post("/api/v1/rules/", SCHEDULED, format="json")
    assert created.status_code == 201, created.content
    rule = created.json()
    assert run_schedule(rule["id"]) == 1  # A's device, as intended

    assert alice.delete(f"/api/v1/device-groups/{north}/").status_code == 204
    _group(bob, "north", world.dev_b)  # B re-creates the name with its own device

    Alarm.objects.all().delete()
    run_schedule(rule["id"])
    assert not Alarm.objects.filter(device=world.dev_b).exists()
    assert not RuleTrace.objects.filter(rule_id=rule["id"], device="dev-b").exists()
    # The name was accepted (older clients) and kept as the group's id; both are answered.
    assert Rule.objects.get(pk=rule["id"]).trigger["group"] == north
    assert rule["trigger"]["group"] == north
    assert rule["group"] == {"id": north, "name": "north"}


def test_a_name_resolves_only_within_the_callers_scope(world):
    """B's group, named by name or by id, is refused as a group that does not exist; alice
    re-saving her rule unchanged keeps it."""
    bob = jwt_client(world.bob)
    theirs = _group(bob, "south", world.dev_b)
    alice = jwt_client(world.alice)
    for ref in ("south", theirs):
        refused = alice.post("/api/v1/rules/", {**SCHEDULED, "trigger": {
            **SCHEDULED["trigger"], "group": ref}}, format="json")
        assert refused.status_code == 400, refused.content
        assert "There is no device group" in refused.content.decode()
    for ref in (True, [1], {"id": theirs}):
        refused = alice.post("/api/v1/rules/", {**SCHEDULED, "trigger": {
            **SCHEDULED["trigger"], "group": ref}}, format="json")
        assert refused.status_code == 400, refused.content
    ours = _group(alice, "north", world.dev_a)
    on_product = {**SCHEDULED, "trigger": {"type": "property", "product": "p-a",
                                           "service": "env", "property": "temperature",
                                           "group": "north"}}
    rule = alice.post("/api/v1/rules/", on_product, format="json").json()
    kept = alice.put(f"/api/v1/rules/{rule['id']}/", {**on_product, "trigger": rule["trigger"]},
                     format="json")
    assert kept.status_code == 200, kept.content
    assert kept.json()["group"] == {"id": ours, "name": "north"}


def test_existing_names_migrate_within_the_rules_department(world):
    """The data migration: a name of a group in the rule's product's department becomes its
    id; a name of another department's group is not resolved, and the rule is disabled with
    the reason."""
    from django.apps import apps

    from webapp.devices.models import DeviceGroup
    from webapp.rules.models import Rule

    migration = __import__("webapp.rules.migrations.0005_rule_trigger_group_by_id",
                           fromlist=["names_to_ids"])
    ours = DeviceGroup.objects.create(name="north", department=world.a)
    DeviceGroup.objects.create(name="south", department=world.b)
    base = {"type": "property", "product": "p-a", "service": "env", "property": "temperature"}
    product = world.dev_a.product
    good = Rule.objects.create(name="good", trigger_type="property", product=product,
                               trigger={**base, "group": "north"})
    bad = Rule.objects.create(name="bad", trigger_type="property", product=product,
                              trigger={**base, "group": "south"})
    migration.names_to_ids(apps, None)
    good.refresh_from_db()
    bad.refresh_from_db()
    assert good.trigger["group"] == ours.pk and good.enabled
    assert bad.trigger["group"] == "south" and not bad.enabled
    assert "south" in bad.failure_reason
