"""Telemetry through the REST API: one device, several devices with cursor pagination, fill,
latest values, CSV export, the message log by time range, retention policies."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from tests.telemetry.backend_suite import MIN, point
from tests.telemetry.conftest import BASE
from webapp.telemetry.backends import get_backend


def at(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat().replace("+00:00", "Z")


@pytest.fixture
def devices(sensor, admin_user):
    from webapp.devices import actions

    for identifier in ("d1", "d2", "d3"):
        actions.create_device(acting_user=admin_user, product=sensor, identifier=identifier)
    return sensor


RANGE = {"start": at(BASE), "end": at(BASE + 10 * MIN)}


def test_device_telemetry_fills_empty_intervals_on_request(api, devices):
    """`fill=null|previous|value` on the device endpoint places every interval."""
    get_backend().write([point("d1", BASE + 1000, temperature=10.0),
                         point("d1", BASE + 2 * MIN, temperature=30.0)])
    params = {"service": "env", "property": "temperature", "interval": "1m", "agg": "avg",
              "start": at(BASE), "end": at(BASE + 4 * MIN)}
    plain = api.get("/api/v1/devices/d1/telemetry/", params).json()
    assert [r["value"] for r in plain["results"]] == [10.0, 30.0]
    filled = api.get("/api/v1/devices/d1/telemetry/", {**params, "fill": "previous"}).json()
    assert [r["value"] for r in filled["results"]] == [10.0, 10.0, 30.0, 30.0]
    valued = api.get("/api/v1/devices/d1/telemetry/",
                     {**params, "fill": "value", "fill_value": "0"}).json()
    assert [r["value"] for r in valued["results"]] == [10.0, 0.0, 30.0, 0.0]
    assert api.get("/api/v1/devices/d1/telemetry/", {**params, "fill": "value"}).json()[
        "code"] == "invalid_fill"


def test_a_day_of_minute_averages_is_returned_whole(api, devices):
    """An aggregate returns every interval of the range, beyond the raw page size."""
    get_backend().write([point("d1", BASE + i * MIN, humidity=i % 100) for i in range(1440)])
    body = api.get("/api/v1/devices/d1/telemetry/", {
        "service": "env", "property": "humidity", "interval": "1m", "agg": "avg",
        "start": at(BASE), "end": at(BASE + 1440 * MIN)}).json()
    assert len(body["results"]) == 1440 and body["results"][-1]["value"] == 1439 % 100


def test_several_devices_page_by_cursor_without_splitting_an_instant(api, devices):
    """`devices=a,b`: rows of both devices by time; a page never ends inside an instant."""
    get_backend().write([point(d, BASE + i * 1000, humidity=i) for i in range(5)
                         for d in ("d1", "d2")])
    seen, cursor = [], None
    while True:
        params = {"devices": "d1,d2", "service": "env", "property": "humidity", "limit": 3,
                  **RANGE}
        if cursor is not None:
            params["cursor"] = cursor
        body = api.get("/api/v1/telemetry/", params).json()
        assert len(body["results"]) in (2, 1, 0) or body["next"] is None
        seen += [(r["device"], r["value"]) for r in body["results"]]
        cursor = body["next"]
        if cursor is None:
            break
    assert seen == [(d, i) for i in range(5) for d in ("d1", "d2")]


def test_several_devices_aggregate_by_the_database(api, devices):
    """An aggregate over several devices gives one row per device and interval."""
    get_backend().write([point("d1", BASE, humidity=10), point("d1", BASE + 1, humidity=20),
                         point("d2", BASE + 5, humidity=40)])
    body = api.get("/api/v1/telemetry/", {"devices": "d1,d2", "service": "env",
                                          "property": "humidity", "interval": "1h",
                                          "agg": "max", **RANGE}).json()
    assert [(r["device"], r["value"]) for r in body["results"]] == [("d1", 20), ("d2", 40)]


def test_unknown_or_foreign_devices_are_not_found(api, devices):
    """A device that does not exist is a 404, not an empty series."""
    response = api.get("/api/v1/telemetry/", {"devices": "d1,nope", "service": "env"})
    assert response.status_code == 404


def test_reading_telemetry_needs_the_permission_to_view_devices(devices, django_user_model):
    """A user without `view_device` is refused."""
    from rest_framework.test import APIClient

    django_user_model.objects.create_user("plain", password="pw-Plain-123!x")
    client = APIClient()
    client.force_authenticate(django_user_model.objects.get(username="plain"))
    for path in ("/api/v1/telemetry/", "/api/v1/telemetry/latest/",
                 "/api/v1/telemetry/export/"):
        assert client.get(path, {"devices": "d1", "service": "env"}).status_code == 403


def test_latest_values_from_redis_then_the_time_series(api, devices, redis_client,
                                                       redis_prefix):
    """Latest values come from Redis when ingest put them there, else from the database."""
    redis_client.hset(f"{redis_prefix}latest:d1", "env", json.dumps(
        {"temperature": {"value": 21.5, "ts": BASE}}))
    get_backend().write([point("d2", BASE + 7, humidity=33)])
    body = api.get("/api/v1/telemetry/latest/", {"devices": "d1,d2", "service": "env"}).json()
    assert body["results"] == {
        "d1": {"env": {"temperature": {"value": 21.5, "ts": at(BASE)}}},
        "d2": {"env": {"humidity": {"value": 33, "ts": at(BASE + 7)}}},
    }


def test_csv_export_streams_a_range(api, devices):
    """The export is a streamed CSV of every point of the range, device by device."""
    from webapp.telemetry import queries

    get_backend().write([point("d1", BASE + i, humidity=i, label="=cmd()" if i == 0 else "x")
                         for i in range(7)] + [point("d2", BASE, humidity=99)])
    original = queries.EXPORT_PAGE
    queries.EXPORT_PAGE = 3  # several pages
    try:
        response = api.get("/api/v1/telemetry/export/", {
            "devices": "d1,d2", "service": "env", "property": "humidity,label", **RANGE})
        assert response.status_code == 200 and response["Content-Type"] == "text/csv"
        assert response.streaming
        lines = b"".join(response.streaming_content).decode().splitlines()
    finally:
        queries.EXPORT_PAGE = original
    assert lines[0] == "device,ts,humidity,label"
    assert lines[1] == f"d1,{at(BASE)},0,'=cmd()"  # no formula for the spreadsheet
    assert [line.split(",")[2] for line in lines[1:]] == [str(i) for i in range(7)] + ["99"]


def test_message_log_by_device_and_time_range(api, devices):
    """The device's message log filters by time range and result, newest first."""
    from webapp.telemetry.models import DeviceMessage

    for i, ok in enumerate([True, False, True]):
        DeviceMessage.objects.create(
            device_identifier="d1", ts=datetime.fromtimestamp((BASE + i * MIN) / 1000, tz=UTC),
            direction="up", topic="/v1/devices/d1/datas", payload=str(i),
            result="accepted" if ok else "rejected", reason="" if ok else "bad")
    DeviceMessage.objects.create(device_identifier="d2", ts=datetime.now(tz=UTC),
                                 direction="up", topic="t", result="accepted")
    body = api.get("/api/v1/devices/d1/messages/", {"start": at(BASE + MIN),
                                                    "end": at(BASE + 3 * MIN)}).json()
    assert [m["payload"] for m in body["results"]] == ["2", "1"]
    rejected = api.get("/api/v1/devices/d1/messages/", {"result": "rejected"}).json()
    assert [m["reason"] for m in rejected["results"]] == ["bad"]


def test_retention_policies_through_the_api(api, devices):
    """Create, read and change a product's retention policy; bad rollups are refused."""
    created = api.post("/api/v1/retention-policies/", {
        "product": "sensor", "raw_days": 7, "rollups": ["5m", "1h"], "rollup_days": 365},
        format="json")
    assert created.status_code == 201, created.json()
    assert created.json()["rollups"] == ["5m", "1h"]
    policy_id = created.json()["id"]
    changed = api.patch(f"/api/v1/retention-policies/{policy_id}/", {"raw_days": 30},
                        format="json")
    assert changed.status_code == 200 and changed.json()["raw_days"] == 30
    assert api.get("/api/v1/retention-policies/", {"product": "sensor"}).json()["count"] == 1
    bad = api.patch(f"/api/v1/retention-policies/{policy_id}/", {"rollups": ["7m"]},
                    format="json")
    assert bad.status_code == 400
