"""A pytest plugin for `make test-fast` (`-p tests.support.fast`): a test that starts a
process fails, saying how to mark it, instead of slowing the fast suite down unnoticed."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(autouse=True)
def _no_processes(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
                  ) -> Iterator[None]:
    def refuse(self: subprocess.Popen[Any], *args: Any, **kwargs: Any) -> None:
        raise AssertionError(
            f"{request.node.nodeid} starts a process in the fast suite: mark the test `e2e`, "
            "or its fixture `starts_processes` (tests/support/slow.py)")

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)
    yield
