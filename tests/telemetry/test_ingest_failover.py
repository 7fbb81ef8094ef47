"""Redis failover end to end: devices created in the webapp (registry published through the
Sentinel set), the real edge and the real ingest command both on ``REDIS_URL=redis+sentinel://``,
a QoS 1 load, and the master killed with -9 in the middle: every acknowledged point is stored
in the database, and the ingest consumer goes on after the failover (docs/operations.md,
"Redis failover")."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from django.db import connection

from tests.edge.edge_process import running_edge
from tests.edge.sentinel_set import SentinelSet, sentinel_set
from tests.edge.test_redis_failover import Publisher, master_client
from tests.support.slow import starts_processes
from tests.support.waiting import wait_for
from tests.telemetry.conftest import BASE
from tests.telemetry.test_ingest_failures import Ingest

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

DEVICES = [f"fo-{i}" for i in range(3)]
SECRET = "failover-secret"


@pytest.fixture
@starts_processes
def sentinels() -> Iterator[SentinelSet]:
    with sentinel_set() as group:
        yield group


@pytest.fixture
def on_sentinel(settings, sentinels, redis_prefix, request):
    """The sensor product and its devices, published to the Sentinel set's master."""
    from webapp.devices import actions

    settings.REDIS_URL = sentinels.url
    product = request.getfixturevalue("sensor")
    admin = request.getfixturevalue("admin_user")
    for identifier in DEVICES:
        actions.create_device(acting_user=admin, product=product, identifier=identifier,
                              secret=SECRET)
    return product


def stored_ts(product, device: str) -> set[int]:
    from webapp.telemetry.backends.sql import table_name

    with connection.cursor() as cursor:
        if table_name(product, "env") not in connection.introspection.table_names(cursor):
            return set()
        cursor.execute(
            f"SELECT ts FROM {table_name(product, 'env')} WHERE device = %s",  # noqa: S608
            [device],
        )
        return {int(row[0]) for row in cursor.fetchall()}


def test_acknowledged_points_are_stored_by_ingest_across_a_failover(
    on_sentinel, sentinels: SentinelSet, redis_prefix: str, settings
):
    product = on_sentinel
    client = master_client(sentinels)
    wait_for(lambda: all(client.exists(f"{redis_prefix}dev:{d}") for d in DEVICES) or None,
             timeout=10)
    client.wait(1, 2000)
    ingest = Ingest(redis_prefix, sentinels.url)
    edge_env = {"DJANGO_SECRET_KEY": settings.SECRET_KEY, "EDGE_REDIS_WAIT_TIMEOUT_MS": "500"}
    try:
        ingest.start("c1")
        with running_edge(sentinels.url, redis_prefix, edge_env,
                          client=master_client(sentinels)) as edge:
            publishers = [
                Publisher(edge, name, 1, 100, 1, password=SECRET,
                          point=lambda seq: ("env", {"humidity": seq % 100}, BASE + seq))
                for name in DEVICES
            ]
            for p in publishers:
                p.thread.start()
            try:
                time.sleep(2)
                killed_at, promoted_after = sentinels.kill_master()
                time.sleep(4)
            finally:
                for p in publishers:
                    p.stop()
            wait_for(lambda: all(len(p.acked) == len(p.sent) for p in publishers) or None,
                     timeout=15)
            for p in publishers:
                acked = {BASE + seq for seq in p.acked_seqs()}
                wait_for(lambda p=p, acked=acked: acked <= stored_ts(product, p.name) or None,
                         timeout=60, message=lambda p=p: f"{p.name}: not all stored")
                after = p.acked_seqs(after=killed_at + promoted_after + 1)
                assert after, f"{p.name}: nothing acknowledged after the failover"
                assert p.client.is_connected()
                p.close()
            assert ingest.processes["c1"].poll() is None, "ingest died in the failover"
    finally:
        ingest.stop_all()
        print("\n".join(log[-3000:] for log in ingest.logs))
        client.close()
