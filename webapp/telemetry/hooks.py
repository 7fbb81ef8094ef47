"""How other apps take part in ingest without ingest knowing them.

An app registers, in its `AppConfig.ready()`:

- `@on_uplink("cmdrsp")` — a handler for the uplink events of one kind (docs/bus.md) that
  ingest does not store itself (`cmdrsp`, `event`, `topo`, `shadow`, …); it receives the list of
  events of that kind from one batch;
- `@after_store` — a handler called with every stored batch (points, status changes), e.g. the
  rule engine.

Handlers run in the ingest worker after the batch is written and before it is acknowledged: a
handler that raises leaves the batch pending, so it is retried — handlers must be idempotent.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from webapp.telemetry.batch import Batch

EventHandler = Callable[[list[dict[str, Any]]], None]
BatchHandler = Callable[["Batch"], None]

_event_handlers: dict[str, list[EventHandler]] = defaultdict(list)
_batch_handlers: list[BatchHandler] = []


def on_uplink(kind: str) -> Callable[[EventHandler], EventHandler]:
    def register(handler: EventHandler) -> EventHandler:
        if handler not in _event_handlers[kind]:
            _event_handlers[kind].append(handler)
        return handler

    return register


def after_store(handler: BatchHandler) -> BatchHandler:
    if handler not in _batch_handlers:
        _batch_handlers.append(handler)
    return handler


# Whether the batch being dispatched holds entries delivered before (Batch.redelivered):
# event handlers that must not act twice (the rule engine) read it.
redelivered: ContextVar[bool] = ContextVar("redelivered", default=False)


def run(batch: Batch) -> list[dict[str, Any]]:
    """Dispatch a stored batch; returns the events no handler claimed."""
    token = redelivered.set(batch.redelivered)
    try:
        return _dispatch(batch)
    finally:
        redelivered.reset(token)


def _dispatch(batch: Batch) -> list[dict[str, Any]]:
    by_kind: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in batch.others:
        by_kind[str(event.get("t"))].append(event)
    unclaimed: list[dict[str, Any]] = []
    for kind, events in by_kind.items():
        handlers = _event_handlers.get(kind)
        if not handlers:
            unclaimed.extend(events)
            continue
        for handler in handlers:
            handler(events)
    for batch_handler in _batch_handlers:
        batch_handler(batch)
    return unclaimed
