"""What the console's monitoring page shows (`/monitoring/`, docs/console.md "Monitoring").

`snapshot()` gathers, on each call, the platform's health from where it already is: the host
(psutil), the process snapshots every long-running process writes in Redis
(`webapp.core.processes`), the edge supervisor's worker gauges (in the edge's snapshot, else
its `/metrics` endpoint), the edge nodes' heartbeats (`{prefix}nodes`), Redis `INFO` and the
uplink stream's consumer groups, the SQL database's size and largest tables, the Celery
queues in Redis, the last periodic task runs and the online users. A part whose source fails
says so (`error`) and the others are shown all the same.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import psutil
import requests
from django.conf import settings
from django.db import connection
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from edge.bus.keys import UPLINK_GROUP
from webapp.core.processes import snapshots
from webapp.core.redis import get_redis, group_lag, keys
from webapp.system.models import LoginSession, TaskRun

log = logging.getLogger(__name__)

PERMISSION = "system.view_monitoring"
# A node whose heartbeat is older than this is shown as lost (the devices sweep's threshold).
NODE_ALIVE_MS = 30_000
LARGEST_TABLES = 10
RECENT_RUNS = 10
PERIODIC_TASKS = 20
# A user seen within this long counts as online.
ONLINE_WITHIN = timedelta(minutes=15)
EDGE_METRICS_TIMEOUT = 0.5
# kombu's Redis transport keeps a queue's priorities 3, 6 and 9 in lists of their own.
CELERY_PRIORITY_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")

_PROCESS_SAMPLE = re.compile(
    r"^(process_resident_memory_bytes|process_cpu_seconds_total)\s+(\S+)", re.M)
_SAMPLE = re.compile(r'^(edge_worker_up|edge_worker_restarts_total)\{[^}]*\bworker="(\d+)"[^}]*\}'
                     r"\s+(\S+)")


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _guard(part: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """One part of the page: its figures, or `{"error": ...}` when its source failed."""
    try:
        return part()
    except Exception as exc:
        log.warning("monitoring: %s failed: %s", part.__name__, exc)
        return {"error": f"{type(exc).__name__}: {exc}"[:300]}


def data_dir() -> Path:
    return Path(settings.VAR_DIR)


_cpu_primed = False


def host() -> dict[str, Any]:
    global _cpu_primed
    if _cpu_primed:
        # Since the previous reading (the page asks every few seconds).
        cpu = psutil.cpu_percent(interval=None)
    else:
        # The first reading has no previous one to compare with: take a short one.
        cpu = psutil.cpu_percent(interval=0.2)
        _cpu_primed = True
    memory = psutil.virtual_memory()
    path = data_dir()
    while not path.exists() and path != path.parent:
        path = path.parent
    disk = psutil.disk_usage(str(path))
    load = os.getloadavg()
    return {
        "cpu_percent": cpu,
        "cpus": psutil.cpu_count() or 1,
        "memory": {"total": memory.total, "used": memory.total - memory.available,
                   "available": memory.available, "percent": memory.percent},
        "disk": {"path": str(path), "total": disk.total, "used": disk.used, "free": disk.free,
                 "percent": disk.percent},
        "load": [round(v, 2) for v in load],
        "boot": psutil.boot_time(),
    }


def _edge_workers_from(text: str) -> dict[int, dict[str, Any]]:
    workers: dict[int, dict[str, Any]] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match:
            name, index, value = match.groups()
            worker = workers.setdefault(int(index), {"worker": int(index), "up": False,
                                                     "restarts": 0})
            number = float(value)
            if name == "edge_worker_up":
                worker["up"] = number >= 1
            else:
                worker["restarts"] = int(number)
    return workers


def edge_metrics_url() -> str:
    """The edge supervisor's metrics endpoint (the edge's own EDGE_METRICS_HOST/PORT), or ""
    when its metrics listener is off."""
    port = os.environ.get("EDGE_METRICS_PORT") or "19100"
    if port == "0":
        return ""
    address = os.environ.get("EDGE_METRICS_HOST") or "127.0.0.1"
    if address in ("0.0.0.0", "::", ""):
        address = "127.0.0.1"
    if ":" in address:
        address = f"[{address}]"
    return f"http://{address}:{port}/metrics"


def processes() -> dict[str, Any]:
    """Every process snapshot, and the edge workers read from the edge supervisors'
    snapshots (or, with none, from the edge's metrics endpoint)."""
    rows = []
    workers: list[dict[str, Any]] = []
    for p in snapshots():
        metrics = p.pop("metrics", "")
        # prometheus-client's process collector, in the processes that use it.
        own = {name: float(value) for name, value in _PROCESS_SAMPLE.findall(metrics)}
        p["memory"] = int(own["process_resident_memory_bytes"]) \
            if "process_resident_memory_bytes" in own else None
        p["cpu_seconds"] = own.get("process_cpu_seconds_total")
        rows.append(p)
        if p["role"] == "edge":
            for worker in sorted(_edge_workers_from(metrics).values(),
                                 key=lambda w: w["worker"]):
                workers.append({**worker, "host": p["host"], "pid": p["pid"],
                                "alive": p["alive"]})
    source = "snapshot" if workers else ""
    error = ""
    url = edge_metrics_url()
    if not workers and url:
        try:
            response = requests.get(url, timeout=EDGE_METRICS_TIMEOUT)
            if response.ok:
                workers = [{**w, "host": "", "pid": None, "alive": True} for w in
                           sorted(_edge_workers_from(response.text).values(),
                                  key=lambda w: w["worker"])]
                source = url
        except requests.RequestException as exc:
            error = type(exc).__name__
    return {"processes": rows, "edge_workers": workers, "edge_workers_source": source,
            "edge_metrics_error": error}


def nodes() -> dict[str, Any]:
    r = get_redis()
    now = time.time() * 1000
    rows = []
    for node, raw in r.hgetall(keys().nodes).items():
        try:
            beat = json.loads(raw)
        except ValueError:
            continue
        ts = int(beat.get("ts") or 0)
        rows.append({"node": _text(node), "pid": beat.get("pid"),
                     "started": beat.get("started"), "connections": int(beat.get("conns") or 0),
                     "heartbeat": ts, "alive": now - ts < NODE_ALIVE_MS})
    rows.sort(key=lambda n: (not n["alive"], n["node"]))
    # Each node's downlink stream: what webapp queued for its devices, not yet sent.
    pipe = r.pipeline(transaction=False)
    for row in rows:
        pipe.xlen(keys().downlink(row["node"]))
    for row, length in zip(rows, pipe.execute(), strict=True):
        row["downlink"] = int(length)
    return {"nodes": rows,
            "connections": sum(n["connections"] for n in rows if n["alive"])}


def redis_figures() -> dict[str, Any]:
    r = get_redis()
    k = keys()
    memory = r.info("memory")
    server = r.info("server")
    streams = []
    for name in (k.uplink, k.uplink_dead):
        if not r.exists(name):
            streams.append({"stream": name, "length": 0, "groups": []})
            continue
        groups = []
        for raw in r.xinfo_groups(name):
            group = {_text(key): value for key, value in raw.items()}
            group_name = _text(group.get("name"))
            lag, exact = group_lag(r, name, group)
            consumers = [{"name": _text(c.get("name")), "pending": int(c.get("pending") or 0),
                          "idle_ms": int(c.get("idle") or 0)}
                         for c in r.xinfo_consumers(name, group_name)]
            groups.append({"name": group_name, "lag": lag, "lag_exact": exact,
                           "pending": int(group.get("pending") or 0),
                           "consumers": consumers})
        streams.append({"stream": name, "length": int(r.xlen(name)), "groups": groups})
    return {
        "version": _text(server.get("redis_version", "")),
        "used_memory": int(memory.get("used_memory", 0)),
        "used_memory_rss": int(memory.get("used_memory_rss", 0)),
        "used_memory_peak": int(memory.get("used_memory_peak", 0)),
        "maxmemory": int(memory.get("maxmemory", 0)),
        "streams": streams,
        "uplink_group": UPLINK_GROUP,
    }


def _sqlite_file() -> Path | None:
    name = str(connection.settings_dict.get("NAME") or "")
    if not name or name == ":memory:" or name.startswith("file:"):
        return None
    path = Path(name)
    return path if path.exists() else None


def database() -> dict[str, Any]:
    vendor = connection.vendor
    tables: list[dict[str, Any]] = []
    with connection.cursor() as cursor:
        if vendor == "postgresql":
            cursor.execute("SELECT current_database(), pg_database_size(current_database())")
            name, size = cursor.fetchone()
            cursor.execute(
                "SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', "
                "'information_schema') AND n.nspname NOT LIKE %s "
                "ORDER BY 2 DESC, 1 LIMIT %s", ["pg\\_toast%", LARGEST_TABLES])
            tables = [{"name": t, "size": int(s)} for t, s in cursor.fetchall()]
        elif vendor == "sqlite":
            cursor.execute("PRAGMA page_count")
            pages = cursor.fetchone()[0]
            cursor.execute("PRAGMA page_size")
            size = int(pages) * int(cursor.fetchone()[0])
            path = _sqlite_file()
            name = path.name if path else str(connection.settings_dict.get("NAME") or "")
            if path is not None:
                size = max(size, path.stat().st_size)
            try:
                # Each table with its indexes, as PostgreSQL's pg_total_relation_size.
                cursor.execute(
                    "SELECT m.tbl_name, SUM(d.pgsize) FROM dbstat d "
                    "JOIN sqlite_master m ON m.name = d.name "
                    "WHERE m.tbl_name NOT LIKE %s ESCAPE '\\' "
                    "GROUP BY m.tbl_name ORDER BY 2 DESC, 1 LIMIT %s",
                    ["sqlite\\_%", LARGEST_TABLES])
                tables = [{"name": t, "size": int(s)} for t, s in cursor.fetchall()]
            except Exception:  # SQLite built without the dbstat table
                tables = []
        else:
            return {"vendor": vendor, "name": "", "size": None, "tables": []}
    return {"vendor": vendor, "name": name, "size": int(size), "tables": tables}


def celery_queue_names() -> list[str]:
    names = [getattr(settings, "CELERY_TASK_DEFAULT_QUEUE", "celery") or "celery"]
    for queue in getattr(settings, "CELERY_TASK_QUEUES", None) or ():
        name = getattr(queue, "name", queue)
        if isinstance(name, str) and name not in names:
            names.append(name)
    return names


def celery() -> dict[str, Any]:
    r = get_redis()
    options = getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", {}) or {}
    prefix = options.get("global_keyprefix", "")
    pipe = r.pipeline(transaction=False)
    names = celery_queue_names()
    for name in names:
        for suffix in CELERY_PRIORITY_SUFFIXES:
            pipe.llen(f"{prefix}{name}{suffix}")
    pipe.hlen(f"{prefix}unacked")
    lengths = pipe.execute()
    per = len(CELERY_PRIORITY_SUFFIXES)
    queues = [{"name": name, "key": f"{prefix}{name}",
               "length": sum(lengths[i * per:(i + 1) * per])} for i, name in enumerate(names)]
    periodic = [{"name": t.name, "task": t.task, "enabled": t.enabled,
                 "last_run_at": t.last_run_at.isoformat() if t.last_run_at else None,
                 "total_run_count": t.total_run_count}
                for t in PeriodicTask.objects.filter(last_run_at__isnull=False)
                .order_by("-last_run_at", "name")[:PERIODIC_TASKS]]
    runs = [{"task": run.task_name, "schedule": run.periodic_task_name, "status": run.status,
             "status_label": run.get_status_display(), "started": run.started.isoformat(),
             "runtime": run.runtime, "error": run.error[:200]}
            for run in TaskRun.objects.order_by("-started")[:RECENT_RUNS]]
    return {"queues": queues, "reserved": int(lengths[-1]), "periodic": periodic,
            "runs": runs}


def users() -> dict[str, Any]:
    now = timezone.now()
    active = LoginSession.objects.filter(revoked__isnull=True, expires__gt=now,
                                         last_seen__gte=now - ONLINE_WITHIN)
    return {"online_users": active.values("user").distinct().count(),
            "sessions": active.count(), "window_minutes": int(ONLINE_WITHIN.total_seconds() // 60)}


def snapshot() -> dict[str, Any]:
    """Everything the page shows, as JSON-ready values (bytes, percents, unix times)."""
    return {
        "time": time.time(),
        "host": _guard(host),
        "processes": _guard(processes),
        "edge": _guard(nodes),
        "redis": _guard(redis_figures),
        "database": _guard(database),
        "celery": _guard(celery),
        "users": _guard(users),
    }
