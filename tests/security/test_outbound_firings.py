"""H8 chain 1: a firing pushed onto the Redis firings list by anyone but the ingest path (the
review's forged `{"rule": …, "kind": "fired", "message": {"device": …}}`) runs no action; and
no Celery message can name firings to run."""

from __future__ import annotations

import json

import pytest

from tests.system.conftest import Org, make_device, make_product
from webapp.rules.models import Alarm, Rule, RuleTrace

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("commit_hooks")]


@pytest.fixture
def victim(redis_prefix):
    """Department B's rule on its product, raising an alarm and commanding the device."""
    org = Org()
    product = make_product("pb", org.b)
    make_device("dev-b", product, org.b)
    return Rule.objects.create(
        name="victim", trigger_type="property", product=product,
        trigger={"type": "property", "product": "pb", "service": "env",
                 "property": "temperature"},
        condition={"op": ">", "value": 30},
        actions=[{"type": "alarm", "severity": "critical"},
                 {"type": "command", "service": "env", "command": "set_interval",
                  "params": {"seconds": 1}}])


def test_forged_firings_are_dropped(victim, redis_client):
    """Plain JSON (as a Redis sink wrote it) and JSON with a made-up signature do nothing;
    the entry the ingest path seals runs."""
    from webapp.devices.models import DeviceCommand
    from webapp.rules.firings import seal
    from webapp.rules.keys import rule_keys
    from webapp.rules.tasks import drain_firings

    firing = {"rule": victim.pk, "kind": "fired", "message": {
        "kind": "property", "device": "dev-b", "product": "pb", "service": "env",
        "ts": 1, "values": {"temperature": 99}}}
    body = json.dumps(firing).encode()
    redis_client.rpush(rule_keys().firings, body, b"0" * 64 + b"." + body,
                       b"not even json")
    assert drain_firings() == 0
    assert not RuleTrace.objects.exists() and not Alarm.objects.exists()
    assert not DeviceCommand.objects.exists()

    redis_client.rpush(rule_keys().firings, seal(body))
    assert drain_firings() == 1
    assert RuleTrace.objects.get().rule_id == victim.pk


def test_no_celery_task_runs_given_firings():
    """`rules.run_firings` is no task: a message on the broker cannot name firings."""
    from config.celery import app

    app.loader.import_default_modules()
    assert "rules.drain_firings" in app.tasks and "rules.run_firings" not in app.tasks
