"""The web process's metrics and ``GET /metrics``: the whole platform in one document.

``RequestMetricsMiddleware`` counts requests by route name and status and times them;
``CountWebSockets`` wraps a Channels consumer's ASGI app and counts its open sockets. The view
merges this process's registry, the host (psutil), Redis (memory, stream lengths) and Celery's
queues measured now, and every process snapshot found in Redis, each sample labelled with its
process's ``role`` and ``instance`` (``host:pid``). docs/metrics.md lists the families.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import psutil
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.exceptions import NotAuthenticated, PermissionDenied
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.views import APIView

from edge.snapshot import hostname
from webapp.core import metrics
from webapp.core.processes import snapshots
from webapp.core.redis import get_redis, group_lag, keys

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Celery's priority steps on Redis: a queue's messages of priority p > 0 wait in the list
# "{queue}\x06\x16{p}" (kombu's default separator and steps).
_PRIORITY_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")

psutil.cpu_percent(interval=None)  # the first call starts the measurement


def instance() -> str:
    return f"{hostname()}:{os.getpid()}"


# -- web: requests and WebSockets ----------------------------------------------------------------

class RequestMetricsMiddleware:
    """Counts and times every request, labelled with its route name (``namespace:name``, the
    view's dotted path for an unnamed route, ``unresolved`` for a 404 without a route)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        view = route_name(request)
        metrics.HTTP_REQUESTS.labels(view, request.method or "", str(response.status_code)).inc()
        metrics.HTTP_LATENCY.labels(view).observe(time.perf_counter() - started)
        return response


def route_name(request: HttpRequest) -> str:
    match = getattr(request, "resolver_match", None)
    if match is None:
        return "unresolved"
    if match.view_name and not match.view_name.startswith("<"):
        return str(match.view_name)
    return str(match._func_path)


class CountWebSockets:
    """An ASGI wrapper of a WebSocket consumer: open sockets and accepted connections."""

    def __init__(self, app: Any, name: str) -> None:
        self.app = app
        self.name = name

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[Any]],
                      send: Callable[[Any], Awaitable[None]]) -> Any:
        accepted = False

        async def counting_send(message: dict[str, Any]) -> None:
            nonlocal accepted
            if message.get("type") == "websocket.accept" and not accepted:
                accepted = True
                metrics.WEBSOCKETS_OPEN.labels(self.name).inc()
                metrics.WEBSOCKETS_TOTAL.labels(self.name).inc()
            await send(message)

        try:
            return await self.app(scope, receive, counting_send)
        finally:
            if accepted:
                metrics.WEBSOCKETS_OPEN.labels(self.name).dec()


# -- measured at scrape time ---------------------------------------------------------------------

def host_families() -> list[Metric]:
    """CPU, memory, disk and load of the machine the web runs on."""
    out: list[Metric] = []
    cpu = GaugeMetricFamily("thinglinks_host_cpu_percent",
                            "CPU use of the host since the previous scrape (percent)")
    cpu.add_metric([], psutil.cpu_percent(interval=None))
    cores = GaugeMetricFamily("thinglinks_host_cpu_count", "Logical CPUs of the host")
    cores.add_metric([], psutil.cpu_count() or 0)
    memory = psutil.virtual_memory()
    mem_total = GaugeMetricFamily("thinglinks_host_memory_total_bytes", "Host memory")
    mem_total.add_metric([], memory.total)
    mem_avail = GaugeMetricFamily("thinglinks_host_memory_available_bytes",
                                  "Host memory available to new processes")
    mem_avail.add_metric([], memory.available)
    mem_pct = GaugeMetricFamily("thinglinks_host_memory_percent", "Host memory in use (percent)")
    mem_pct.add_metric([], memory.percent)
    disk_total = GaugeMetricFamily("thinglinks_host_disk_total_bytes",
                                   "Size of the file system holding the given path",
                                   labels=["path"])
    disk_used = GaugeMetricFamily("thinglinks_host_disk_used_bytes",
                                  "Bytes used on the file system holding the given path",
                                  labels=["path"])
    disk_pct = GaugeMetricFamily("thinglinks_host_disk_percent",
                                 "Space used on the file system holding the given path (percent)",
                                 labels=["path"])
    for path in sorted({str(settings.BASE_DIR), str(getattr(settings, "VAR_DIR", "/"))}):
        try:
            usage = psutil.disk_usage(path)
        except OSError:
            continue
        disk_total.add_metric([path], usage.total)
        disk_used.add_metric([path], usage.used)
        disk_pct.add_metric([path], usage.percent)
    load = GaugeMetricFamily("thinglinks_host_load_average", "Host load average", labels=["period"])
    for period, value in zip(("1m", "5m", "15m"), os.getloadavg()):
        load.add_metric([period], value)
    out += [cpu, cores, mem_total, mem_avail, mem_pct, disk_total, disk_used, disk_pct, load]
    return out


def celery_queues() -> list[str]:
    names = {getattr(settings, "CELERY_TASK_DEFAULT_QUEUE", None) or "celery"}
    for queue in getattr(settings, "CELERY_TASK_QUEUES", None) or ():
        names.add(getattr(queue, "name", str(queue)))
    return sorted(names)


def redis_families() -> list[Metric]:
    """Redis's memory, the lengths of the platform's streams and of Celery's queues."""
    client = get_redis()
    k = keys()
    up = GaugeMetricFamily("thinglinks_redis_up", "1 when Redis answered the scrape")
    try:
        info = client.info("memory")
        streams = {"uplink": k.uplink, "uplink:dead": k.uplink_dead}
        prefix = settings.CELERY_BROKER_TRANSPORT_OPTIONS.get("global_keyprefix", "")
        queues = celery_queues()
        pipe = client.pipeline(transaction=False)
        for key in streams.values():
            pipe.xlen(key)
        for queue in queues:
            for suffix in _PRIORITY_SUFFIXES:
                pipe.llen(f"{prefix}{queue}{suffix}")
        replies = pipe.execute()
    except Exception as exc:  # Redis down: say so, the rest of the document still serves
        log.warning("Redis metrics not collected: %s", exc)
        up.add_metric([], 0)
        return [up]
    up.add_metric([], 1)
    used = GaugeMetricFamily("thinglinks_redis_used_memory_bytes", "Memory Redis uses")
    used.add_metric([], int(info.get("used_memory", 0)))
    peak = GaugeMetricFamily("thinglinks_redis_used_memory_peak_bytes", "Redis's peak memory")
    peak.add_metric([], int(info.get("used_memory_peak", 0)))
    limit = GaugeMetricFamily("thinglinks_redis_maxmemory_bytes",
                              "Redis's maxmemory (0: no limit)")
    limit.add_metric([], int(info.get("maxmemory", 0)))
    lengths = GaugeMetricFamily("thinglinks_redis_stream_length", "Entries of a Redis stream",
                                labels=["stream"])
    for name, length in zip(streams, replies):
        lengths.add_metric([name], length)
    depth = GaugeMetricFamily("thinglinks_celery_queue_length",
                              "Celery messages waiting in a queue (all priorities)",
                              labels=["queue"])
    rest = replies[len(streams):]
    for i, queue in enumerate(queues):
        depth.add_metric([queue], sum(rest[i * len(_PRIORITY_SUFFIXES):
                                           (i + 1) * len(_PRIORITY_SUFFIXES)]))
    return [up, used, peak, limit, lengths, depth, *stream_lag(client, k.uplink)]


def stream_lag(client: Any, stream: str) -> list[Metric]:
    """The uplink stream's consumer-group lag, measured by the web too: when no ingest process
    runs (none publishes it), the lag still shows, and grows."""
    try:
        groups = client.xinfo_groups(stream)
    except Exception:  # no stream yet
        return []
    lag = GaugeMetricFamily(
        "thinglinks_ingest_stream_lag",
        "Entries of the stream not yet delivered to the consumer group (XINFO GROUPS lag)",
        labels=["stream", "group"])
    for group in groups:
        name = group.get("name")
        name = name.decode() if isinstance(name, bytes) else str(name)
        lag.add_metric(["uplink", name], group_lag(client, stream, group)[0])
    return [lag]


# -- merging -------------------------------------------------------------------------------------

class Merged:
    """Families of several processes merged by name, each sample labelled with its process."""

    def __init__(self) -> None:
        self.families: dict[str, Metric] = {}

    def add(self, families: Iterable[Metric], labels: dict[str, str] | None = None) -> None:
        for family in families:
            target = self.families.get(family.name)
            if target is None:
                target = Metric(family.name, family.documentation, family.type, family.unit)
                self.families[family.name] = target
            elif target.type != family.type:
                log.warning("metric %s is a %s in one process and a %s in another; skipped",
                            family.name, target.type, family.type)
                continue
            for sample in family.samples:
                own = dict(sample.labels)
                if labels:
                    for name in labels:
                        if name in own:  # keep the process's own label under another name
                            own[f"exported_{name}"] = own.pop(name)
                    own.update(labels)
                target.samples.append(sample._replace(labels=own))

    def add_text(self, text: str, labels: dict[str, str]) -> bool:
        try:
            families = list(text_string_to_metric_families(text))
        except Exception as exc:  # one process's bad text must not break the document
            log.warning("metrics of %s not readable: %s", labels, exc)
            return False
        self.add(families, labels)
        return True

    def collect(self) -> Iterable[Metric]:
        return list(self.families.values())


def process_families(found: list[dict[str, Any]], now: float) -> list[Metric]:
    up = GaugeMetricFamily("thinglinks_process_up",
                           "1 when the process reported within the last 30 s",
                           labels=["role", "instance"])
    restarts = GaugeMetricFamily("thinglinks_process_restarts",
                                 "Times the supervisor restarted the process's role",
                                 labels=["role", "instance"])
    started = GaugeMetricFamily("thinglinks_process_start_time_seconds",
                                "When the process started (unix seconds)",
                                labels=["role", "instance"])
    age = GaugeMetricFamily("thinglinks_process_snapshot_age_seconds",
                            "Seconds since the process last published its metrics",
                            labels=["role", "instance"])
    for process in found:
        key = [process["role"], f"{process['host']}:{process['pid']}"]
        up.add_metric(key, 1 if process["alive"] else 0)
        restarts.add_metric(key, process["restarts"])
        started.add_metric(key, process["started"])
        age.add_metric(key, max(0.0, now - process["updated"]))
    return [up, restarts, started, age]


def platform_metrics() -> str:
    """The whole document ``GET /metrics`` serves."""
    merged = Merged()
    me = {"role": "web", "instance": instance()}
    merged.add(REGISTRY.collect(), me)
    merged.add(host_families())
    merged.add(redis_families())
    now = time.time()
    try:
        found = snapshots()
    except Exception as exc:
        log.warning("process snapshots not read: %s", exc)
        found = []
    own = (hostname(), os.getpid())
    for process in found:
        if (process["host"], process["pid"]) == own:
            continue  # this process: its live registry is in already
        merged.add_text(process["metrics"], {
            "role": process["role"], "instance": f"{process['host']}:{process['pid']}"})
    if not any((p["host"], p["pid"]) == own for p in found):
        found.append({"role": "web", "host": own[0], "pid": own[1], "alive": True,
                      "restarts": 0, "started": now, "updated": now})
    merged.add(process_families(found, now))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(merged)  # type: ignore[arg-type]
    return generate_latest(registry).decode()


# -- the view ------------------------------------------------------------------------------------

def from_loopback(request: Any) -> bool:
    """A request from this machine that no proxy forwarded (a proxy on the same host would make
    every client look local: its X-Forwarded-For or Forwarded header says it is one)."""
    if not getattr(settings, "METRICS_LOOPBACK_OPEN", True):
        return False
    meta = request.META
    if meta.get("HTTP_X_FORWARDED_FOR") or meta.get("HTTP_FORWARDED") or \
            meta.get("HTTP_X_REAL_IP"):
        return False
    try:
        return ipaddress.ip_address(meta.get("REMOTE_ADDR") or "").is_loopback
    except ValueError:
        return False


def bearer_token_ok(request: Any) -> bool:
    token = getattr(settings, "METRICS_TOKEN", "") or ""
    header = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, given = header.partition(" ")
    return bool(token) and scheme.lower() == "bearer" and \
        hmac.compare_digest(given.strip().encode(), token.encode())


class MetricsAccess(BasePermission):
    """Loopback, ``Authorization: Bearer <METRICS_TOKEN>``, or a staff user or superuser
    authenticated like on the API (session, JWT, API key)."""

    def has_permission(self, request: Request, view: Any) -> bool:
        if from_loopback(request) or bearer_token_ok(request):
            return True
        user = request.user
        if not (user and user.is_authenticated):
            raise NotAuthenticated()
        if user.is_superuser or user.is_staff:
            return True
        raise PermissionDenied()


class MetricsView(APIView):
    permission_classes = [MetricsAccess]
    schema = None  # not part of the REST API's schema

    def perform_authentication(self, request: Request) -> None:
        """Lazy: a METRICS_TOKEN bearer is not a JWT, and loopback needs no user."""

    def get(self, request: Request) -> HttpResponse:
        return HttpResponse(platform_metrics(), content_type=CONTENT_TYPE)
