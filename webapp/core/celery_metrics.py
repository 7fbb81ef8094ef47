"""Celery's metrics: task runs, failures and run time per task name (signals), and the
process snapshots of the worker (and of each of its pool processes) and of beat.

Connected by ``config.celery``. Tasks of the prefork pool run in the pool's child processes:
each child publishes its own snapshot (role ``worker-pool``), the worker's main process
``worker``, beat ``beat`` (docs/metrics.md).
"""

from __future__ import annotations

import time
from typing import Any

from celery import signals

from webapp.core import metrics

_started: dict[str, float] = {}
_in_beat = False


def _task_name(sender: Any, task: Any = None) -> str:
    named = task if task is not None else sender
    return str(getattr(named, "name", None) or named or "unknown")


@signals.task_prerun.connect
def _prerun(sender: Any = None, task_id: str | None = None, **kwargs: Any) -> None:
    if task_id:
        _started[task_id] = time.perf_counter()


@signals.task_postrun.connect
def _postrun(sender: Any = None, task_id: str | None = None, task: Any = None,
             **kwargs: Any) -> None:
    name = _task_name(sender, task)
    metrics.TASK_RUNS.labels(name).inc()
    began = _started.pop(task_id or "", None)
    if began is not None:
        metrics.TASK_LATENCY.labels(name).observe(time.perf_counter() - began)
    if len(_started) > 10_000:  # tasks whose postrun never came (killed): forget them
        _started.clear()


@signals.task_failure.connect
def _failure(sender: Any = None, **kwargs: Any) -> None:
    metrics.TASK_FAILURES.labels(_task_name(sender)).inc()


@signals.worker_init.connect
def _worker_init(**kwargs: Any) -> None:
    from webapp.core.processes import start_publisher

    start_publisher("worker")


@signals.worker_process_init.connect
def _pool_process_init(**kwargs: Any) -> None:
    from webapp.core.processes import start_publisher

    start_publisher("worker-pool")


@signals.worker_process_shutdown.connect
def _pool_process_shutdown(**kwargs: Any) -> None:
    from webapp.core.processes import stop_publishers

    stop_publishers()


@signals.beat_init.connect
def _beat_init(**kwargs: Any) -> None:
    global _in_beat
    from webapp.core.processes import start_publisher

    _in_beat = True
    start_publisher("beat")


@signals.before_task_publish.connect
def _published(sender: Any = None, **kwargs: Any) -> None:
    if _in_beat:
        metrics.BEAT_SENT.labels(str(sender or "unknown")).inc()
