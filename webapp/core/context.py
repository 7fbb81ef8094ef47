"""Who is acting right now (a request's user, a task, the platform), for the operation log.

The request middleware (`webapp.core.middleware.OperationContextMiddleware`) and the Celery
signal handlers (`webapp.system.tasks`) open a context; code that changes data needs not pass
it along. Outside any context (the ingest worker, migrations) changes are not attributed.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from ipaddress import ip_address
from typing import Any

from django.conf import settings


@dataclass
class OperationContext:
    source: str  # webapp.system.choices.OperationSource
    request: Any = None
    user: Any = None
    task: str = ""
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def actor(self) -> Any:
        """The user acting (the request's, resolved late so that DRF auth has run)."""
        if self.request is not None:
            user = getattr(self.request, "user", None)
            if user is not None and user.is_authenticated:
                return user
        return self.user

    @property
    def address(self) -> str | None:
        return client_address(self.request) if self.request is not None else None

    @property
    def user_agent(self) -> str:
        if self.request is None:
            return ""
        return self.request.META.get("HTTP_USER_AGENT", "")[:300]


_current: ContextVar[OperationContext | None] = ContextVar("tl_operation", default=None)


def current() -> OperationContext | None:
    return _current.get()


@contextmanager
def operation_context(source: str, *, request: Any = None, user: Any = None,
                      task: str = "") -> Iterator[OperationContext]:
    context = OperationContext(source=source, request=request, user=user, task=task)
    token = _current.set(context)
    try:
        yield context
    finally:
        _current.reset(token)


def client_address(request: Any) -> str | None:
    """The client's IP: REMOTE_ADDR, or the address `NUM_PROXIES` trusted proxies saw."""
    meta = getattr(request, "META", {})
    proxies = int(getattr(settings, "NUM_PROXIES", 0))
    candidate = meta.get("REMOTE_ADDR", "")
    if proxies:
        forwarded = [a.strip() for a in meta.get("HTTP_X_FORWARDED_FOR", "").split(",")
                     if a.strip()]
        if len(forwarded) >= proxies:
            candidate = forwarded[-proxies]
    try:
        return str(ip_address(candidate))
    except ValueError:
        return None


def push(context: OperationContext) -> Token[OperationContext | None]:
    """Open a context that spans callbacks (Celery's prerun/postrun); close it with `pop`."""
    return _current.set(context)


def pop(token: Token[OperationContext | None]) -> None:
    _current.reset(token)
