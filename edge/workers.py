"""``EDGE_WORKERS=N``: one supervisor process and N edge workers sharing the listening ports.

Each worker is ``python -m edge`` with its own node id (``{EDGE_NODE_ID}-{i}``), its listening
sockets opened with SO_REUSEPORT (the kernel spreads new connections over the workers) and its
own metrics on an ephemeral port of ``EDGE_HOST``, which it reports to the supervisor through
a pipe (descriptor 3) once it listens. The supervisor:

- restarts a worker that exits (after a short backoff that grows while it keeps failing), and
  gives up (exit 1) when a worker fails before it ever became ready;
- forwards SIGTERM/SIGINT to the workers, waits for them (SIGKILL after ``stop_timeout``) and
  exits 0;
- serves ``/metrics`` on ``EDGE_METRICS_PORT`` with the sum of the workers' samples (fetched
  in parallel over kept-alive connections at most once a second: a scrape with 56 workers
  costs one fetch, docs/performance.md), plus
  ``edge_workers``, ``edge_worker_up{worker}`` and ``edge_worker_restarts_total{worker}``, and
  ``/healthz`` (200 when every worker is up and healthy).

Workers watch their parent and stop when it disappears.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import sys
import tempfile
from collections.abc import Mapping
from typing import Any

from twisted.internet import protocol
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool, _HTTP11ClientFactory, readBody
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from .metrics import QuietSite, render_metrics
from .snapshot import TwistedSnapshot

log = Logger(namespace="edge.workers")

CONTROL_FD = 3


class WorkerConfigError(ValueError):
    pass


def worker_count(env: Mapping[str, str]) -> int:
    raw = (env.get("EDGE_WORKERS") or "1").strip()
    try:
        count = int(raw)
    except ValueError:
        raise WorkerConfigError(f"EDGE_WORKERS must be a number, not {raw!r}") from None
    if count < 1:
        raise WorkerConfigError("EDGE_WORKERS must be at least 1")
    return count


def raise_file_limit() -> int:
    """Raise the soft limit on open files to the hard limit (each connection is a file);
    returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


def worker_env(env: Mapping[str, str], index: int, base_node: str) -> dict[str, str]:
    child = dict(env)
    child.update(
        {
            "EDGE_WORKERS": "1",
            "EDGE_WORKER_INDEX": str(index),
            "EDGE_NODE_ID": f"{base_node}-{index}",
            "EDGE_METRICS_PORT": "0",
            "EDGE_REUSE_PORT": "1",
            "EDGE_CONTROL_FD": str(CONTROL_FD),
            "EDGE_PARENT_PID": str(os.getpid()),
        }
    )
    return child


# -- inside a worker --------------------------------------------------------------------------


def report_ready(env: Mapping[str, str], metrics_port: int) -> None:
    """Tell the supervisor (if any) that this worker listens, and where its metrics are."""
    raw = env.get("EDGE_CONTROL_FD")
    if not raw:
        return
    fd = int(raw)
    line = json.dumps({"ready": True, "pid": os.getpid(), "metrics_port": metrics_port}) + "\n"
    try:
        os.write(fd, line.encode())
        os.close(fd)
    except OSError as exc:
        log.warn("could not report to the supervisor: {error}", error=str(exc))


def watch_parent(reactor: Any, env: Mapping[str, str]) -> LoopingCall | None:
    """Stop this worker when its supervisor is gone (killed without a chance to stop us)."""
    raw = env.get("EDGE_PARENT_PID")
    if not raw:
        return None
    parent = int(raw)

    def check() -> None:
        if os.getppid() != parent:
            log.warn("the supervisor (pid {pid}) is gone; stopping", pid=parent)
            reactor.stop()

    call = LoopingCall(check)
    call.clock = reactor
    call.start(1.0, now=False)
    return call


# -- the supervisor ---------------------------------------------------------------------------


class _QuietHTTPFactory(_HTTP11ClientFactory):
    noisy = False


class Worker(protocol.ProcessProtocol):
    def __init__(self, supervisor: Supervisor, index: int) -> None:
        self.supervisor = supervisor
        self.index = index
        self.pid: int | None = None
        self.ready = False
        self.metrics_port: int | None = None
        self.started_at = 0.0
        self._control = b""

    def connectionMade(self) -> None:
        transport: Any = self.transport
        self.pid = transport.pid
        self.started_at = self.supervisor.reactor.seconds()

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD != CONTROL_FD:
            return
        self._control += data
        while b"\n" in self._control:
            line, _, self._control = self._control.partition(b"\n")
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if message.get("ready"):
                self.ready = True
                self.metrics_port = int(message["metrics_port"])
                self.supervisor.worker_ready(self)

    def processEnded(self, reason: Failure) -> None:
        self.ready = False
        self.supervisor.worker_ended(self, reason)

    def signal(self, name: str) -> None:
        transport: Any = self.transport
        try:
            transport.signalProcess(name)
        except Exception:  # already gone (ProcessExitedAlready)
            log.debug("worker {index} already exited", index=self.index)


class Supervisor:
    min_backoff = 0.5
    max_backoff = 10.0
    stable_after = 10.0
    stop_timeout = 20.0
    # One collection of the workers' samples serves the scrapes of this many seconds, and
    # scrapes arriving while one is collected share it (issue 11: 56 workers).
    metrics_cache_seconds = 1.0

    def __init__(
        self,
        reactor: Any,
        env: Mapping[str, str],
        count: int,
        host: str,
        metrics_port: int,
        base_node: str,
        argv: list[str] | None = None,
    ) -> None:
        self.reactor = reactor
        self.env = dict(env)
        self.count = count
        self.host = host
        self.metrics_port = metrics_port
        self.base_node = base_node
        self.argv = argv or [sys.executable, "-m", "edge"]
        self.workers: dict[int, Worker] = {}
        self.restarts = dict.fromkeys(range(count), 0)
        self.backoff = dict.fromkeys(range(count), self.min_backoff)
        self.ever_ready: set[int] = set()
        self.stopping = False
        self.failed = False
        self._stopped: Deferred[None] | None = None
        self._all_ready: Deferred[None] = Deferred()
        self.listener: Any = None
        # One kept-alive connection per worker: a scrape costs no TCP handshakes.
        pool = HTTPConnectionPool(reactor, persistent=True)
        pool.maxPersistentPerHost = 1
        pool.cachedConnectionTimeout = 300
        pool._factory = _QuietHTTPFactory  # no log line per scrape
        self.pool = pool
        self.agent = Agent(reactor, pool=pool)
        self._collected: tuple[float, str] | None = None
        self._collecting: list[Deferred[str]] | None = None

    def start(self) -> Deferred[None]:
        """Spawn the workers and serve metrics; fires when every worker is ready."""
        self.listener = self.reactor.listenTCP(
            self.metrics_port, QuietSite(SupervisorResource(self)), interface=self.host
        )
        for index in range(self.count):
            self.spawn(index)
        return self._all_ready

    def spawn(self, index: int) -> None:
        if self.stopping:
            return
        worker = Worker(self, index)
        self.workers[index] = worker
        child_fds = {0: 0, 1: 1, 2: 2, CONTROL_FD: "r"}
        self.reactor.spawnProcess(
            worker,
            self.argv[0],
            self.argv,
            env=worker_env(self.env, index, self.base_node),
            path=os.getcwd(),
            childFDs=child_fds,
        )
        log.info("worker {index} started (pid {pid})", index=index, pid=worker.pid)

    def worker_ready(self, worker: Worker) -> None:
        self.ever_ready.add(worker.index)
        self._collected = None
        log.info(
            "worker {index} ready (pid {pid}, metrics on port {port})",
            index=worker.index,
            pid=worker.pid,
            port=worker.metrics_port,
        )
        if not self._all_ready.called and len(self.ready_workers()) == self.count:
            self._all_ready.callback(None)

    def ready_workers(self) -> list[Worker]:
        return [w for w in self.workers.values() if w.ready]

    def worker_ended(self, worker: Worker, reason: Failure) -> None:
        self._collected = None
        if self.workers.get(worker.index) is worker:
            del self.workers[worker.index]
        code = getattr(reason.value, "exitCode", None)
        if self.stopping:
            log.info("worker {index} stopped (exit {code})", index=worker.index, code=code)
            if not self.workers and self._stopped is not None and not self._stopped.called:
                self._stopped.callback(None)
            return
        if worker.index not in self.ever_ready:
            log.error(
                "worker {index} failed to start (exit {code}); giving up",
                index=worker.index,
                code=code,
            )
            self.failed = True
            self.reactor.stop()
            return
        uptime = self.reactor.seconds() - worker.started_at
        index = worker.index
        if uptime > self.stable_after:
            self.backoff[index] = self.min_backoff
        delay = self.backoff[index]
        self.backoff[index] = min(delay * 2, self.max_backoff)
        self.restarts[index] += 1
        log.warn(
            "worker {index} exited (code {code}, signal {sig}) after {uptime:.1f} s; "
            "restarting in {delay} s",
            index=index,
            code=code,
            sig=getattr(reason.value, "signal", None),
            uptime=uptime,
            delay=delay,
        )
        self.reactor.callLater(delay, self.spawn, index)

    def stop(self) -> Deferred[None]:
        """SIGTERM to every worker; SIGKILL to those still running after ``stop_timeout``."""
        self.stopping = True
        self.pool.closeCachedConnections()
        if self.listener is not None:
            self.listener.stopListening()
        if not self.workers:
            return succeed(None)
        self._stopped = Deferred()
        for worker in list(self.workers.values()):
            worker.signal("TERM")

        def kill() -> None:
            for worker in list(self.workers.values()):
                log.warn("worker {index} did not stop; killing it", index=worker.index)
                worker.signal("KILL")

        timer = self.reactor.callLater(self.stop_timeout, kill)

        def done(result: None) -> None:
            if timer.active():
                timer.cancel()
            return result

        return self._stopped.addBoth(done)

    # -- metrics ----------------------------------------------------------------------------

    def _get(self, port: int, path: str) -> Deferred[tuple[int, bytes]]:
        host = self.host if self.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        url = f"http://{host}:{port}{path}".encode()
        d = self.agent.request(b"GET", url)

        def body(response: Any) -> Deferred[tuple[int, bytes]]:
            return readBody(response).addCallback(lambda data: (response.code, data))

        return d.addCallback(body)

    def collect(self) -> Deferred[str]:
        """The exposition text: collected from all workers in parallel at most once per
        ``metrics_cache_seconds`` (and again when a worker starts or ends), concurrent
        scrapes sharing one collection."""
        now = self.reactor.seconds()
        if self._collected is not None and now - self._collected[0] < self.metrics_cache_seconds:
            return succeed(self._collected[1])
        waiter: Deferred[str] = Deferred()
        if self._collecting is not None:
            self._collecting.append(waiter)
            return waiter
        self._collecting = [waiter]
        workers = [w for w in self.ready_workers() if w.metrics_port]
        requests = [self._get(w.metrics_port or 0, "/metrics") for w in workers]

        def done(results: list[tuple[bool, Any]]) -> None:
            texts = [r[1][1].decode() for r in results if r[0] and r[1][0] == 200]
            text = self._combine(texts)
            self._collected = (self.reactor.seconds(), text)
            waiting, self._collecting = self._collecting or [], None
            for each in waiting:
                each.callback(text)

        DeferredList(requests, consumeErrors=True).addCallback(done)
        return waiter

    def _combine(self, texts: list[str]) -> str:
        extra: list[tuple[Any, ...]] = [
            ("edge_workers", "gauge", "Edge worker processes configured", self.count, None),
        ]
        for index in range(self.count):
            worker = self.workers.get(index)
            labels = {"worker": str(index)}
            up = int(worker is not None and worker.ready)
            extra.append(("edge_worker_up", "gauge", "1 when the worker is ready", up, labels))
            extra.append(
                (
                    "edge_worker_restarts_total",
                    "counter",
                    "Times the supervisor restarted the worker",
                    self.restarts[index],
                    labels,
                )
            )
        return aggregate(texts, extra)

    def healthy(self) -> Deferred[bool]:
        workers = self.ready_workers()
        if len(workers) < self.count:
            return succeed(False)
        requests = [self._get(w.metrics_port or 0, "/healthz") for w in workers]

        def check(results: list[tuple[bool, Any]]) -> bool:
            return all(ok and value[0] == 200 for ok, value in results)

        return DeferredList(requests, consumeErrors=True).addCallback(check)


HOST_PREFIX = "edge_host_"


def aggregate(texts: list[str], extra: list[tuple[Any, ...]]) -> str:
    """Sum Prometheus samples with the same name and labels over several exposition texts
    (``edge_host_*`` samples, the same figure of the machine in every text, are not summed)."""
    meta: dict[str, tuple[str, str]] = {}
    sums: dict[tuple[str, str], float] = {}
    for text in texts:
        helps: dict[str, str] = {}
        for line in text.splitlines():
            if line.startswith("# HELP "):
                name, _, rest = line[7:].partition(" ")
                helps[name] = rest
            elif line.startswith("# TYPE "):
                name, _, kind = line[7:].partition(" ")
                meta.setdefault(name, (helps.get(name, ""), kind))
            elif line and not line.startswith("#"):
                series, _, value = line.rpartition(" ")
                name, brace, labels = series.partition("{")
                try:
                    amount = float(value)
                except ValueError:
                    continue
                key = (name, brace + labels)
                if name.startswith(HOST_PREFIX) or name.endswith("_timestamp_seconds"):
                    # The same host-wide figure (or a moment: a certificate's expiry) read
                    # by every worker: reported once.
                    sums[key] = max(sums.get(key, amount), amount)
                else:
                    sums[key] = sums.get(key, 0.0) + amount
    samples: list[tuple[Any, ...]] = []
    for (name, labels), total in sums.items():
        help_text, kind = meta.get(name, ("", "untyped"))
        number: float | int = int(total) if total.is_integer() else total
        samples.append((name, kind, help_text, number, _parse_labels(labels)))
    samples.extend(extra)
    return render_metrics(samples)


def _parse_labels(raw: str) -> dict[str, str] | None:
    if not raw:
        return None
    labels = {}
    for part in raw.strip("{}").split(","):
        key, _, value = part.partition("=")
        if key:
            labels[key] = value.strip('"')
    return labels


class SupervisorResource(Resource):
    isLeaf = True

    def __init__(self, supervisor: Supervisor) -> None:
        super().__init__()
        self.supervisor = supervisor

    def render_GET(self, request: Request) -> Any:
        path = request.path
        if path == b"/metrics":
            d = self.supervisor.collect()
            d.addCallback(lambda text: _finish(request, 200, text.encode(), metrics=True))
        elif path == b"/healthz":
            d2 = self.supervisor.healthy()
            d2.addCallback(
                lambda ok: _finish(
                    request, 200 if ok else 503, b"ok\n" if ok else b"workers not ready\n"
                )
            )
        else:
            request.setResponseCode(404)
            return b"not found\n"
        return NOT_DONE_YET


def _finish(request: Request, code: int, body: bytes, metrics: bool = False) -> None:
    if request.finished or getattr(request, "_disconnected", False):
        return
    request.setResponseCode(code)
    content_type = b"text/plain; version=0.0.4; charset=utf-8" if metrics else b"text/plain"
    request.setHeader(b"content-type", content_type)
    request.write(body)
    request.finish()


def supervise(env: Mapping[str, str], count: int, host: str, metrics_port: int, node: str) -> int:
    """Run the supervisor until SIGTERM/SIGINT; the process exit code."""
    from twisted.internet import reactor as installed

    reactor: Any = installed
    # The workers' online stamps (edge.thinglinks.presence.OnlineStamp) outlive a worker, not
    # the run: a directory of this run's, removed at exit, unless EDGE_STAMP_DIR names one.
    run_dir = None
    if not env.get("EDGE_STAMP_DIR"):
        run_dir = tempfile.mkdtemp(prefix="thinglinks-edge-run-")
        env = {**env, "EDGE_STAMP_DIR": run_dir}
    supervisor = Supervisor(reactor, env, count, host, metrics_port, node)

    def started(_: None) -> None:
        log.info(
            "edge supervisor: {count} workers ready (nodes {node}-0…{node}-{last}), "
            "metrics on {host}:{port}",
            count=count,
            node=node,
            last=count - 1,
            host=host,
            port=metrics_port,
        )

    def begin() -> None:
        try:
            supervisor.start().addCallback(started)
        except Exception:
            log.failure("edge supervisor failed to start")
            supervisor.failed = True
            reactor.stop()

    reactor.callWhenRunning(begin)
    # The supervisor's text (the workers' sum) is the edge's process snapshot (edge.snapshot).
    reactor.callWhenRunning(lambda: TwistedSnapshot(
        reactor, "edge", supervisor.collect, env.get("REDIS_URL", ""),
        env.get("REDIS_PREFIX") or "tl:").start())
    reactor.addSystemEventTrigger("before", "shutdown", supervisor.stop)
    # SIGHUP (a closed terminal) stops as cleanly as SIGTERM.
    reactor.callWhenRunning(
        lambda: signal.signal(signal.SIGHUP, lambda *_: reactor.callFromThread(reactor.stop))
    )
    try:
        reactor.run()
    finally:
        if run_dir is not None:
            shutil.rmtree(run_dir, ignore_errors=True)
    return 1 if supervisor.failed else 0
