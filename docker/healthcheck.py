"""The containers' healthchecks (docker/compose.yml): ``python docker/healthcheck.py ROLE``
exits 0 when the process of this container does its work, 1 (with the reason) otherwise.

- ``web``: ``GET /healthz`` on ``WEB_PORT`` (8000) answers 200 (database and Redis reachable),
  asked with the host name of ``PUBLIC_BASE_URL`` (it must be in ``DJANGO_ALLOWED_HOSTS``).
- ``edge``: ``GET /healthz`` on the edge's metrics port (``EDGE_METRICS_PORT``, 19100) answers
  200 (the node reaches Redis; with ``EDGE_WORKERS`` > 1, the supervisor answers).
- ``ingest``: a consumer of this host (``{hostname}-{pid}``, the ingest command's default name)
  is in the uplink stream's consumer group and read it within the last 30 s (XINFO CONSUMERS).
- ``worker``: ``celery inspect ping`` of ``celery@{hostname}`` answers, through the broker.
- ``beat``: ``celerybeat@{hostname}`` answers the same ping (beat runs with
  ``--enable-remote-control``, and stops answering when its scheduler stops ticking).

In a container the host name is the container's, so the check names this container's
process only. Run from the image's working directory (/app) or the repository root.
"""

from __future__ import annotations

import os
import socket
import sys
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
INGEST_IDLE_MS = 30_000
TIMEOUT = 8.0


def _get(port: int, host_header: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/healthz")
    if host_header:
        request.add_header("Host", host_header)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:  # noqa: S310
            return response.status, response.read(2000).decode(errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read(2000).decode(errors="replace")


def check_web() -> str | None:
    port = int(os.environ.get("WEB_PORT") or 8000)
    host = urlparse(os.environ.get("PUBLIC_BASE_URL") or "").hostname or "127.0.0.1"
    status, body = _get(port, host)
    return None if status == 200 else f"web /healthz answered {status}: {body}"


def check_edge() -> str | None:
    port = int(os.environ.get("EDGE_METRICS_PORT") or 19100)
    status, body = _get(port)
    return None if status == 200 else f"edge /healthz answered {status}: {body}"


def _django() -> None:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()


def check_ingest() -> str | None:
    _django()
    from edge.bus.keys import UPLINK_GROUP
    from webapp.core.redis import get_redis, keys

    stream = keys().uplink
    mine = f"{socket.gethostname()}-"
    idle = [int(c["idle"]) for c in get_redis().xinfo_consumers(stream, UPLINK_GROUP)
            if _text(c["name"]).startswith(mine)]
    if not idle:
        return f"no ingest consumer of {socket.gethostname()} in {stream} group {UPLINK_GROUP}"
    if min(idle) > INGEST_IDLE_MS:
        return f"the ingest consumer has not read {stream} for {min(idle) / 1000:.0f} s"
    return None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _ping(node: str) -> str | None:
    _django()
    from config.celery import app

    replies = app.control.inspect(destination=[node], timeout=5.0).ping() or {}
    return None if node in replies else f"{node} did not answer a ping"


def check_worker() -> str | None:
    return _ping(f"celery@{socket.gethostname()}")


def check_beat() -> str | None:
    return _ping(f"celerybeat@{socket.gethostname()}")


CHECKS = {"web": check_web, "edge": check_edge, "ingest": check_ingest,
          "worker": check_worker, "beat": check_beat}


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in CHECKS:
        print(f"usage: healthcheck.py {{{','.join(CHECKS)}}}", file=sys.stderr)
        return 2
    try:
        problem = CHECKS[argv[0]]()
    except Exception as exc:  # unreachable Redis or port: unhealthy, with the reason
        problem = f"{type(exc).__name__}: {exc}"
    if problem:
        print(problem, file=sys.stderr)
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
