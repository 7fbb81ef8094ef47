"""Aggregates by calendar interval (1d, 1w, 1M) cut at the local midnights of a time zone:
the boundaries, the SQL backend through the API (SQLite here, PostgreSQL in CI), the rollups
they may read, and the statements the TDengine backend sends."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from tests.telemetry.backend_suite import point, q
from tests.telemetry.test_tdengine_statements import STABLE, Recorder, ws_backend
from webapp.telemetry import actions
from webapp.telemetry.backends import Fill, SeriesQuery, get_backend
from webapp.telemetry.backends.base import calendar_boundaries, pick_rollup
from webapp.telemetry.models import RetentionPolicy

HOUR = 3_600_000
DAY = 24 * HOUR
SHANGHAI = ZoneInfo("Asia/Shanghai")
BERLIN = ZoneInfo("Europe/Berlin")


def ms(text: str) -> int:
    """Epoch ms of an ISO time with its offset."""
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def utc(moment: int) -> str:
    return datetime.fromtimestamp(moment / 1000, tz=UTC).isoformat()


def test_shanghai_days_start_at_16_utc_of_the_day_before():
    bounds = calendar_boundaries(ms("2026-12-01T03:00:00+00:00"),
                                 ms("2026-12-03T00:00:00+00:00"), "1d", SHANGHAI)
    assert [utc(b) for b in bounds] == [
        "2026-11-30T16:00:00+00:00", "2026-12-01T16:00:00+00:00", "2026-12-02T16:00:00+00:00",
        "2026-12-03T16:00:00+00:00"]


def test_berlin_days_have_23_and_25_hours_when_the_clocks_change():
    spring = calendar_boundaries(ms("2026-03-29T00:00:00+01:00"),
                                 ms("2026-03-30T00:00:00+02:00"), "1d", BERLIN)
    assert [b - a for a, b in itertools.pairwise(spring)] == [23 * HOUR]
    autumn = calendar_boundaries(ms("2026-10-25T00:00:00+02:00"),
                                 ms("2026-10-26T00:00:00+01:00"), "1d", BERLIN)
    assert [b - a for a, b in itertools.pairwise(autumn)] == [25 * HOUR]


def test_weeks_start_on_monday_and_months_on_the_first():
    # 2026-12-06 is a Sunday: its week began on Monday 2026-11-30.
    weeks = calendar_boundaries(ms("2026-12-06T12:00:00+08:00"),
                                ms("2026-12-08T00:00:00+08:00"), "1w", SHANGHAI)
    assert [datetime.fromtimestamp(b / 1000, tz=SHANGHAI).isoformat() for b in weeks] == [
        "2026-11-30T00:00:00+08:00", "2026-12-07T00:00:00+08:00", "2026-12-14T00:00:00+08:00"]
    months = calendar_boundaries(ms("2026-01-15T00:00:00+01:00"),
                                 ms("2026-04-02T00:00:00+02:00"), "1M", BERLIN)
    assert [datetime.fromtimestamp(b / 1000, tz=BERLIN).isoformat() for b in months] == [
        "2026-01-01T00:00:00+01:00", "2026-02-01T00:00:00+01:00", "2026-03-01T00:00:00+01:00",
        "2026-04-01T00:00:00+02:00", "2026-05-01T00:00:00+02:00"]


@pytest.fixture
def devices(sensor, admin_user):
    from webapp.devices import actions as device_actions

    for identifier in ("d1", "d2"):
        device_actions.create_device(acting_user=admin_user, product=sensor,
                                     identifier=identifier)
    return sensor


def get(api, path, **params):
    return api.get(path, {"service": "env", "property": "humidity", **params})


def test_daily_aggregates_in_shanghai_through_the_api(api, devices):
    """A point at 17:00 UTC belongs to the next Shanghai day; buckets come back as the
    local midnight with its offset and as epoch ms."""
    get_backend().write([point("d1", ms("2026-12-01T15:00:00+00:00"), humidity=10),
                         point("d1", ms("2026-12-01T17:00:00+00:00"), humidity=20),
                         point("d1", ms("2026-12-02T15:59:59+00:00"), humidity=40)])
    params = {"interval": "1d", "agg": "avg", "start": "2026-12-01T00:00:00Z",
              "end": "2026-12-03T00:00:00Z"}
    body = get(api, "/api/v1/devices/d1/telemetry/", tz="Asia/Shanghai", **params).json()
    assert body["tz"] == "Asia/Shanghai"
    assert body["results"] == [
        {"ts": "2026-12-01T00:00:00+08:00", "ts_ms": ms("2026-11-30T16:00:00+00:00"),
         "value": 10.0},
        {"ts": "2026-12-02T00:00:00+08:00", "ts_ms": ms("2026-12-01T16:00:00+00:00"),
         "value": 30.0}]
    # Without tz: settings.TIME_ZONE (UTC in the tests), whose days are the UTC days.
    utc_days = get(api, "/api/v1/devices/d1/telemetry/", **params).json()
    assert [(r["ts"], r["value"]) for r in utc_days["results"]] == [
        ("2026-12-01T00:00:00+00:00", 15.0), ("2026-12-02T00:00:00+00:00", 40.0)]
    # Fixed intervals are unchanged: UTC ISO with Z, no ts_ms.
    hourly = get(api, "/api/v1/devices/d1/telemetry/", interval="1h", tz="Asia/Shanghai",
                 start="2026-12-01T15:00:00Z", end="2026-12-01T16:00:00Z").json()
    assert hourly["results"] == [{"ts": "2026-12-01T15:00:00Z", "value": 10.0}]
    assert "tz" not in hourly


def test_berlin_dst_day_counts_23_hours_of_points(api, devices):
    """One point per hour: the spring day holds 23, its neighbours 24; fill places an
    empty day; several devices each get their row."""
    start, end = ms("2026-03-28T00:00:00+01:00"), ms("2026-03-30T00:00:00+02:00")
    get_backend().write([point(d, t, humidity=1) for t in range(start, end, HOUR)
                         for d in ("d1", "d2")])
    body = get(api, "/api/v1/telemetry/", devices="d1,d2", interval="1d", agg="count",
               tz="Europe/Berlin", start="2026-03-27T00:00:00+01:00",
               end="2026-03-30T00:00:00+02:00", fill="null").json()
    assert [(r["ts"], r["device"], r["value"]) for r in body["results"]] == [
        ("2026-03-27T00:00:00+01:00", "d1", None), ("2026-03-27T00:00:00+01:00", "d2", None),
        ("2026-03-28T00:00:00+01:00", "d1", 24), ("2026-03-28T00:00:00+01:00", "d2", 24),
        ("2026-03-29T00:00:00+01:00", "d1", 23), ("2026-03-29T00:00:00+01:00", "d2", 23)]


def test_weeks_months_and_first_last(api, devices):
    get_backend().write([point("d1", ms("2026-11-29T23:00:00+08:00"), humidity=1),
                         point("d1", ms("2026-11-30T01:00:00+08:00"), humidity=2),
                         point("d1", ms("2026-12-06T23:00:00+08:00"), humidity=3)])
    params = {"tz": "Asia/Shanghai", "start": "2026-11-29T00:00:00+08:00",
              "end": "2026-12-07T00:00:00+08:00"}
    weeks = get(api, "/api/v1/devices/d1/telemetry/", interval="1w", agg="last",
                **params).json()
    assert [(r["ts"], r["value"]) for r in weeks["results"]] == [
        ("2026-11-23T00:00:00+08:00", 1), ("2026-11-30T00:00:00+08:00", 3)]
    months = get(api, "/api/v1/devices/d1/telemetry/", interval="1M", agg="first",
                 **params).json()
    assert [(r["ts"], r["value"]) for r in months["results"]] == [
        ("2026-11-01T00:00:00+08:00", 1), ("2026-12-01T00:00:00+08:00", 3)]
    sums = get(api, "/api/v1/devices/d1/telemetry/", interval="1M", agg="sum",
               **params).json()
    assert [r["value"] for r in sums["results"]] == [3, 3]


def test_a_bad_time_zone_is_refused_with_the_reason(api, devices):
    response = get(api, "/api/v1/devices/d1/telemetry/", interval="1d", tz="Mars/Olympus")
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_tz"
    assert "Mars/Olympus" in response.json()["detail"]
    too_many = get(api, "/api/v1/devices/d1/telemetry/", interval="1d",
                   start="2020-01-01T00:00:00Z", end="2026-01-01T00:00:00Z")
    assert too_many.status_code == 400 and too_many.json()["code"] == "invalid_interval"


def test_rollups_serve_the_days_of_a_zone_when_their_buckets_nest():
    """Hourly rollups nest in Shanghai's and Berlin's days; daily (UTC) ones only in UTC's;
    Kolkata's days (+05:30) need 15-minute ones."""
    start = ms("2026-03-27T00:00:00+00:00")
    query = SeriesQuery(product=None, service="env", devices=["d1"],  # type: ignore[arg-type]
                        properties=[], start=start, end=start + 4 * DAY,
                        rollups=[15 * 60_000, HOUR, DAY])
    for zone, expected in (("UTC", DAY), ("Asia/Shanghai", HOUR), ("Europe/Berlin", HOUR),
                           ("Asia/Kolkata", 15 * 60_000)):
        bounds = calendar_boundaries(query.start, query.end, "1d", ZoneInfo(zone))
        assert pick_rollup(query, 0, "avg", bounds) == expected, zone


def test_shanghai_days_from_hourly_rollups_equal_the_raw_ones(sensor):
    backend = get_backend()
    start = ms("2026-12-01T00:00:00+08:00")
    backend.write([point("d1", start + i * 600_000, humidity=i % 100) for i in range(3 * 144)])
    bounds = calendar_boundaries(start, start + 3 * DAY, "1d", SHANGHAI)
    raw = q(sensor, properties=["humidity"], start=start, end=start + 3 * DAY, limit=100)
    expected = {f: backend.aggregate(raw, 0, f, calendar=bounds)
                for f in ("avg", "min", "max", "sum", "count")}
    RetentionPolicy.objects.create(product=sensor, rollups=["1h"])
    assert actions.refresh_rollups(now_ms=start + 3 * DAY) > 0
    backend.expire(sensor, start + 4 * DAY)  # the answer can only come from the rollup now
    rolled = q(sensor, properties=["humidity"], start=start, end=start + 3 * DAY, limit=100,
               rollups=[HOUR])
    for function, rows in expected.items():
        got = backend.aggregate(rolled, 0, function, calendar=bounds)
        assert [r["ts"] for r in got] == [r["ts"] for r in rows] == bounds[:-1]
        assert [r["humidity"] for r in got] == pytest.approx([r["humidity"] for r in rows])


def test_tdengine_calendar_statements(sensor):
    """One UNION ALL per device of an aggregate per local day (with COUNT(*) to tell the
    empty ones, then filled like the SQL backend); fixed intervals keep INTERVAL."""
    recorder = Recorder(described=["ts", "received", "temperature", "humidity", "label", "ok"])
    backend = ws_backend(recorder)
    backend.ensure_schema(sensor)
    recorder.calls.clear()
    start, end = ms("2026-03-28T12:00:00+01:00"), ms("2026-03-30T00:00:00+02:00")
    bounds = calendar_boundaries(start, end, "1d", BERLIN)
    day1, day2 = bounds[0], bounds[1]
    recorder.answers = [[(day1, 3, 5.0), (day2, 0, None)]]
    query = SeriesQuery(product=sensor, service="env", devices=["d1"],
                        properties=["temperature"], start=start, end=end)
    rows = backend.aggregate(query, 0, "avg", Fill("null"), calendar=bounds)
    assert rows == [{"device": "d1", "ts": day1, "temperature": 5.0},
                    {"device": "d1", "ts": day2, "temperature": None}]
    tag = "`device_identification` = 'd1'"
    assert [c[1] for c in recorder.calls] == [
        f"SELECT {day1}, COUNT(*), AVG(`temperature`) FROM {STABLE} WHERE {tag} AND "  # noqa: S608
        f"ts >= {start} AND ts < {day2} UNION ALL "
        f"SELECT {day2}, COUNT(*), AVG(`temperature`) FROM {STABLE} WHERE {tag} AND "
        f"ts >= {day2} AND ts < {end}"]
    assert day2 - day1 == 24 * HOUR and bounds[2] - day2 == 23 * HOUR
