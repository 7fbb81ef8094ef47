"""Run the whole platform in the foreground with one log: `make run`.

Starts the embedded Redis when `REDIS_URL` is not set, migrates, creates the admin and demo
data, then supervises web (Daphne), edge, ingest, Celery worker and Celery beat. A child that
ends is started again after a backoff, the embedded Redis too (at once, from its AOF, on the
same socket: the others' clients reconnect). Ctrl-C, SIGTERM or SIGHUP (the terminal went
away) stops them in order (edge first, so devices go offline cleanly; Redis last). Every child
is started with PR_SET_PDEATHSIG (config/children.py): if this process is killed (-9) they get
SIGTERM from the kernel and end too, and a watchdog process SIGKILLs the process groups of
those that have not ended 5 s later, so nothing is left holding `var/` or the ports.

Each child's environment names it (THINGLINKS_ROLE: redis, edge, ingest, web, worker, beat)
and says how many times the supervisor has restarted it (THINGLINKS_RESTARTS).
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from config.children import Reaper, die_with_parent
from config.embedded_redis import EmbeddedRedis

RESTART_BACKOFF = (1, 2, 5, 10, 30)
# Everything waits for Redis: the embedded server is started again at once the first time.
REDIS_BACKOFF = (0, 1, 2, 5, 10, 30)
# A child that ran this long before it ended starts a new backoff series.
STABLE_AFTER = 60.0


@dataclass
class Child:
    name: str
    argv: list[str]
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0  # the current series of restarts (the backoff), reset when stable
    restarts_total: int = 0  # every restart since the supervisor started
    started: float = 0.0
    buffer: bytes = field(default=b"")
    embedded: EmbeddedRedis | None = None  # the embedded redis-server, started by its class

    @property
    def backoff(self) -> tuple[int, ...]:
        return REDIS_BACKOFF if self.embedded is not None else RESTART_BACKOFF


def child_env(role: str | None = None, restarts: int = 0) -> dict[str, str]:
    """The children's environment. Celery's INFO is a line per task run (beat sends some
    every few seconds): the combined log shows Celery's warnings and errors unless
    CELERY_LOG_LEVEL says otherwise (settings.LOGGING reads it; Celery's `-l` alone does not
    apply, as Celery leaves logging to Django)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.setdefault("CELERY_LOG_LEVEL", "WARNING")
    # The key the settings found (DJANGO_SECRET_KEY, else var/secret_key that manage.py
    # created on the first run): every child encrypts and signs with the same one.
    env["DJANGO_SECRET_KEY"] = settings.SECRET_KEY
    if role is not None:
        env["THINGLINKS_ROLE"] = role
        env["THINGLINKS_RESTARTS"] = str(restarts)
    return env


class Command(BaseCommand):
    help = "Run web, edge, ingest, Celery worker and beat in the foreground (Ctrl-C stops)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--web-port", type=int, default=int(os.environ.get("WEB_PORT",
                                                                                "8000")))
        parser.add_argument("--web-host", default=os.environ.get("WEB_HOST", "0.0.0.0"))
        parser.add_argument("--no-bootstrap", action="store_true")
        parser.add_argument("--only", default="",
                            help="comma-separated subset: web,edge,ingest,worker,beat")

    def log(self, name: str, line: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        try:
            sys.stdout.write(f"{stamp} {name:<7}| {line}\n")
            sys.stdout.flush()
        except (OSError, ValueError):
            pass  # the terminal went away (SIGHUP follows): stopping must not fail on it

    reaper: Reaper | None = None

    def handle(self, *args: Any, **options: Any) -> None:
        self.reaper = Reaper()
        self.reaper.start()
        redis_child: Child | None = None
        try:
            if not os.environ.get("REDIS_URL"):
                try:
                    redis_server = EmbeddedRedis(settings.VAR_DIR, persistent=True)
                except ValueError as exc:  # EMBEDDED_REDIS_FSYNC
                    raise CommandError(str(exc)) from None
                redis_child = Child("redis", redis_server.argv(), embedded=redis_server)
                self.start(redis_child)
                if redis_child.process is None or redis_child.process.poll() is not None:
                    raise CommandError("the embedded redis-server did not start (see above)")
                os.environ["REDIS_URL"] = redis_server.url
                self.log("redis", f"embedded redis-server at {redis_server.url} (AOF: "
                                  f"appendfsync {redis_server.fsync})")
            else:
                self.log("redis", "using REDIS_URL")
            if not options["no_bootstrap"]:
                call_command("migrate", interactive=False, verbosity=0)
                self.log("setup", f"database migrated ({settings.DATABASES['default']['ENGINE']})")
                # `make run` is the development command: the admin's generated password is
                # shown in its terminal, as the README promises (and must be changed at the
                # first login); `manage.py bootstrap` alone (containers) keeps it in the file.
                call_command("bootstrap", show_password=True,
                             stdout=_LineWriter(lambda s: self.log("setup", s)))
                self.check_stored_secrets()
            self.supervise(self.children(options), options, redis_child)
        finally:
            if redis_child is not None:
                self.stop(redis_child)
            self.reaper.close()

    def check_stored_secrets(self) -> None:
        """Warn when the stored device secrets were encrypted with another key (an
        installation of an earlier version, which fell back to a public development key)."""
        from edge.crypto import InvalidToken, decrypt_secret
        from webapp.devices.models import Device

        tokens = list(Device.objects.exclude(secret_encrypted="").order_by("-pk")
                      .values_list("secret_encrypted", flat=True)[:5])
        readable = 0
        for token in tokens:
            try:
                decrypt_secret(token, settings.SECRET_KEY)
                readable += 1
            except InvalidToken:
                pass
        if tokens and not readable:
            self.log("setup", "WARNING: the stored device secrets do not open with the current "
                              "secret key, so devices cannot connect. Move them to it with "
                              "`manage.py rotate_secrets --old-key-file <file with the old key>` "
                              "(README, Production)")

    def children(self, options: dict[str, Any]) -> list[Child]:
        python = sys.executable
        bindir = os.path.dirname(python)
        celery = os.path.join(bindir, "celery")
        celery_level = child_env()["CELERY_LOG_LEVEL"]
        all_children = [
            Child("edge", [python, "-m", "edge"]),
            Child("ingest", [python, "manage.py", "ingest", "--no-republish"]),
            Child("web", [os.path.join(bindir, "daphne"), "-b", options["web_host"], "-p",
                          str(options["web_port"]), "config.asgi:application"]),
            Child("worker", [celery, "-A", "config", "--quiet", "worker", "-l", celery_level,
                             "--concurrency", os.environ.get("CELERY_CONCURRENCY", "2"),
                             "-n", f"worker-{os.getpid()}@%h"]),
            Child("beat", [celery, "-A", "config", "--quiet", "beat", "-l", celery_level,
                           "--pidfile", str(settings.VAR_DIR / "celerybeat.pid")]),
        ]
        only = {s.strip() for s in options["only"].split(",") if s.strip()}
        return [c for c in all_children if not only or c.name in only]

    def start(self, child: Child, others: list[Child] | None = None) -> None:
        """Start `child` in a session of its own (Ctrl-C reaches only the supervisor, which
        stops the children in order) that ends with this process (PR_SET_PDEATHSIG)."""
        env = child_env(child.name, child.restarts_total)
        again = f", restart {child.restarts_total}" if child.restarts_total else ""
        child.started = time.monotonic()
        if child.embedded is not None:
            def idle() -> None:  # keep the others' output flowing while Redis loads
                for other in others or ():
                    self.pump(other)
            try:
                child.embedded.start(env=env, idle=idle)
            except RuntimeError as exc:
                self.log(child.name, str(exc).strip())
            child.process = child.embedded.process
            if child.process is not None:
                self.watch(child)
            if child.process is not None and child.process.poll() is None:
                self.log(child.name, f"started (pid {child.process.pid}{again}; ready in "
                                     f"{time.monotonic() - child.started:.2f} s)")
            return
        child.process = subprocess.Popen(
            child.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
            cwd=settings.BASE_DIR, start_new_session=True, preexec_fn=die_with_parent())
        self.watch(child)
        os.set_blocking(child.process.stdout.fileno(), False)  # type: ignore[union-attr]
        self.log(child.name, f"started (pid {child.process.pid}{again})")

    def watch(self, child: Child) -> None:
        """The watchdog learns the child's process group (it leads a session of its own)."""
        if self.reaper is not None and child.process is not None:
            self.reaper.watch(child.process.pid)

    def reaped(self, child: Child) -> None:
        """The child ended and was reaped: the watchdog must not signal its id again."""
        if self.reaper is not None and child.process is not None:
            self.reaper.forget(child.process.pid)

    def supervise(self, children: list[Child], options: dict[str, Any],
                  redis_child: Child | None = None) -> None:
        from webapp.devices.registry import republish_all

        products, devices = republish_all()
        self.log("setup", f"edge registry: {products} products, {devices} devices published")
        stopping = False

        def on_signal(signum: int, frame: Any) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGHUP, on_signal)  # the terminal went away: an orderly stop
        selector = selectors.DefaultSelector()
        for child in children:
            self.start(child)
            selector.register(child.process.stdout, selectors.EVENT_READ, child)  # type: ignore[union-attr,arg-type]
        watched = ([redis_child] if redis_child is not None else []) + children
        self.log("setup", f"ThingLinks is up: console http://localhost:{options['web_port']}/ "
                          f"(admin /admin/, API /api/docs/) "
                          f"· MQTT {os.environ.get('EDGE_MQTT_PORT', '11883')} · Ctrl-C stops")
        restart_at: dict[str, float] = {}
        while not stopping:
            for key, _ in selector.select(timeout=0.5 if not restart_at else 0.1):
                self.pump(key.data)
            for child in watched:
                if stopping:
                    break
                assert child.process is not None
                if child.process.poll() is None:
                    continue
                if child.name not in restart_at:
                    self.reaped(child)
                    self.pump(child)
                    if time.monotonic() - child.started > STABLE_AFTER:
                        child.restarts = 0
                    delay = child.backoff[min(child.restarts, len(child.backoff) - 1)]
                    self.log(child.name, f"exited with {describe_exit(child.process.returncode)}"
                                         f"; restarting in {delay} s")
                    restart_at[child.name] = time.monotonic() + delay
                    if child.process.stdout is not None:
                        selector.unregister(child.process.stdout)
                elif time.monotonic() >= restart_at[child.name]:
                    del restart_at[child.name]
                    child.restarts += 1
                    child.restarts_total += 1
                    self.start(child, others=children)
                    if child.process.stdout is not None:
                        selector.register(child.process.stdout, selectors.EVENT_READ, child)  # type: ignore[arg-type]
        self.log("setup", "stopping")
        for child in children:  # edge first: devices go offline while ingest still runs
            self.stop(child)
            self.pump(child)

    def pump(self, child: Child) -> None:
        stream = child.process.stdout if child.process else None
        if stream is None:
            return
        try:
            data = stream.read()
        except (BlockingIOError, ValueError):
            return
        if not data:
            return
        child.buffer += data
        *lines, child.buffer = child.buffer.split(b"\n")
        for line in lines:
            self.log(child.name, line.decode(errors="replace").rstrip())

    def stop(self, child: Child, timeout: float = 15.0) -> None:
        process = child.process
        if process is None or process.poll() is not None:
            self.reaped(child)
            return
        process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while process.poll() is None and time.monotonic() < deadline:
            self.pump(child)
            time.sleep(0.1)
        if process.poll() is None:
            self.log(child.name, "did not stop in time; killed")
            process.kill()
            process.wait()
        self.reaped(child)
        self.pump(child)  # its last words before the supervisor's line
        self.log(child.name, f"stopped ({process.returncode})")


def describe_exit(returncode: int | None) -> str:
    """`1`, or `-9 (SIGKILL)` for a child a signal ended."""
    if returncode is None or returncode >= 0:
        return str(returncode)
    try:
        return f"{returncode} ({signal.Signals(-returncode).name})"
    except ValueError:
        return str(returncode)


class _LineWriter:
    """A file-like object that sends each written line to a callback."""

    def __init__(self, emit: Any) -> None:
        self.emit = emit

    def write(self, text: str) -> None:
        for line in text.splitlines():
            if line.strip():
                self.emit(line)

    def flush(self) -> None:
        return None
