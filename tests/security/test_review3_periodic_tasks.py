"""Third review: beat schedules name any registered task with any arguments. Anyone allowed
`django_celery_beat.add_periodictask` could schedule (or "run now") `rules.forward_message`
towards another department's sink, and the task-run lists (admin and API) showed every
department's scheduled-rule runs with their errors. Schedules are now written and run by
superusers only; schedules and runs are listed within the data scope."""

from __future__ import annotations

import json

import pytest
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

from tests.security.rbac import org_fixture, own_cache_prefix  # noqa: F401
from tests.security.scoped_operator import jwt_client
from tests.system.conftest import PASSWORD, make_product
from webapp.rules.models import Rule
from webapp.system.models import TaskRun

pytestmark = pytest.mark.django_db

BEAT = tuple(f"django_celery_beat.{verb}_{model}" for verb in ("view", "add", "change", "delete")
             for model in ("periodictask", "intervalschedule", "crontabschedule"))


@pytest.fixture
def scheduler(org, client):
    org.user("sched", org.a, (*BEAT, "system.view_taskrun"), scope="department", staff=True)
    assert client.login(username="sched", password=PASSWORD)
    return client


def _scheduled_rule(org, department, name):
    crontab = CrontabSchedule.objects.create(minute="0")
    task = PeriodicTask.objects.create(name=f"rule {name}", task="rules.run_schedule",
                                       crontab=crontab, args="[1]")
    Rule.objects.create(name=name, product=make_product(f"p-{name}", department),
                        periodic_task=task, trigger_type="schedule",
                        trigger={"type": "schedule", "cron": "0 * * * *"})
    TaskRun.objects.create(task_id=f"run-{name}", task_name="rules.run_schedule",
                           periodic_task_name=task.name, error=f"secret of {name}")
    return task


def test_a_scoped_operator_cannot_schedule_any_task(org, scheduler):
    every = IntervalSchedule.objects.create(every=10, period="seconds")
    added = scheduler.post("/admin/django_celery_beat/periodictask/add/", {
        "name": "exfiltrate", "regtask": "rules.forward_message", "task": "",
        "interval": every.pk, "args": json.dumps([1, {"device": "x"}]), "kwargs": "{}",
        "enabled": "on", "expire_seconds": "", "priority": "", "queue": "",
        "exchange": "", "routing_key": "", "headers": "{}", "description": ""})
    assert added.status_code == 403
    assert not PeriodicTask.objects.filter(name="exfiltrate").exists()
    assert scheduler.post("/admin/django_celery_beat/intervalschedule/add/", {
        "every": 1, "period": "seconds"}).status_code == 403


def test_a_scoped_operator_cannot_change_delete_or_run_a_schedule(org, scheduler):
    mine = _scheduled_rule(org, org.a, "mine")
    changed = scheduler.post(f"/admin/django_celery_beat/periodictask/{mine.pk}/change/", {
        "name": mine.name, "task": "rules.forward_message", "args": "[]", "kwargs": "{}"})
    assert changed.status_code == 403
    assert scheduler.post(f"/admin/django_celery_beat/periodictask/{mine.pk}/delete/",
                          {"post": "yes"}).status_code == 403
    run = scheduler.post("/admin/django_celery_beat/periodictask/", {
        "action": "run_tasks", "_selected_action": [mine.pk]})
    assert run.status_code in (200, 302)
    mine.refresh_from_db()
    assert mine.task == "rules.run_schedule" and mine.total_run_count == 0
    assert not TaskRun.objects.exclude(task_id="run-mine").exists()


def test_schedules_and_runs_are_listed_within_the_scope(org, scheduler):
    _scheduled_rule(org, org.a, "mine")
    theirs = _scheduled_rule(org, org.b, "theirs")
    page = scheduler.get("/admin/system/taskrun/").content.decode()
    assert "run-mine" in page or "rule mine" in page
    assert "rule theirs" not in page
    assert scheduler.get(f"/admin/system/taskrun/{TaskRun.objects.get(task_id='run-theirs').pk}"
                         "/change/").status_code in (302, 404)
    tasks = scheduler.get("/admin/django_celery_beat/periodictask/").content.decode()
    assert "rule mine" in tasks and "rule theirs" not in tasks
    assert scheduler.get(f"/admin/django_celery_beat/periodictask/{theirs.pk}/change/"
                         ).status_code in (302, 404)

    api = jwt_client(org.user("api", org.a, ("system.view_taskrun",), scope="department"))
    listed = api.get("/api/v1/task-runs/").json()
    rows = listed["results"] if isinstance(listed, dict) else listed
    assert [row["task_id"] for row in rows] == ["run-mine"]
    other = TaskRun.objects.get(task_id="run-theirs")
    assert api.get(f"/api/v1/task-runs/{other.pk}/").status_code == 404


def test_superusers_still_manage_schedules(org, client):
    chief = org.user("chief", org.a)
    chief.is_superuser = chief.is_staff = True
    chief.save()
    assert client.login(username="chief", password=PASSWORD)
    every = IntervalSchedule.objects.create(every=10, period="seconds")
    added = client.post("/admin/django_celery_beat/periodictask/add/", {
        "name": "cleanup", "regtask": "system.cleanup", "task": "",
        "interval": every.pk, "args": "[]", "kwargs": "{}", "enabled": "on",
        "headers": "{}", "description": ""})
    assert added.status_code in (200, 302)
    _scheduled_rule(org, org.b, "theirs")
    assert "rule theirs" in client.get("/admin/system/taskrun/").content.decode()
