import logging
import os
import signal
import socket
from typing import Any

from django.core.management.base import BaseCommand

from edge.gctune import tune_gc
from webapp.core.metrics import render_own
from webapp.core.processes import start_publisher
from webapp.core.redis import get_redis, keys
from webapp.devices.registry import republish_all
from webapp.telemetry.backends import get_backend
from webapp.telemetry.ingest import RECLAIM_IDLE_MS, IngestWorker

log = logging.getLogger("webapp.telemetry.ingest")


def ingest_metrics(worker: IngestWorker) -> str:
    """The worker's metrics, with the stream's lag and pending entries measured now."""
    try:
        worker.observe_stream()
    except Exception as exc:  # Redis down: the counters are still worth publishing
        log.debug("stream lag not measured: %s", exc)
    return render_own()


class Command(BaseCommand):
    help = "Run the ingest worker: uplink stream -> time series, message log, device status."
    # The worker serves no URL or admin: starting it (and restarting it after a crash) need not
    # wait for the project-wide system checks.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--consumer", default=f"{socket.gethostname()}-{os.getpid()}")
        parser.add_argument("--count", type=int, default=200,
                            help="stream entries per batch (bounds the worker's memory)")
        parser.add_argument("--block-ms", type=int, default=1000)
        parser.add_argument("--reclaim-idle-ms", type=int, default=RECLAIM_IDLE_MS,
                            help="take over entries another consumer left pending this long")
        parser.add_argument("--no-republish", action="store_true",
                            help="do not publish the device registry to Redis on start")

    def handle(self, *args: Any, **options: Any) -> None:
        stopping = False

        def stop(signum: int, frame: Any) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        if not options["no_republish"]:
            products, devices = republish_all()
            log.info("published %d products and %d devices to the edge registry",
                     products, devices)
        worker = IngestWorker(get_redis(), keys(), get_backend(), options["consumer"],
                              count=options["count"], block_ms=options["block_ms"],
                              reclaim_idle_ms=options["reclaim_idle_ms"])
        log.info("ingest worker %s reading %s", options["consumer"], keys().uplink)
        start_publisher("ingest", lambda: ingest_metrics(worker))
        tune_gc()
        worker.run(stop=lambda: stopping)
        log.info("ingest worker stopped")
