"""``/metrics`` (Prometheus text format) and ``/healthz`` for one edge node."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.web.resource import Resource
from twisted.web.server import Request, Site

Sample = tuple[Any, ...]
"""``(name, type, help, value)`` or ``(name, type, help, value, labels)``."""


class MetricsResource(Resource):
    isLeaf = True

    def __init__(self, collect: Callable[[], list[Sample]], healthy: Callable[[], bool]) -> None:
        super().__init__()
        self.collect = collect
        self.healthy = healthy

    def render_GET(self, request: Request) -> bytes:
        path = request.path
        if path == b"/metrics":
            request.setHeader(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")
            return render_metrics(self.collect()).encode()
        if path == b"/healthz":
            request.setHeader(b"content-type", b"text/plain")
            if self.healthy():
                return b"ok\n"
            request.setResponseCode(503)
            return b"redis unavailable\n"
        request.setResponseCode(404)
        return b"not found\n"


def render_metrics(samples: list[Sample]) -> str:
    """Samples as Prometheus exposition text; samples of one name are grouped under one
    ``# HELP`` / ``# TYPE`` header, in the order the names first appear."""
    families: dict[str, list[Sample]] = {}
    for sample in samples:
        families.setdefault(sample[0], []).append(sample)
    lines = []
    for name, members in families.items():
        lines.append(f"# HELP {name} {members[0][2]}")
        lines.append(f"# TYPE {name} {members[0][1]}")
        for sample in members:
            value = sample[3]
            text = f"{value:g}" if isinstance(value, float) else f"{value}"
            labels = sample[4] if len(sample) > 4 else None
            if labels:
                inner = ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items())
                lines.append(f"{name}{{{inner}}} {text}")
            else:
                lines.append(f"{name} {text}")
    return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class QuietSite(Site):
    """A Site without an access log line per scrape."""

    noisy = False

    def log(self, request: Any) -> None:
        return None


def listen_overflows(path: str = "/proc/net/netstat") -> int | None:
    """The kernel's ListenOverflows counter (connections dropped because an accept queue was
    full) for this network namespace, or None where it cannot be read. A gauge, not a
    counter of ours: the supervisor reports it once, not summed over workers."""
    try:
        with open(path) as lines:
            rows = [line.split() for line in lines if line.startswith("TcpExt:")]
    except OSError:
        return None
    if len(rows) < 2:
        return None
    names, values = rows[0], rows[1]
    try:
        return int(values[names.index("ListenOverflows")])
    except (ValueError, IndexError):
        return None
