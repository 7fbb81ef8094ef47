"""The shared backend behaviour on the Django database (SQLite, or PostgreSQL in CI)."""

from __future__ import annotations

import pytest

from tests.telemetry.backend_suite import BackendBehaviour


@pytest.fixture
def backend(db):
    from webapp.telemetry.backends import get_backend

    return get_backend()


class TestSQLBackend(BackendBehaviour):
    pass
