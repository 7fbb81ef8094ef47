"""The rule engine on the ingest path: triggers, debounce, cool-down, replays, the index."""

import json

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from webapp.rules import engine
from webapp.rules.engine.evaluation import all_quiet
from webapp.rules.engine.index import Bucket
from webapp.rules.engine.state import PREVIOUS
from webapp.rules.models import Alarm, RuleTrace

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("commit_hooks")]

WEBHOOK_FREE_ALARM = [{"type": "alarm", "severity": "minor", "message": "{{device}} {{value}}"}]


def make_rule(api, condition=None, trigger=None, actions=None, **fields):
    body = {"name": fields.pop("name", "r"),
            "trigger": trigger or {"type": "property", "product": "thermo", "service": "env",
                                   "property": "temperature"},
            "condition": condition if condition is not None else {"op": ">", "value": 30},
            "actions": actions if actions is not None else WEBHOOK_FREE_ALARM, **fields}
    response = api.post("/api/v1/rules/", body, format="json")
    assert response.status_code == 201, response.json()
    return response.json()["id"]


def fired(rule_id):
    return RuleTrace.objects.filter(rule_id=rule_id, kind="fired").count()


def test_debounce_n_of_last_m(thermo, feed):
    """With count 2 of window 3 the rule fires on the second hot reading of three."""
    rule = make_rule(thermo, debounce={"count": 2, "window": 3})
    feed.data(temperature=35)
    assert fired(rule) == 0
    feed.data(temperature=20)
    assert fired(rule) == 0
    feed.data(temperature=36)
    assert fired(rule) == 1


def test_debounce_duration(thermo, feed):
    """A duration debounce fires only once the condition held for that long."""
    rule = make_rule(thermo, debounce={"duration": 2})
    feed.data(temperature=35)  # held since t
    feed.data(temperature=35)  # t + 1 s
    assert fired(rule) == 0
    feed.data(temperature=35)  # t + 2 s
    assert fired(rule) == 1


def test_cooldown_and_fire_on_change(thermo, feed):
    """Cool-down mutes refiring for its duration; `change` fires once per episode."""
    cool = make_rule(thermo, name="cool", cooldown=3)
    change = make_rule(thermo, name="change", fire_mode="change", actions=[])
    for _ in range(4):
        feed.data(temperature=35)  # t+1 … t+4: cool fires at t+1 and t+4
    assert fired(cool) == 2
    assert fired(change) == 1
    feed.data(temperature=10)
    feed.data(temperature=35)
    assert fired(change) == 2
    stats = thermo.get(f"/api/v1/rules/{cool}/stats/").json()
    assert stats["suppressed"] == 3 and stats["fired"] == 2


def test_listed_devices_and_other_properties(thermo, feed):
    """A rule for listed devices ignores others; a message without the property is skipped."""
    rule = make_rule(thermo, trigger={"type": "property", "product": "thermo", "service": "env",
                                      "property": "temperature", "devices": ["dev-2"]})
    feed.data(device="dev-1", temperature=40)
    feed.data(device="dev-2", humidity=50)
    assert fired(rule) == 0
    feed.data(device="dev-2", temperature=40)
    assert fired(rule) == 1
    assert Alarm.objects.get().device.identifier == "dev-2"


def test_condition_on_latest_values_of_another_property(thermo, feed):
    """A leaf on a property missing from the message reads the device's latest value."""
    rule = make_rule(thermo, condition={"all": [{"op": ">", "value": 30},
                                                {"property": "humidity", "op": ">", "value": 80}]})
    feed.data(humidity=90)
    feed.data(temperature=35)
    assert fired(rule) == 1
    trace = RuleTrace.objects.get(rule_id=rule)
    assert trace.conditions["all"][1]["source"] == "latest"


def test_event_status_and_command_response_triggers(thermo, feed, redis_client, redis_prefix):
    """Device events, online/offline and command responses trigger their rules."""
    event_rule = make_rule(thermo, name="ev", trigger={"type": "event", "product": "thermo",
                                                       "event": "overheat"},
                           condition={"property": "level", "op": ">=", "value": 2})
    offline_rule = make_rule(thermo, name="off", trigger={"type": "status", "product": "thermo",
                                                          "status": "offline"}, condition={},
                             actions=[{"type": "alarm", "severity": "warning",
                                       "message": "{{device}} went offline"}])
    failed_rule = make_rule(thermo, name="rsp", trigger={"type": "cmdrsp", "product": "thermo",
                                                         "command": "set_interval"},
                            condition={"property": "err", "op": "!=", "value": 0}, actions=[])
    ts = feed.ts + 1000
    feed.events({"t": "event", "dev": "dev-1", "prod": "thermo", "svc": "env",
                  "event": "overheat", "params": {"level": 1}, "ts": ts, "et": None},
                 {"t": "event", "dev": "dev-1", "prod": "thermo", "svc": "env",
                  "event": "overheat", "params": {"level": 3}, "ts": ts + 1, "et": None})
    assert fired(event_rule) == 1
    feed.events({"t": "status", "dev": "dev-2", "s": "online", "ts": ts, "node": "n"},
                {"t": "status", "dev": "dev-2", "s": "offline", "ts": ts + 5, "node": "n",
                 "reason": "keepalive"})
    assert fired(offline_rule) == 1
    alarm = Alarm.objects.get(rule_id=offline_rule)
    assert alarm.message == "dev-2 went offline" and alarm.severity == "warning"
    feed.events({"t": "status", "dev": "dev-2", "s": "online", "ts": ts + 9, "node": "n"})
    alarm.refresh_from_db()
    assert alarm.status == "cleared"  # the offline condition stopped holding
    feed.events({"t": "cmdrsp", "dev": "dev-1", "mid": 999, "svc": "env", "cmd": "set_interval",
                 "err": 1, "params": {}, "ts": ts + 20})
    assert fired(failed_rule) == 1


def test_a_redelivered_batch_fires_nothing_twice(thermo, feed, worker, redis_client,
                                                 redis_prefix):
    """Replaying the same entry (a crash before XACK) does not fire the rule again."""
    rule = make_rule(thermo, actions=[])
    event = {"t": "data", "dev": "dev-1", "prod": "thermo", "svc": "env", "ts": feed.ts + 5,
             "et": None, "v": {"temperature": 40}}
    feed.crash_after_hooks(event)
    feed.redeliver()
    assert fired(rule) == 1
    assert thermo.get(f"/api/v1/rules/{rule}/stats/").json()["replayed"] == 1


def test_late_and_interleaved_points_are_evaluated(thermo, feed):
    """A fresh entry is evaluated whole, even when its points are older than ones already
    evaluated for the device: a device uploading readings it buffered, or another ingest
    worker that got a newer entry of the same device first. (Only entries delivered
    before are checked against the replay guard.)"""
    rule = make_rule(thermo, actions=[])
    feed.data(temperature=20)                  # t + 1 s
    late = {"t": "data", "dev": "dev-1", "prod": "thermo", "svc": "env",
            "ts": feed.ts - 500, "et": None, "v": {"temperature": 40}}
    feed.events(late)                          # older than the last point, and hot
    assert fired(rule) == 1
    stats = thermo.get(f"/api/v1/rules/{rule}/stats/").json()
    assert stats.get("replayed", 0) == 0


def test_evaluation_runs_no_sql_and_follows_rule_changes(thermo, feed):
    """The index serves evaluation without SQL; a rule change is seen on the next batch."""
    from webapp.telemetry.backends import Point

    rule = make_rule(thermo, actions=[])
    batch_points = [Point("thermo", "env", "dev-1", feed.ts + i, feed.ts + i,
                          {"temperature": 10 + i % 10}) for i in range(1, 50)]
    from webapp.telemetry.ingest import Batch

    engine.on_batch(Batch(points=batch_points[:1]))  # warm
    with CaptureQueriesContext(connection) as queries:
        engine.on_batch(Batch(points=batch_points[1:]))
    assert len(queries) == 0
    thermo.patch(f"/api/v1/rules/{rule}/", {"condition": {"op": "<", "value": 0}},
                 format="json")
    feed.data(temperature=-5)
    assert fired(rule) == 1
    thermo.patch(f"/api/v1/rules/{rule}/", {"enabled": False}, format="json")
    feed.data(temperature=-6)
    assert fired(rule) == 1


def test_state_lives_in_redis_per_device(thermo, feed, redis_client, redis_prefix):
    """Per-device state (open alarm, last firing) is kept in Redis for every ingest worker."""
    rule = make_rule(thermo)
    feed.data(temperature=35)
    state = json.loads(redis_client.hget(f"{redis_prefix}rules:states", "dev-1"))[str(rule)]
    assert state["a"] == 1 and state["f"] == feed.ts


def test_firings_wait_in_redis_for_a_worker(thermo, feed, redis_client, redis_prefix):
    """Without an inline worker, firings are queued in Redis and one drain task runs them."""
    from config.celery import app
    from webapp.rules.tasks import drain_firings

    rule = make_rule(thermo)
    app.conf.task_always_eager = False  # the autouse fixture restores it
    feed.data(temperature=35)
    feed.data(temperature=36)
    assert redis_client.llen(f"{redis_prefix}rules:firings") == 2
    assert redis_client.exists(f"{redis_prefix}rules:drain-pending")
    assert fired(rule) == 0
    assert drain_firings() == 2
    assert fired(rule) == 2 and Alarm.objects.get().count == 2
    assert not redis_client.exists(f"{redis_prefix}rules:firings")
    assert not redis_client.exists(f"{redis_prefix}rules:drain-pending")


def test_threshold_index_agrees_with_evaluating_every_rule():
    """Bisection over sorted thresholds picks exactly the rules whose condition holds."""
    import random

    from webapp.rules.compiler import compile_rule
    from webapp.rules.conditions import Message
    from webapp.rules.engine.decide import Outcome
    from webapp.rules.engine.evaluation import Item, verdicts

    rng = random.Random(3)
    trigger = {"type": "property", "product": "p", "service": "env", "property": "t"}
    rules = []
    for i in range(60):
        op = rng.choice([">", ">=", "<", "<="])
        leaf = {"op": op, "value": rng.choice([rng.randint(0, 20), rng.uniform(0, 20)])}
        condition = leaf if i % 3 else {"all": [leaf, {"property": "h", "op": "<", "value": 50}]}
        rules.append(compile_rule(id=i + 1, name=str(i), trigger=trigger, condition=condition,
                                  actions=[]))
    bucket = Bucket(rules)
    assert not bucket.general
    for _ in range(500):
        values = {"t": rng.choice([rng.randint(-1, 21), rng.uniform(-1, 21)]),
                  "h": rng.randint(0, 100)}
        msg = Message(kind="property", device="d", product="p", service="env", ts=1,
                      values=values)
        picked = {rule.id for rule, held in verdicts(Item(msg, bucket, bucket.guard), {},
                                                       Outcome()) if held}
        assert picked == {rule.id for rule in rules if rule.condition.holds(msg)}
        cold = all(le < values["t"] < ge and lt <= values["t"] <= gt
                   for _p, gt, ge, lt, le, _c in bucket.cold_ranges)
        assert cold == (not any(Bucket._guard(rule).test(values["t"], None)
                                for rule in rules))


def test_actions_on_other_devices_groups_and_the_shadow(api, redis_prefix, thermo_payload,
                                                        feed):
    """A group trigger; a command to another (offline) device waits; desired shadow is set."""
    from webapp.devices.models import Device, DeviceCommand, DeviceGroup

    thermo_payload["services"][0]["properties"].append(
        {"code": "setpoint", "datatype": "decimal", "min": 0, "max": 100, "access": "RW"})
    assert api.post("/api/v1/products/", thermo_payload, format="json").status_code == 201
    for name in ("dev-1", "dev-2"):
        api.post("/api/v1/devices/", {"product": "thermo", "identifier": name}, format="json")
    thermo = api
    group = DeviceGroup.objects.create(name="north")
    Device.objects.get(identifier="dev-2").groups.add(group)
    rule = make_rule(thermo, trigger={"type": "property", "product": "thermo", "service": "env",
                                      "property": "temperature", "group": "north"},
                     actions=[{"type": "command", "device": "dev-1", "service": "env",
                               "command": "set_interval", "params": {"seconds": "{{value}}"}},
                              {"type": "shadow", "service": "env",
                               "values": {"setpoint": 22.5}}])
    feed.data(device="dev-1", temperature=45)  # not in the group
    assert fired(rule) == 0
    feed.data(device="dev-2", temperature=45)
    trace = RuleTrace.objects.get(rule_id=rule)
    assert [r["ok"] for r in trace.results] == [True, True], trace.results
    command = DeviceCommand.objects.get()
    assert (command.device.identifier, command.params) == ("dev-1", {"seconds": 45})
    assert command.status == "pending"  # dev-1 is offline: it waits for the device
    shadow = Device.objects.get(identifier="dev-2").shadow
    assert shadow.desired == {"env": {"setpoint": 22.5}} and shadow.version == 1


def test_group_membership_changes_reach_the_index(thermo, feed):
    """Adding a device to a group makes a group rule watch it from the next batch on."""
    from webapp.devices.models import Device, DeviceGroup

    group = DeviceGroup.objects.create(name="south")
    rule = make_rule(thermo, trigger={"type": "property", "product": "thermo", "service": "env",
                                      "property": "temperature", "group": "south"},
                     actions=[])
    feed.data(device="dev-1", temperature=45)
    assert fired(rule) == 0
    Device.objects.get(identifier="dev-1").groups.add(group)
    feed.data(device="dev-1", temperature=46)
    assert fired(rule) == 1


def test_raise_and_clear_within_one_batch(thermo, feed):
    """A hot then a cool reading in the same batch open and clear the alarm, in order."""
    rule = make_rule(thermo)
    ts = feed.ts + 1000
    feed.events(*[{"t": "data", "dev": "dev-1", "prod": "thermo", "svc": "env", "ts": ts + i,
                   "et": None, "v": {"temperature": value}}
                  for i, value in enumerate([20, 35, 21, 22])])
    assert list(RuleTrace.objects.filter(rule_id=rule).order_by("id").values_list(
        "kind", flat=True)) == ["fired", "cleared"]
    assert Alarm.objects.get().status == "cleared"


def test_a_deleted_devices_state_goes_with_it(thermo, feed, redis_client, redis_prefix):
    """Rule state lives in one hash for all devices: deleting a device removes its field."""
    make_rule(thermo)
    feed.data(temperature=35)
    assert redis_client.hexists(f"{redis_prefix}rules:states", "dev-1")
    assert thermo.delete("/api/v1/devices/dev-1/").status_code == 204
    assert not redis_client.hexists(f"{redis_prefix}rules:states", "dev-1")


def test_stateful_operators_compare_with_the_previous_report(thermo, feed, redis_client,
                                                           redis_prefix):
    """`increased_by` and `changed` compare with the device's previous report: one set of
    previous values per device serves every rule, kept across batches."""
    rise = make_rule(thermo, name="rise", condition={"op": "increased_by", "value": 10},
                     actions=[])
    change = make_rule(thermo, name="change", condition={"op": "changed"}, actions=[])
    feed.data(temperature=20)  # nothing to compare with yet
    assert (fired(rise), fired(change)) == (0, 0)
    feed.data(temperature=25)  # +5: changed, not risen by 10
    assert (fired(rise), fired(change)) == (0, 1)
    feed.data(temperature=36)  # +11 since the previous report
    assert (fired(rise), fired(change)) == (1, 2)
    feed.data(temperature=36)  # unchanged
    assert (fired(rise), fired(change)) == (1, 2)
    state = json.loads(redis_client.hget(f"{redis_prefix}rules:states", "dev-1"))
    assert state[PREVIOUS] == {"env.temperature": 36}
    # A rule created later compares with the same previous value.
    late = make_rule(thermo, name="late", condition={"op": "decreased_by", "value": 5},
                     actions=[])
    feed.data(temperature=30)
    assert fired(late) == 1


def quiet_point(feed, device, ts, **values):
    return {"t": "data", "dev": device, "prod": "thermo", "svc": "env", "ts": ts, "et": None,
            "v": values}


@pytest.mark.parametrize("values", [
    {"temperature": 20.5}, {"temperature": 20}, {"temperature": 20.5, "humidity": 40},
    {"humidity": 40}, {"temperature": float("nan")}])
def test_a_quiet_batch_moves_guards_and_counters_as_point_by_point(thermo, feed, redis_client,
                                                                   redis_prefix, values):
    """A batch whose points all miss every threshold is settled in bulk; NaN sends it through
    the per-point check. Either way the replay guards, `evaluated` and, when the same batch
    comes again, `replayed` are what the per-point loop gives."""
    rule = make_rule(thermo, condition={"op": ">", "value": 30}, actions=[])
    other = make_rule(thermo, name="cold", condition={"op": "<", "value": -5}, actions=[])
    thermo.post("/api/v1/devices/", {"product": "thermo", "identifier": "dev-2"}, format="json")
    batch = [quiet_point(feed, device, feed.ts + n, **values)
             for n, device in enumerate(["dev-1", "dev-2", "dev-1"], start=1)]
    feed.crash_after_hooks(*batch)
    guards = redis_client.hgetall(f"{redis_prefix}rules:guards")
    assert guards == {b"dev-1|_t:p:env": str(feed.ts + 3).encode(),
                      b"dev-2|_t:p:env": str(feed.ts + 2).encode()}
    carrying = 3 if "temperature" in values else 0
    feed.redeliver()
    for rule_id in (rule, other):
        stats = thermo.get(f"/api/v1/rules/{rule_id}/stats/").json()
        assert stats.get("evaluated", 0) == carrying
        assert stats.get("replayed", 0) == carrying
        assert stats.get("fired", 0) == 0


@pytest.mark.parametrize("odd", [True, "hot", float("nan"), None])
def test_the_bulk_check_leaves_anything_but_plain_numbers_to_the_per_point_loop(odd):
    """Booleans, strings, NaN and nulls never pass the bulk check (min/max would misjudge
    them); plain numbers in the cold range do, and one hot value anywhere does not."""
    from webapp.rules.compiler import CompiledRule
    from webapp.rules.conditions import compile_condition
    from webapp.telemetry.backends import Point

    def rule(rule_id, op, value):
        return CompiledRule(rule_id, "r", "property", "p", "env", "t", "", "", "", None,
                            compile_condition({"op": op, "value": value}, service="env",
                                              prop="t", prop_in_message=True), [], False)

    bucket = Bucket([rule(1, ">", 30), rule(2, "<", -5)])
    points = [Point("p", "env", f"d{i}", 10 + i, 10 + i, {"t": v})
              for i, v in enumerate([1.5, 20, 29.9])]
    assert all_quiet(bucket, points, {}, {}, {})
    assert not all_quiet(bucket, [*points, Point("p", "env", "d", 99, 99, {"t": 31})],
                                 {}, {}, {})
    newest, counts = {}, {}
    mixed = [*points, Point("p", "env", "d9", 99, 99, {"t": odd})]
    assert not all_quiet(bucket, mixed, {}, newest, counts)
    assert newest == {} and counts == {}  # nothing moved: the per-point loop decides
