"""``python -m edge``: run one edge node from the environment until SIGINT/SIGTERM."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

from twisted.logger import (
    FilteringLogObserver,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    textFileLogObserver,
)
from twisted.python.failure import Failure

from .gctune import tune_gc
from .metrics import render_metrics
from .service import ConfigError, EdgeConfig, EdgeService
from .snapshot import TwistedSnapshot
from .workers import (
    WorkerConfigError,
    raise_file_limit,
    report_ready,
    supervise,
    watch_parent,
    worker_count,
)

log = Logger(namespace="edge")


def log_level(env: Mapping[str, str]) -> LogLevel:
    """``EDGE_LOG_LEVEL``: debug, info (default), warn or error. At warn the per-connection
    lines (connected, disconnected, refused) are not written, which is most of the cost of a
    connect when devices connect by the thousand."""
    name = (env.get("EDGE_LOG_LEVEL") or "info").strip().lower()
    try:
        return LogLevel.levelWithName("warn" if name == "warning" else name)
    except Exception:
        raise ConfigError(
            f"EDGE_LOG_LEVEL must be debug, info, warn or error, not {name!r}"
        ) from None


def main() -> int:
    try:
        from dotenv import load_dotenv
    except ImportError:
        pass
    else:
        load_dotenv(override=False)
    try:
        config = EdgeConfig.from_env(os.environ)
        workers = worker_count(os.environ)
        level = log_level(os.environ)
    except (ConfigError, WorkerConfigError) as exc:
        print(f"edge: {exc}", file=sys.stderr)
        return 2
    raise_file_limit()
    predicate: Any = LogLevelFilterPredicate(defaultLogLevel=level)
    text: Any = textFileLogObserver(sys.stdout)
    observer: Any = FilteringLogObserver(text, [predicate])
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
    if workers > 1:
        # EDGE_WORKERS=N: this process supervises N workers (edge.workers).
        return supervise(os.environ, workers, config.metrics_host, config.metrics_port,
                         config.node_id)

    from twisted.internet import reactor as installed_reactor

    reactor: Any = installed_reactor

    try:
        service = EdgeService(config, reactor)
    except ValueError as exc:  # a TLS file named in REDIS_URL that cannot be used
        print(f"edge: {exc}", file=sys.stderr)
        return 2
    exit_code = [0]

    def failed(failure: Failure) -> None:
        log.failure("edge failed to start", failure)
        exit_code[0] = 1
        reactor.stop()

    def start() -> None:
        d = service.start()
        d.addCallback(lambda _: report_ready(os.environ, service.metrics_port))
        if not os.environ.get("EDGE_WORKER_INDEX"):  # a worker's supervisor publishes
            d.addCallback(lambda _: TwistedSnapshot(
                reactor, "edge", lambda: render_metrics(service.samples()), config.redis_url,
                config.prefix).start())
        d.addErrback(failed)
        reactor.addSystemEventTrigger("before", "shutdown", service.stop)
        watch_parent(reactor, os.environ)

    tune_gc()
    reactor.callWhenRunning(start)
    reactor.run()
    return exit_code[0]


if __name__ == "__main__":
    sys.exit(main())
