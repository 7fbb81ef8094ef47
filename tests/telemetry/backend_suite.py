"""The behaviour every time-series backend shares (SQLite, PostgreSQL, TDengine).

A backend's test module subclasses `BackendBehaviour` and provides a `backend` fixture; the
`sensor` product comes from tests/telemetry/conftest.py.
"""

from __future__ import annotations

import pytest

from tests.telemetry.conftest import BASE
from webapp.core.errors import DomainError
from webapp.telemetry.backends import Fill, Point, SeriesQuery

MIN = 60_000


def point(device, ts, **values):
    return Point(product="sensor", service="env", device=device, ts=ts, received=ts + 5,
                 values=values)


def q(product, devices=("d1",), properties=(), start=BASE, end=BASE + 3_600_000, **kw):
    return SeriesQuery(product=product, service="env", devices=list(devices),
                       properties=list(properties), start=start, end=end, **kw)


class BackendBehaviour:
    """Subclasses provide the `backend` fixture."""

    def test_points_round_trip_with_their_types(self, backend, sensor):
        """Decimal, int, string and bool values come back as written, ordered by time."""
        assert backend.write([point("d1", BASE + 1000, temperature=21.5, humidity=40,
                                    label="a", ok=True),
                              point("d1", BASE, temperature=-3.25, ok=False)]) == 2
        rows = backend.query(q(sensor))
        assert rows == [
            {"device": "d1", "ts": BASE, "temperature": -3.25, "humidity": None,
             "label": None, "ok": False},
            {"device": "d1", "ts": BASE + 1000, "temperature": 21.5, "humidity": 40,
             "label": "a", "ok": True},
        ]

    def test_rewrites_are_idempotent_and_merge_properties(self, backend, sensor):
        """A replayed point is stored once; a rewrite with other properties merges them."""
        backend.write([point("d1", BASE, temperature=20.0)])
        backend.write([point("d1", BASE, temperature=20.0)])
        backend.write([point("d1", BASE, humidity=55), point("d1", BASE, label="x")])
        rows = backend.query(q(sensor, properties=["temperature", "humidity", "label"]))
        assert rows == [{"device": "d1", "ts": BASE, "temperature": 20.0, "humidity": 55,
                         "label": "x"}]
        backend.write([point("d1", BASE, temperature=22.0)])
        assert backend.query(q(sensor, properties=["temperature"]))[0]["temperature"] == 22.0

    def test_text_values_are_stored_verbatim(self, backend, sensor):
        """Quotes, backslashes and SQL in string values are data, never statements."""
        nasty = ["it's", "a\\'b", "\\", "'); DROP TABLE x; --", 'dq"q', "line\nbreak", "ü€😀"]
        backend.write([point("d1", BASE + i, label=text) for i, text in enumerate(nasty)])
        assert [r["label"] for r in backend.query(q(sensor, properties=["label"]))] == nasty

    def test_a_new_property_extends_the_schema(self, backend, sensor, admin_user,
                                               sensor_payload):
        """After the model gains a property, points carrying it are stored and queried."""
        from webapp.products import actions

        backend.write([point("d1", BASE, temperature=1.0)])
        sensor_payload["services"][0]["properties"].append(
            {"code": "pressure", "datatype": "int"})
        actions.update_product(product=sensor,
                               data={"services": sensor_payload["services"]})
        backend.write([point("d1", BASE + 1000, temperature=2.0, pressure=1013)])
        rows = backend.query(q(sensor, properties=["temperature", "pressure"]))
        assert [(r["temperature"], r["pressure"]) for r in rows] == [(1.0, None), (2.0, 1013)]

    def test_unknown_service_or_property_is_refused(self, backend, sensor):
        """Asking for what the model lacks is a domain error with a stable code."""
        with pytest.raises(DomainError) as err:
            backend.query(q(sensor, properties=["nope"]))
        assert err.value.code == "unknown_property"
        with pytest.raises(DomainError) as err:
            backend.query(SeriesQuery(product=sensor, service="nope", devices=["d1"],
                                      properties=[], start=BASE, end=BASE + 1))
        assert err.value.code == "unknown_service"

    def test_range_and_cursor_pagination(self, backend, sensor):
        """Pages of `limit` rows follow each other with the cursor, both directions."""
        backend.write([point("d1", BASE + i * 1000, humidity=i) for i in range(25)])
        pages, after = [], None
        while True:
            rows = backend.query(q(sensor, properties=["humidity"], limit=10, after=after))
            pages.append([r["humidity"] for r in rows])
            if len(rows) < 10:
                break
            after = rows[-1]["ts"]
        assert pages == [list(range(10)), list(range(10, 20)), list(range(20, 25))]
        first = backend.query(q(sensor, properties=["humidity"], limit=3, descending=True))
        assert [r["humidity"] for r in first] == [24, 23, 22]
        second = backend.query(q(sensor, properties=["humidity"], limit=3, descending=True,
                                 after=first[-1]["ts"]))
        assert [r["humidity"] for r in second] == [21, 20, 19]
        inside = backend.query(q(sensor, properties=["humidity"], start=BASE + 5000,
                                 end=BASE + 8000))
        assert [r["humidity"] for r in inside] == [5, 6, 7]

    def test_one_or_several_properties(self, backend, sensor):
        """A query returns exactly the properties asked for, all of them when none is."""
        backend.write([point("d1", BASE, temperature=1.5, humidity=10, label="z", ok=True)])
        assert backend.query(q(sensor, properties=["humidity"])) == [
            {"device": "d1", "ts": BASE, "humidity": 10}]
        assert backend.query(q(sensor, properties=["ok", "temperature"])) == [
            {"device": "d1", "ts": BASE, "ok": True, "temperature": 1.5}]
        assert set(backend.query(q(sensor))[0]) == {"device", "ts", "temperature", "humidity",
                                                    "label", "ok"}

    def test_several_devices(self, backend, sensor):
        """Rows of several devices come interleaved by time, then device."""
        backend.write([point("d1", BASE, humidity=1), point("d2", BASE, humidity=2),
                       point("d2", BASE + 1000, humidity=3), point("d3", BASE, humidity=9)])
        rows = backend.query(q(sensor, devices=["d1", "d2"], properties=["humidity"]))
        assert [(r["device"], r["ts"] - BASE, r["humidity"]) for r in rows] == [
            ("d1", 0, 1), ("d2", 0, 2), ("d2", 1000, 3)]

    def _aggregate_data(self, backend):
        # Minute 0: 10, 20, 30; minute 1: nothing; minute 2: 50 then 40; minute 3: a point
        # without temperature. Device d2 only in minute 1.
        backend.write([
            point("d1", BASE + 1000, temperature=10.0, humidity=1),
            point("d1", BASE + 2000, temperature=20.0),
            point("d1", BASE + 3000, temperature=30.0, humidity=3),
            point("d1", BASE + 2 * MIN, temperature=50.0, humidity=5),
            point("d1", BASE + 2 * MIN + 5000, temperature=40.0),
            point("d1", BASE + 3 * MIN, humidity=7),
            point("d2", BASE + MIN + 10, temperature=99.0),
        ])

    @pytest.mark.parametrize(("function", "expected"), [
        ("avg", [20.0, 45.0, None]),
        ("min", [10.0, 40.0, None]),
        ("max", [30.0, 50.0, None]),
        ("sum", [60.0, 90.0, None]),
        ("count", [3, 2, 0]),
        ("first", [10.0, 50.0, None]),
        ("last", [30.0, 40.0, None]),
    ])
    def test_aggregates_by_interval(self, backend, sensor, function, expected):
        """Each aggregate per 1-minute bucket; empty buckets are left out."""
        self._aggregate_data(backend)
        rows = backend.aggregate(q(sensor, properties=["temperature"], end=BASE + 4 * MIN),
                                 MIN, function)
        assert [(r["ts"] - BASE) // MIN for r in rows] == [0, 2, 3]
        assert [r["temperature"] for r in rows] == pytest.approx(expected)

    def test_first_and_last_skip_nulls_per_property(self, backend, sensor):
        """first/last pick each property's first/last non-null value in the bucket."""
        self._aggregate_data(backend)
        first = backend.aggregate(q(sensor, properties=["temperature", "humidity"],
                                    end=BASE + MIN), MIN, "first")
        last = backend.aggregate(q(sensor, properties=["temperature", "humidity"],
                                   end=BASE + MIN), MIN, "last")
        assert (first[0]["temperature"], first[0]["humidity"]) == (10.0, 1)
        assert (last[0]["temperature"], last[0]["humidity"]) == (30.0, 3)

    def test_aggregates_of_several_properties_and_devices(self, backend, sensor):
        """Buckets of several devices and properties, ordered by bucket then device."""
        self._aggregate_data(backend)
        rows = backend.aggregate(q(sensor, devices=["d1", "d2"],
                                   properties=["temperature", "humidity"], end=BASE + 4 * MIN),
                                 MIN, "max")
        assert [(r["device"], (r["ts"] - BASE) // MIN, r["temperature"], r["humidity"])
                for r in rows] == [("d1", 0, 30.0, 3), ("d2", 1, 99.0, None),
                                   ("d1", 2, 50.0, 5), ("d1", 3, None, 7)]
        hourly = backend.aggregate(q(sensor, properties=["humidity"]), 3_600_000, "sum")
        assert [(r["ts"], r["humidity"]) for r in hourly] == [(BASE, 16)]

    @pytest.mark.parametrize(("fill", "expected"), [
        (Fill("none"), [(1, 99.0)]),
        (Fill("null"), [(0, None), (1, 99.0), (2, None), (3, None)]),
        (Fill("previous"), [(0, None), (1, 99.0), (2, 99.0), (3, 99.0)]),
        (Fill("value", -1.0), [(0, -1.0), (1, 99.0), (2, -1.0), (3, -1.0)]),
    ])
    def test_empty_intervals_filled_on_request(self, backend, sensor, fill, expected):
        """fill=null|previous|value places every interval of the range; none omits them."""
        self._aggregate_data(backend)
        rows = backend.aggregate(q(sensor, devices=["d2"], properties=["temperature"],
                                   end=BASE + 4 * MIN), MIN, "avg", fill)
        assert [((r["ts"] - BASE) // MIN, r["temperature"]) for r in rows] == expected

    def test_aggregates_refuse_what_does_not_apply(self, backend, sensor):
        """avg of a string is refused; unknown aggregates are refused."""
        with pytest.raises(DomainError):
            backend.aggregate(q(sensor, properties=["label"]), MIN, "avg")
        with pytest.raises(DomainError):
            backend.aggregate(q(sensor, properties=["humidity"]), MIN, "median")
        backend.write([point("d1", BASE, label="a"), point("d1", BASE + 1, label="b")])
        rows = backend.aggregate(q(sensor, properties=["label"]), MIN, "count")
        assert [r["label"] for r in rows] == [2]

    def test_latest_values(self, backend, sensor):
        """The last non-null value of each property per device, with its time."""
        self._aggregate_data(backend)
        latest = backend.latest(q(sensor, devices=["d1", "d2", "d9"],
                                  properties=["temperature", "humidity"], end=BASE + 10 * MIN))
        assert latest == {
            "d1": {"temperature": {"value": 40.0, "ts": BASE + 2 * MIN + 5000},
                   "humidity": {"value": 7, "ts": BASE + 3 * MIN}},
            "d2": {"temperature": {"value": 99.0, "ts": BASE + MIN + 10}},
            "d9": {},
        }

    def test_services_are_stored_apart(self, backend, sensor):
        """Two services of one product do not see each other's points."""
        backend.write([point("d1", BASE, humidity=1),
                       Point("sensor", "power", "d1", BASE, BASE, {"watts": 7.5})])
        power = backend.query(SeriesQuery(product=sensor, service="power", devices=["d1"],
                                          properties=[], start=BASE, end=BASE + 1))
        assert power == [{"device": "d1", "ts": BASE, "watts": 7.5}]
        assert [r["humidity"] for r in backend.query(q(sensor, properties=["humidity"]))] == [1]
