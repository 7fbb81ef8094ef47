"""Celery: tasks run inside an operation context (their changes are logged with source
`task`), beat-started runs are kept as run history, and old logs are purged."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from celery import shared_task
from celery.signals import task_failure, task_postrun, task_prerun, task_retry
from django.utils import timezone

from webapp.core.context import OperationContext, pop, push
from webapp.system.cache import param
from webapp.system.choices import TaskRunStatus

_running: dict[str, tuple[Any, float]] = {}


def _tracked(task: Any) -> str | None:
    """The schedule name of a run worth keeping (started by beat or "run now" in the
    admin, or a task with `track_runs = True`), else None."""
    request = task.request
    name = getattr(request, "periodic_task_name", None) or (
        getattr(request, "headers", None) or {}).get("periodic_task_name")
    if name:
        return str(name)
    return task.name if getattr(task, "track_runs", False) else None


def on_prerun(sender: Any = None, task_id: str | None = None, task: Any = None,
              **kwargs: Any) -> None:
    if task is None or task_id is None:
        return
    token = push(OperationContext(source="task", task=task.name))
    _running[task_id] = (token, time.monotonic())
    schedule = _tracked(task)
    if schedule is not None:
        from webapp.system.models import TaskRun

        TaskRun.objects.update_or_create(task_id=task_id, defaults={
            "task_name": task.name, "periodic_task_name": schedule,
            "status": TaskRunStatus.STARTED, "started": timezone.now(),
            "worker": str(getattr(task.request, "hostname", "") or "")[:200]})


def on_postrun(sender: Any = None, task_id: str | None = None, task: Any = None,
               retval: Any = None, state: str | None = None, **kwargs: Any) -> None:
    if task_id is None:
        return
    token, started = _running.pop(task_id, (None, time.monotonic()))
    if token is not None:
        pop(token)
    if task is None or _tracked(task) is None:
        return
    from webapp.system.models import TaskRun

    status = {"SUCCESS": TaskRunStatus.SUCCESS, "RETRY": TaskRunStatus.RETRY}.get(
        state or "", TaskRunStatus.FAILURE)
    fields: dict[str, Any] = {"status": status, "finished": timezone.now(),
                              "runtime": round(time.monotonic() - started, 6)}
    if status == TaskRunStatus.SUCCESS:
        fields["result"] = repr(retval)[:2000]
    TaskRun.objects.filter(task_id=task_id).update(**fields)


def on_failure(sender: Any = None, task_id: str | None = None, exception: Any = None,
               einfo: Any = None, **kwargs: Any) -> None:
    if task_id is None or sender is None or _tracked(sender) is None:
        return
    from webapp.system.models import TaskRun

    TaskRun.objects.filter(task_id=task_id).update(
        error=(str(einfo) if einfo else repr(exception))[:10000])


def on_retry(sender: Any = None, request: Any = None, reason: Any = None,
             **kwargs: Any) -> None:
    task_id = getattr(request, "id", None)
    if task_id:
        from webapp.system.models import TaskRun

        TaskRun.objects.filter(task_id=task_id).update(status=TaskRunStatus.RETRY,
                                                       error=str(reason)[:10000])


def connect() -> None:
    task_prerun.connect(on_prerun, dispatch_uid="tl_task_prerun", weak=False)
    task_postrun.connect(on_postrun, dispatch_uid="tl_task_postrun", weak=False)
    task_failure.connect(on_failure, dispatch_uid="tl_task_failure", weak=False)
    task_retry.connect(on_retry, dispatch_uid="tl_task_retry", weak=False)


@shared_task(name="system.purge_logs")
def purge_logs() -> dict[str, int]:
    """Delete logs and run history older than `log.retention_days` (180 by default), and
    sessions that ended more than 30 days ago."""
    from webapp.system.models import LoginLog, LoginSession, OperationLog, TaskRun

    cutoff = timezone.now() - timedelta(days=int(param("log.retention_days", 180)))
    ended = timezone.now() - timedelta(days=30)
    return {
        "operation_logs": OperationLog.objects.filter(time__lt=cutoff).delete()[0],
        "login_logs": LoginLog.objects.filter(time__lt=cutoff).delete()[0],
        "task_runs": TaskRun.objects.filter(started__lt=cutoff).delete()[0],
        "sessions": LoginSession.objects.filter(expires__lt=ended).delete()[0],
    }
