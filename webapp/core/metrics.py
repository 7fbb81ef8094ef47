"""The webapp's Prometheus metrics (prometheus-client), in one place (docs/metrics.md).

Each process counts in its own default registry; ``render_own()`` is its text, which the
process publishes in Redis every ~10 s (``webapp.core.processes``). The web's ``GET /metrics``
(``webapp.core.metrics_web``) adds the host, Redis and Celery queues, measured at scrape time,
and every process's snapshot.
"""

from __future__ import annotations

from prometheus_client import (
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

# No `_created` series: they double the document and no dashboard uses them.
disable_created_metrics()

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# -- web ---------------------------------------------------------------------------------------
HTTP_REQUESTS = Counter(
    "thinglinks_http_requests", "HTTP requests answered by the web, by route name and status",
    ["view", "method", "status"])
HTTP_LATENCY = Histogram(
    "thinglinks_http_request_duration_seconds", "Time to answer an HTTP request, by route name",
    ["view"], buckets=LATENCY_BUCKETS)
WEBSOCKETS_OPEN = Gauge(
    "thinglinks_websocket_consumers", "WebSocket consumers open, by consumer class", ["consumer"])
WEBSOCKETS_TOTAL = Counter(
    "thinglinks_websocket_connections", "WebSocket connections accepted, by consumer class",
    ["consumer"])

# -- ingest ------------------------------------------------------------------------------------
INGEST_POINTS = Counter("thinglinks_ingest_points", "Telemetry points stored by ingest")
INGEST_ENTRIES = Counter("thinglinks_ingest_entries", "Uplink stream entries ingest processed")
INGEST_BATCHES = Counter("thinglinks_ingest_batches", "Uplink batches ingest processed")
INGEST_BATCH_LATENCY = Histogram(
    "thinglinks_ingest_batch_duration_seconds",
    "Time to process one batch of uplink entries (decode, store, acknowledge)",
    buckets=LATENCY_BUCKETS)
INGEST_DB_WRITE = Histogram(
    "thinglinks_ingest_db_write_seconds", "Time of one database write of a batch by ingest",
    buckets=LATENCY_BUCKETS)
INGEST_REFUSED = Counter(
    "thinglinks_ingest_refused_entries",
    "Uplink entries that failed to store by themselves (refused by the database or failing; "
    "retried, or dead-lettered)")
INGEST_DEAD_LETTERS = Counter(
    "thinglinks_ingest_dead_letters",
    "Uplink events moved to the dead-letter stream uplink:dead")
INGEST_LAG = Gauge(
    "thinglinks_ingest_stream_lag",
    "Entries of the stream not yet delivered to the consumer group (XINFO GROUPS lag)",
    ["stream", "group"])
INGEST_PENDING = Gauge(
    "thinglinks_ingest_pending",
    "Entries delivered to a consumer and not yet acknowledged (XPENDING), by consumer",
    ["stream", "group", "consumer"])

# -- rules -------------------------------------------------------------------------------------
RULE_EVALUATED = Counter("thinglinks_rule_evaluations", "Rule evaluations, by rule id", ["rule"])
RULE_FIRED = Counter("thinglinks_rule_fired", "Rule firings (actions started), by rule id",
                     ["rule"])
RULE_SUPPRESSED = Counter(
    "thinglinks_rule_suppressed",
    "Rule matches not fired (silence period, debounce or duration not reached), by rule id",
    ["rule"])
RULE_FAILED = Counter(
    "thinglinks_rule_failures",
    "Rule failures, by rule id and stage: evaluation (the rule is disabled) or action",
    ["rule", "stage"])

# -- Celery ------------------------------------------------------------------------------------
TASK_RUNS = Counter("thinglinks_celery_task_runs", "Celery task runs, by task name", ["task"])
TASK_FAILURES = Counter("thinglinks_celery_task_failures", "Celery task runs that raised",
                        ["task"])
TASK_LATENCY = Histogram("thinglinks_celery_task_duration_seconds",
                         "Celery task run time, by task name", ["task"], buckets=LATENCY_BUCKETS)
BEAT_SENT = Counter("thinglinks_celery_beat_sent", "Periodic tasks Celery beat sent",
                    ["task"])


def render_own() -> str:
    """This process's metrics (its default registry) as Prometheus text."""
    return generate_latest(REGISTRY).decode()
