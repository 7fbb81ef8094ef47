"""The HTTP device API's port and budgets, from the environment (docs/bus.md, "Edge
budgets")."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class HttpConfig:
    """``EDGE_HTTP_PORT`` (18080; 0 turns the API off) and what one node holds for its HTTP
    devices: a request body (``EDGE_HTTP_MAX_BODY`` bytes, else 413), the request line and
    headers (``EDGE_HTTP_MAX_HEADER`` bytes, else 431), open connections
    (``EDGE_HTTP_MAX_CONNECTIONS``, else 429 and closed), seconds a connection may wait for
    its next request (``EDGE_HTTP_IDLE``), the longest long-poll (``EDGE_HTTP_MAX_WAIT``
    seconds) and how many long-polls wait at once (``EDGE_HTTP_MAX_POLLS`` on the node,
    ``EDGE_HTTP_DEVICE_POLLS`` per device, else 429)."""

    port: int = 18080
    max_body: int = 256 * 1024
    max_header: int = 16 * 1024
    max_connections: int = 10000
    idle: float = 60.0
    max_wait: float = 60.0
    max_polls: int = 10000
    device_polls: int = 2
    # Bytes of pipelined requests read ahead while one is being answered: beyond, the
    # connection stops reading until the answer is written.
    read_ahead: int = 64 * 1024

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> HttpConfig:
        """Raises ValueError for an unusable setting."""

        def number(name: str, default: float) -> float:
            value = float(env.get(name) or default)
            if value < 0:
                raise ValueError(f"{name} must not be negative")
            return value

        default = cls()
        config = cls(
            port=int(number("EDGE_HTTP_PORT", default.port)),
            max_body=int(number("EDGE_HTTP_MAX_BODY", default.max_body)),
            max_header=int(number("EDGE_HTTP_MAX_HEADER", default.max_header)),
            max_connections=int(number("EDGE_HTTP_MAX_CONNECTIONS", default.max_connections)),
            idle=number("EDGE_HTTP_IDLE", default.idle),
            max_wait=number("EDGE_HTTP_MAX_WAIT", default.max_wait),
            max_polls=int(number("EDGE_HTTP_MAX_POLLS", default.max_polls)),
            device_polls=int(number("EDGE_HTTP_DEVICE_POLLS", default.device_polls)),
        )
        if config.port > 65535:
            raise ValueError("EDGE_HTTP_PORT must be a TCP port (0 turns HTTP off)")
        if not config.idle:
            raise ValueError("EDGE_HTTP_IDLE must be above 0")
        return config
