"""Run the whole platform in the foreground with one log: `make run`.

Starts the embedded Redis when `REDIS_URL` is not set, migrates, creates the admin and demo
data, then supervises web (Daphne), edge, ingest, Celery worker and Celery beat. Ctrl-C stops
them in order (edge first, so devices go offline cleanly; Redis last).
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
from django.core.management.base import BaseCommand

from config.embedded_redis import EmbeddedRedis

RESTART_BACKOFF = (1, 2, 5, 10, 30)


@dataclass
class Child:
    name: str
    argv: list[str]
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started: float = 0.0
    buffer: bytes = field(default=b"")


def child_env() -> dict[str, str]:
    """The children's environment. Celery's INFO is a line per task run (beat sends some
    every few seconds): the combined log shows Celery's warnings and errors unless
    CELERY_LOG_LEVEL says otherwise (settings.LOGGING reads it; Celery's `-l` alone does not
    apply, as Celery leaves logging to Django)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.setdefault("CELERY_LOG_LEVEL", "WARNING")
    # The key the settings found (DJANGO_SECRET_KEY, else var/secret_key that manage.py
    # created on the first run): every child encrypts and signs with the same one.
    env["DJANGO_SECRET_KEY"] = settings.SECRET_KEY
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
        sys.stdout.write(f"{stamp} {name:<7}| {line}\n")
        sys.stdout.flush()

    def handle(self, *args: Any, **options: Any) -> None:
        redis_server: EmbeddedRedis | None = None
        if not os.environ.get("REDIS_URL"):
            redis_server = EmbeddedRedis(settings.VAR_DIR, persistent=True)
            url = redis_server.start()
            os.environ["REDIS_URL"] = url
            self.log("redis", f"embedded redis-server started at {url}")
        else:
            self.log("redis", "using REDIS_URL")
        try:
            if not options["no_bootstrap"]:
                call_command("migrate", interactive=False, verbosity=0)
                self.log("setup", f"database migrated ({settings.DATABASES['default']['ENGINE']})")
                # `make run` is the development command: the admin's generated password is
                # shown in its terminal, as the README promises (and must be changed at the
                # first login); `manage.py bootstrap` alone (containers) keeps it in the file.
                call_command("bootstrap", show_password=True,
                             stdout=_LineWriter(lambda s: self.log("setup", s)))
                self.check_stored_secrets()
            self.supervise(self.children(options), options)
        finally:
            if redis_server is not None:
                redis_server.stop()
                self.log("redis", "embedded redis-server stopped")

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

    def start(self, child: Child) -> None:
        child.process = subprocess.Popen(
            child.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=child_env(),
            cwd=settings.BASE_DIR, start_new_session=True)
        child.started = time.monotonic()
        os.set_blocking(child.process.stdout.fileno(), False)  # type: ignore[union-attr]
        self.log(child.name, f"started (pid {child.process.pid})")

    def supervise(self, children: list[Child], options: dict[str, Any]) -> None:
        from webapp.devices.registry import republish_all

        products, devices = republish_all()
        self.log("setup", f"edge registry: {products} products, {devices} devices published")
        stopping = False

        def on_signal(signum: int, frame: Any) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        selector = selectors.DefaultSelector()
        for child in children:
            self.start(child)
            selector.register(child.process.stdout, selectors.EVENT_READ, child)  # type: ignore[union-attr,arg-type]
        self.log("setup", f"ThingLinks is up: console http://localhost:{options['web_port']}/ "
                          f"(admin /admin/, API /api/docs/) "
                          f"· MQTT {os.environ.get('EDGE_MQTT_PORT', '11883')} · Ctrl-C stops")
        restart_at: dict[str, float] = {}
        while not stopping:
            for key, _ in selector.select(timeout=0.5):
                self.pump(key.data)
            for child in children:
                assert child.process is not None
                if child.process.poll() is None:
                    continue
                if child.name not in restart_at:
                    self.pump(child)
                    delay = RESTART_BACKOFF[min(child.restarts, len(RESTART_BACKOFF) - 1)]
                    self.log(child.name, f"exited with {child.process.returncode}; "
                                         f"restarting in {delay} s")
                    restart_at[child.name] = time.monotonic() + delay
                    selector.unregister(child.process.stdout)  # type: ignore[arg-type]
                elif time.monotonic() >= restart_at[child.name]:
                    del restart_at[child.name]
                    if time.monotonic() - child.started > 60:
                        child.restarts = 0
                    child.restarts += 1
                    self.start(child)
                    selector.register(child.process.stdout, selectors.EVENT_READ, child)  # type: ignore[union-attr,arg-type]
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
        self.log(child.name, f"stopped ({process.returncode})")


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
