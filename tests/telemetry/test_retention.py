"""Retention and rollups per product, as Celery beat runs them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.conf import settings

from tests.telemetry.backend_suite import MIN, point, q
from tests.telemetry.conftest import BASE
from webapp.telemetry import actions
from webapp.telemetry.backends import get_backend
from webapp.telemetry.models import DeviceMessage, RetentionPolicy

HOUR = 60 * MIN
DAY = 24 * HOUR


@pytest.fixture
def three_days(sensor):
    """Three days of one point per 10 minutes for d1 (humidity = minute of the day % 100)."""
    get_backend().write([point("d1", BASE + i * 10 * MIN, humidity=(i * 10) % 100,
                               temperature=i / 2) for i in range(3 * 144)])
    return sensor


def policy(product, **fields):
    return RetentionPolicy.objects.create(product=product, **fields)


def test_long_range_aggregates_read_the_rollup(three_days):
    """Hourly aggregates over three days equal the raw ones, and come from the rollup."""
    backend = get_backend()
    policy(three_days, rollups=["5m", "1h"])
    long_range = q(three_days, properties=["humidity", "temperature"], start=BASE,
                   end=BASE + 3 * DAY, limit=10_000)
    raw = {f: backend.aggregate(long_range, HOUR, f) for f in ("avg", "min", "max", "sum",
                                                                "count")}
    assert actions.refresh_rollups(now_ms=BASE + 3 * DAY) > 0
    with_rollups = q(three_days, properties=["humidity", "temperature"], start=BASE,
                     end=BASE + 3 * DAY, limit=10_000, rollups=[5 * MIN, HOUR])
    for function, expected in raw.items():
        got = backend.aggregate(with_rollups, HOUR, function)
        assert [r["ts"] for r in got] == [r["ts"] for r in expected]
        for mine, theirs in zip(got, expected):
            assert mine["humidity"] == pytest.approx(theirs["humidity"])
            assert mine["temperature"] == pytest.approx(theirs["temperature"])
    # Proof that the rollup answers: with the raw points gone the answer stays.
    backend.expire(three_days, BASE + 4 * DAY)
    assert backend.query(q(three_days, start=0, end=BASE + 4 * DAY)) == []
    from_rollup = backend.aggregate(with_rollups, HOUR, "avg")
    assert [r["humidity"] for r in from_rollup] == pytest.approx(
        [r["humidity"] for r in raw["avg"]])


def test_short_ranges_and_first_last_read_raw_points(three_days):
    """A range under a day, or first/last, reads the raw points even with rollups."""
    backend = get_backend()
    policy(three_days, rollups=["1h"])
    actions.refresh_rollups(now_ms=BASE + 3 * DAY)
    backend.expire(three_days, BASE + 4 * DAY)
    short = q(three_days, properties=["humidity"], start=BASE, end=BASE + 2 * HOUR,
              rollups=[HOUR])
    assert backend.aggregate(short, HOUR, "avg") == []
    long_last = q(three_days, properties=["humidity"], start=BASE, end=BASE + 3 * DAY,
                  rollups=[HOUR])
    assert backend.aggregate(long_last, HOUR, "last") == []


def test_the_rollup_catches_up_with_new_and_late_points(three_days):
    """Each run adds the buckets completed since; points arriving late within the lookback
    are counted when the next run recomputes their bucket."""
    backend = get_backend()
    policy(three_days, rollups=["1h"])
    actions.refresh_rollups(now_ms=BASE + 2 * DAY)
    rolled = q(three_days, properties=["humidity"], start=BASE, end=BASE + 3 * DAY,
               rollups=[HOUR], limit=10_000)
    assert len(backend.aggregate(rolled, HOUR, "count")) == 72  # 48 from rollup + 24 raw
    backend.write([point("d1", BASE + 2 * DAY - HOUR + 1, humidity=1000)])  # late point
    actions.refresh_rollups(now_ms=BASE + 3 * DAY)
    backend.expire(three_days, BASE + 4 * DAY)
    counts = backend.aggregate(rolled, HOUR, "count")
    assert len(counts) == 72 and counts[47]["humidity"] == 7 and counts[46]["humidity"] == 6


def test_retention_drops_raw_rollups_and_messages(sensor):
    """apply_retention drops what is past each retention and keeps the rest."""
    backend = get_backend()
    now = BASE + 10 * DAY
    backend.write([point("d1", BASE + d * DAY + HOUR, humidity=d) for d in range(10)])
    policy(sensor, raw_days=3, rollups=["1h"], rollup_days=5)
    actions.refresh_rollups(now_ms=now)
    old = datetime.fromtimestamp(now / 1000, tz=UTC) - timedelta(
        days=settings.TELEMETRY_MESSAGE_DAYS + 1)
    DeviceMessage.objects.create(device_identifier="d1", ts=old, direction="up", topic="t",
                                 result="accepted")
    DeviceMessage.objects.create(device_identifier="d1", ts=datetime.now(tz=UTC),
                                 direction="up", topic="t", result="accepted")
    dropped = actions.apply_retention(now_ms=now)
    assert dropped["messages"] == 1 and DeviceMessage.objects.count() == 1
    kept = backend.query(q(sensor, properties=["humidity"], start=0, end=now))
    # Raw: the last 3 days (PostgreSQL drops whole days before the cut-off, so the same).
    assert [r["humidity"] for r in kept] == [7, 8, 9]
    rolled = backend.aggregate(q(sensor, properties=["humidity"], start=0, end=now,
                                 rollups=[HOUR], limit=10_000), DAY, "max")
    assert [r["humidity"] for r in rolled] == [5, 6, 7, 8, 9]


def test_beat_runs_the_telemetry_housekeeping():
    """The beat schedule has the four telemetry tasks, and they are registered."""
    from config.celery import app

    app.loader.import_default_modules()
    wanted = {"telemetry.persist_latest", "telemetry.prepare_partitions",
              "telemetry.refresh_rollups", "telemetry.apply_retention"}
    scheduled = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert wanted <= scheduled and wanted <= set(app.tasks)
