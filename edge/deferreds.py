"""Helpers for values that are either ready now or arrive later (a Deferred).

The hot path avoids creating Deferreds when a cached answer is already at hand.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, gatherResults, succeed

T = TypeVar("T")
R = TypeVar("R")


def then(value: T | Deferred[T], func: Callable[[T], R]) -> R | Deferred[R]:
    """``func(value)`` now, or when ``value`` (a Deferred) fires."""
    if isinstance(value, Deferred):
        return value.addCallback(func)
    return func(value)


def gather(values: Sequence[Any]) -> list[Any] | Deferred[list[Any]]:
    """The list of results, at once when none of ``values`` is a Deferred."""
    if not any(isinstance(v, Deferred) for v in values):
        return list(values)
    return gatherResults(
        [v if isinstance(v, Deferred) else succeed(v) for v in values], consumeErrors=True
    )
