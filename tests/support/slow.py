"""Which tests are slow: they start processes, talk to a server they started, or drive a
browser. tests/conftest.py marks them `slow`, and `make test-fast` leaves them out.

A test is slow when it carries one of SLOW_MARKERS, or when it uses (directly or through
other fixtures) a fixture that starts processes: pytest-django's `live_server`, or one
decorated with `starts_processes`. Tests that start a process in their own body carry `e2e`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import pytest

SLOW_MARKERS = ("e2e", "browser", "tdengine")
SLOW_FIXTURES = frozenset({"live_server"})

F = TypeVar("F", bound=Callable[..., object])


def starts_processes(fixture_function: F) -> F:
    """Put under `@pytest.fixture`: every test using this fixture is slow."""
    fixture_function.starts_processes = True  # type: ignore[attr-defined]
    return fixture_function


def is_slow(item: pytest.Item) -> bool:
    if any(item.get_closest_marker(name) for name in SLOW_MARKERS):
        return True
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return False
    for name, definitions in info.name2fixturedefs.items():
        if name in SLOW_FIXTURES:
            return True
        # The last definition is the one this test gets (a module's own overrides conftest's).
        if definitions and getattr(definitions[-1].func, "starts_processes", False):
            return True
    return False
