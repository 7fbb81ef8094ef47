"""H7 and issue item 6: one rule cannot stop ingest. A scoped operator saves rules through
`POST /api/v1/rules/`; points go through the real ingest worker (Redis stream, SQL time series,
the rule hooks). Expressions that overflow or nest too deeply are refused at save with the
reason; one that passes but fails on the data (or runs over its time budget) marks its rule
failed (disabled, with the reason in the API and the admin) while the other rules fire and the
points are stored; an entry that keeps failing goes to `uplink:dead` after
INGEST_MAX_DELIVERIES deliveries while the entries behind it flow."""

from __future__ import annotations

import json
import time

import pytest
from django.db import OperationalError

from edge.bus.keys import UPLINK_GROUP, Keys
from tests.rules.conftest import Feed, eager_celery  # noqa: F401 (an autouse fixture)
from tests.system.conftest import Org, login, make_device, make_product
from webapp.rules.models import Alarm, Rule, RuleTrace
from webapp.telemetry.backends import SeriesQuery, get_backend
from webapp.telemetry.ingest import IngestWorker

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("commit_hooks")]

OPERATOR = ("rules.view_rule", "rules.add_rule", "rules.change_rule", "rules.view_alarm")
ALARM = [{"type": "alarm", "severity": "major", "message": "{{device}} {{value}}"}]
TRIGGER = {"type": "property", "product": "thermo", "service": "env",
           "property": "temperature"}


@pytest.fixture
def operator(redis_prefix):
    """Department A's operator (rules only), with product thermo and devices dev-1, dev-2
    of the department."""
    org = Org()
    user = org.user("olga", org.a, OPERATOR, scope="department_and_below")
    product = make_product("thermo", org.a)
    for name in ("dev-1", "dev-2"):
        make_device(name, product, org.a)
    from rest_framework.test import APIClient

    client = APIClient()
    response = login(client, user.username)  # a JWT, as a real operator signs in
    assert response.status_code == 200, response.content
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {response.json()['access']}")
    client.product = product
    return client


def make_worker(redis_client, redis_prefix, **options) -> IngestWorker:
    worker = IngestWorker(redis_client, Keys(redis_prefix), get_backend(), "h7-test",
                          block_ms=50, **options)
    worker.ensure_group()
    return worker


@pytest.fixture
def feed(redis_client, redis_prefix):
    return Feed(redis_client, redis_prefix, make_worker(redis_client, redis_prefix))


def save_rule(client, condition, name="r", actions=ALARM):
    return client.post("/api/v1/rules/", {"name": name, "trigger": TRIGGER,
                                          "condition": condition, "actions": actions},
                       format="json")


def stored(product, device="dev-1") -> list[float]:
    rows = get_backend().query(SeriesQuery(product=product, service="env", devices=[device],
                                           properties=["temperature"], start=0,
                                           end=2 ** 62))
    return [row["temperature"] for row in rows]


def fired(rule_id: int) -> int:
    return RuleTrace.objects.filter(rule_id=rule_id, kind="fired").count()


def pending(redis_client, redis_prefix) -> int:
    return int(redis_client.xpending(f"{redis_prefix}uplink", UPLINK_GROUP)["pending"])


# --- refused at save ---------------------------------------------------------------------


@pytest.mark.parametrize(("expr", "reason"), [
    # The review's exploit: int / int beyond a float's range raised OverflowError on ingest.
    ("1" + "0" * 400 + " / 3 > 1", "longer than 64 characters"),
    ("temperature > 1e999", "too large"),
    # Left-deep chains parsed fine and raised RecursionError in eval and names().
    ("1" + "+1" * 1999, "nested too deeply"),
    ("a" + ".b" * 1999, "nested too deeply"),
    ("1" + "*1" * 1990 + " > 0", "nested too deeply"),
    ("true" + "||true" * 600, "nested too deeply"),
    ("true" + "&&true" * 600, "nested too deeply"),
    ("-" * 3000 + "1 < 0", "nested too deeply"),
    ("[" + ", ".join(["1"] * 600) + "] contains 1", "more than 500 operators and operands"),
])
def test_expressions_that_would_break_ingest_are_refused_at_save(operator, expr, reason):
    """400 with a reason that says what to change; nothing is saved."""
    response = save_rule(operator, {"expr": expr})
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "invalid_rule"
    assert reason in response.json()["detail"]
    assert not Rule.objects.exists()


def test_expressions_of_one_condition_are_bounded_together(operator):
    """Several `expr` leaves of one condition share one budget of nodes."""
    part = {"expr": " + ".join(["temperature"] * 60) + " > 0"}  # 121 nodes, height 61
    assert save_rule(operator, {"all": [part] * 8}).status_code == 201
    response = save_rule(operator, {"all": [part] * 9}, name="r2")
    assert response.status_code == 400
    assert "more than 1000 operators and operands in all" in response.json()["detail"]


# --- failing on the data: the rule is marked failed, the rest goes on ---------------------


def test_an_overflow_on_the_data_fails_its_rule_only(operator, feed, redis_client,
                                                       redis_prefix, admin_client):
    """`temperature * 1e308 > 1` saves (it is fine for small values) and overflows for a
    reading of 35: that rule is disabled with the reason, the threshold rule of the same
    product fires, the point is stored and acknowledged, and so are the next ones."""
    overflow = save_rule(operator, {"expr": "temperature * 1e308 > 1"}, name="overflow")
    assert overflow.status_code == 201, overflow.content
    overflow_id = overflow.json()["id"]
    threshold = save_rule(operator, {"op": ">", "value": 30}, name="threshold").json()["id"]

    feed.data(temperature=35)
    assert stored(operator.product) == [35]
    assert pending(redis_client, redis_prefix) == 0
    assert fired(threshold) == 1 and Alarm.objects.filter(rule_id=threshold).count() == 1
    shown = operator.get(f"/api/v1/rules/{overflow_id}/").json()
    assert shown["enabled"] is False and shown["failed_at"]
    assert shown["failure_reason"] == "Arithmetic overflow: 35 * 1e+308 is out of range."
    assert fired(overflow_id) == 0

    feed.data(device="dev-2", temperature=36)  # the index was rebuilt without it
    assert stored(operator.product, "dev-2") == [36]
    assert fired(threshold) == 2 and fired(overflow_id) == 0
    assert pending(redis_client, redis_prefix) == 0

    # The failure fields are read-only in the API; enabling the rule again clears them.
    operator.patch(f"/api/v1/rules/{overflow_id}/", {"failure_reason": "", "failed_at": None},
                   format="json")
    assert Rule.objects.get(pk=overflow_id).failure_reason.startswith("Arithmetic overflow")
    # ... and in the admin: a column of the list and a read-only field of the form.
    listing = admin_client.get("/admin/rules/rule/").content.decode()
    assert "column-failed_at" in listing
    page = admin_client.get(f"/admin/rules/rule/{overflow_id}/change/").content.decode()
    assert "Arithmetic overflow: 35 * 1e+308 is out of range." in page
    assert 'name="failure_reason"' not in page and 'name="failed_at"' not in page

    enabled = operator.patch(f"/api/v1/rules/{overflow_id}/", {"enabled": True},
                             format="json").json()
    assert enabled["enabled"] is True
    assert enabled["failed_at"] is None and enabled["failure_reason"] == ""


@pytest.mark.parametrize("expr", ["1" + "0" * 400 + " / 3 > 1", "a" + ".b" * 1999])
def test_a_rule_saved_before_the_bounds_is_failed_when_compiled(operator, feed, expr):
    """A rule stored before these bounds existed (the review's exploits, written to the
    database directly) no longer compiles: the index marks it failed with the reason and
    leaves it out, and ingest and the other rules go on."""
    threshold = save_rule(operator, {"op": ">", "value": 30}, name="threshold").json()["id"]
    legacy = Rule.objects.create(name="legacy", trigger=TRIGGER, trigger_type="property",
                                 product=operator.product, condition={"expr": expr})
    feed.data(temperature=35)
    assert stored(operator.product) == [35] and fired(threshold) == 1
    legacy.refresh_from_db()
    assert legacy.enabled is False and legacy.failed_at is not None
    assert legacy.failure_reason.startswith("The rule cannot be compiled: ")


def test_a_rule_over_its_time_budget_fails_alone(operator, feed, settings):
    """An expression that takes long on the data (100 JSON encodings of a large value per
    message) runs over RULES_EVAL_BUDGET_MS: it is failed with the time it took; a cheap
    expression rule on the same messages is not."""
    settings.RULES_EVAL_BUDGET_MS = 10
    slow = save_rule(operator, {"expr": "len([" + ", ".join(["str(values)"] * 100) +
                                "]) > 0"}, name="slow").json()["id"]
    cheap = save_rule(operator, {"expr": "temperature > 30 && exists(blob)"},
                      name="cheap").json()["id"]
    feed.data(temperature=35, blob='"\\' * 40_000)
    assert stored(operator.product) == [35]
    failed = Rule.objects.get(pk=slow)
    assert failed.enabled is False
    assert failed.failure_reason.startswith("Evaluating one message took ")
    assert "over the limit of 10 ms (RULES_EVAL_BUDGET_MS)" in failed.failure_reason
    assert Rule.objects.get(pk=cheap).enabled is True and fired(cheap) == 1


def test_a_scheduled_rule_that_overflows_is_failed(operator, redis_client, redis_prefix):
    """A schedule rule evaluates the latest values in a Celery task: the overflow fails the
    rule (with the reason), not the task."""
    from webapp.rules.tasks import run_schedule

    created = operator.post("/api/v1/rules/", {
        "name": "nightly", "condition": {"expr": "temperature * 1e308 > 1"}, "actions": ALARM,
        "trigger": {"type": "schedule", "cron": "0 2 * * *", "product": "thermo",
                    "service": "env"}}, format="json")
    assert created.status_code == 201, created.content
    redis_client.hset(f"{redis_prefix}latest:dev-1", "env",
                      '{"temperature": {"value": 35, "ts": 1}}')
    assert run_schedule(created.json()["id"]) == 0
    shown = operator.get(f"/api/v1/rules/{created.json()['id']}/").json()
    assert shown["enabled"] is False
    assert shown["failure_reason"] == "Arithmetic overflow: 35 * 1e+308 is out of range."


# --- poison entries go to uplink:dead -----------------------------------------------------


def entry(redis_client, redis_prefix, device: str, ts: int, temperature: float) -> bytes:
    event = {"t": "data", "dev": device, "prod": "thermo", "svc": "env", "ts": ts, "et": None,
             "v": {"temperature": temperature}}
    return redis_client.xadd(f"{redis_prefix}uplink", {"b": json.dumps([event])})


def test_an_entry_that_keeps_failing_is_dead_lettered_and_later_entries_flow(
        operator, redis_client, redis_prefix, monkeypatch):
    """The backend raises for device dev-2 only (a bug that some data triggers): its entry
    is retried while the entries behind it are stored, and after 3 deliveries
    (INGEST_MAX_DELIVERIES) it goes to `uplink:dead` with the reason and is acknowledged."""
    worker = make_worker(redis_client, redis_prefix, max_deliveries=3, retry_delay_s=0.3)
    write = worker.backend.write

    def poisoned(points):
        if any(p.device == "dev-2" for p in points):
            raise RuntimeError("cannot store dev-2")
        return write(points)

    monkeypatch.setattr(worker.backend, "write", poisoned)
    now = int(time.time() * 1000)
    poison = entry(redis_client, redis_prefix, "dev-2", now, 99)
    entry(redis_client, redis_prefix, "dev-1", now + 1, 1)
    worker.process(worker.read())  # the batch fails; one by one: dev-1's entry is stored
    assert stored(operator.product) == [1]
    assert pending(redis_client, redis_prefix) == 1
    entry(redis_client, redis_prefix, "dev-1", now + 2, 2)
    worker.process(worker.read())  # the poison's retry is not due: the new entry goes on
    assert stored(operator.product) == [1, 2]

    dead = f"{redis_prefix}uplink:dead"
    deadline = time.monotonic() + 10
    while not redis_client.xlen(dead) and time.monotonic() < deadline:
        worker.process(worker.read())
        time.sleep(0.05)
    [(_id, fields)] = redis_client.xrange(dead)
    assert fields[b"entry"] == poison and fields[b"position"] == b"0"
    assert fields[b"reason"] == b"failed on 3 deliveries: RuntimeError: cannot store dev-2"
    assert json.loads(fields[b"event"])["dev"] == "dev-2"
    assert worker.dead_lettered == 1 and pending(redis_client, redis_prefix) == 0

    entry(redis_client, redis_prefix, "dev-1", now + 3, 3)
    worker.process(worker.read())
    assert stored(operator.product) == [1, 2, 3]


def test_an_outage_never_dead_letters(operator, redis_client, redis_prefix, monkeypatch):
    """The database unavailable for every entry, delivered many more times than
    INGEST_MAX_DELIVERIES: the entries stay pending, and are stored once it is back."""
    worker = make_worker(redis_client, redis_prefix, max_deliveries=2, retry_delay_s=0)
    write = worker.backend.write

    def down(points):
        raise OperationalError("connection refused")

    monkeypatch.setattr(worker.backend, "write", down)
    now = int(time.time() * 1000)
    for i in range(3):
        entry(redis_client, redis_prefix, f"dev-{i % 2 + 1}", now + i, i)
    for _ in range(6):
        with pytest.raises(OperationalError):
            worker.process(worker.read())
    assert redis_client.xlen(f"{redis_prefix}uplink:dead") == 0
    assert pending(redis_client, redis_prefix) == 3
    monkeypatch.setattr(worker.backend, "write", write)
    worker.process(worker.read())
    assert stored(operator.product, "dev-1") == [0, 2] and stored(operator.product,
                                                                  "dev-2") == [1]
    assert pending(redis_client, redis_prefix) == 0
