"""Sending the rules' Celery tasks by name, so that nothing imports the tasks module to queue
one (the tasks call the engine, the executors and the actions; those only name a task).

In a worker, or wherever the tasks module was loaded, the registered task is used (which
honours `task_always_eager`); elsewhere the message goes to the broker under the task's name,
which is what the worker registered it under. When Celery runs tasks eagerly (tests, a
development setup without a worker) the process is its own worker: the installed apps' task
modules are loaded as a worker loads them, so that the task runs here."""

from __future__ import annotations

from typing import Any

from celery import current_app


def enqueue(name: str, *args: Any, countdown: float | None = None) -> None:
    """Queue the task `name` (e.g. "rules.deliver_notification") with positional `args`,
    after `countdown` seconds when given."""
    app = current_app
    if name not in app.tasks and app.conf.task_always_eager:
        app.loader.import_default_modules()
    task = app.tasks.get(name)
    if task is None:
        app.send_task(name, args, countdown=countdown)
    elif countdown is None:
        task.delay(*args)
    else:
        task.apply_async(args, countdown=countdown)
