"""The shared backend behaviour on a real TDengine server, when `TDENGINE_URL` names one
(`taosws://root:taosdata@host:6041` or `taosrest://…`); there is none on these machines."""

from __future__ import annotations

import os
import uuid

import pytest

from tests.telemetry.backend_suite import BackendBehaviour

pytestmark = pytest.mark.tdengine


@pytest.fixture
def backend(transactional_db):
    url = os.environ.get("TDENGINE_URL")
    if not url:
        pytest.skip("TDENGINE_URL is not set: no TDengine server to run against")
    from webapp.telemetry.backends.tdengine import TDengineBackend

    database = f"tl_test_{uuid.uuid4().hex[:8]}"
    tdengine = TDengineBackend(f"{url.rstrip('/')}/{database}")
    yield tdengine
    tdengine.conn.execute(f"DROP DATABASE IF EXISTS `{database}`")


class TestTDengineBackend(BackendBehaviour):
    pass
