"""``/metrics`` (Prometheus text format) and ``/healthz`` for one edge node."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.web.resource import Resource
from twisted.web.server import Request, Site


class MetricsResource(Resource):
    isLeaf = True

    def __init__(
        self, collect: Callable[[], list[tuple[str, str, str, float]]], healthy: Callable[[], bool]
    ) -> None:
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


def render_metrics(samples: list[tuple[str, str, str, float]]) -> str:
    """``(name, type, help, value)`` samples as Prometheus exposition text."""
    lines = []
    for name, kind, text, value in samples:
        lines.append(f"# HELP {name} {text}")
        lines.append(f"# TYPE {name} {kind}")
        lines.append(f"{name} {value:g}" if isinstance(value, float) else f"{name} {value}")
    return "\n".join(lines) + "\n"


class QuietSite(Site):
    """A Site without an access log line per scrape."""

    noisy = False

    def log(self, request: Any) -> None:
        return None
