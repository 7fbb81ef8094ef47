"""On-commit hooks in tests that run inside a transaction (`django_db` without
`transaction=True`, the fast kind).

Actions publish to Redis, dispatch commands and bump versions in `transaction.on_commit`
callbacks. Inside the test's transaction nothing ever commits, so these callbacks would never
run; `transaction=True` makes them run, but flushes every table after each test (slow).
The `commit_hooks` fixture runs them where production would have committed instead: when the
code under test leaves its outermost `atomic` block without an error, or registers a callback
outside any block of its own (autocommit runs it at once). Callbacks of a block that rolled
back are dropped by Django as usual, and robust ones have their errors logged, as Django does.

This is Django's `captureOnCommitCallbacks(execute=True)` (pytest-django's
`django_capture_on_commit_callbacks`) applied at each commit point rather than around a block
of the test, so the test reads Redis right after the call, as it would after a real commit.
It cannot stand in for `transaction=True` where another thread, process or connection must
see the data (an edge or ingest process, a live server): those tests keep it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest

logger = logging.getLogger(__name__)


@pytest.fixture
def commit_hooks(db: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    from django.db import connections, transaction

    connection = connections["default"]
    # The test's own blocks (pytest-django's class and test atomics) stand for autocommit.
    base = len(connection.atomic_blocks)
    seen = len(connection.run_on_commit)

    def run_pending() -> None:
        # Callbacks may register more callbacks: run until none is left, as Django does.
        while len(connection.run_on_commit) > seen:
            _sids, func, robust = connection.run_on_commit.pop(seen)
            if not robust:
                func()
                continue
            try:
                func()
            except Exception as exc:
                logger.error("Error calling %s in on_commit() (%s).", func.__qualname__, exc,
                             exc_info=True)

    atomic_exit = transaction.Atomic.__exit__

    def exit_and_commit(self: transaction.Atomic, exc_type: Any, exc: Any, tb: Any) -> Any:
        result = atomic_exit(self, exc_type, exc, tb)
        conn = transaction.get_connection(self.using)
        if exc_type is None and conn is connection and len(conn.atomic_blocks) == base:
            run_pending()
        return result

    on_commit = connection.on_commit

    def on_commit_or_now(func: Callable[[], Any], robust: bool = False) -> None:
        on_commit(func, robust)
        if len(connection.atomic_blocks) == base:
            run_pending()

    monkeypatch.setattr(transaction.Atomic, "__exit__", exit_and_commit)
    monkeypatch.setattr(connection, "on_commit", on_commit_or_now)
    yield
