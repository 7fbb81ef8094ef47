# ruff: noqa: S608 - the expected statements of the recording tests are SQL text on purpose
"""The TDengine backend's statements, checked without a server: the exact SQL and bound
parameters it sends through a recording stand-in for the driver connection (there is no
TDengine here to send them to), and the literal escaping of the text-only drivers against a
port of TDengine's own tokenizer loop."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.telemetry.backend_suite import point
from tests.telemetry.conftest import BASE
from webapp.core.errors import DomainError
from webapp.telemetry.backends import Fill, SeriesQuery
from webapp.telemetry.backends.tdengine import (
    TDengineBackend,
    TextConnection,
    WsConnection,
    literal,
    quote_text,
    stable_name,
    subtable_name,
)

# --- TDengine's tokenizer, ported (source/libs/parser/src/parTokenizer.c, tGetToken) -----------


def token_length(sql: str) -> int | None:
    """Length of the quoted-string token at the start of `sql`, or None when unterminated:
    the loop of tGetToken's `case '\\''` (a backslash skips the next character, a doubled
    quote is part of the string, a NUL ends the SQL)."""
    delim = sql[0]
    i = 1
    while i < len(sql) and sql[i] != "\x00":
        if sql[i] == "\\":
            i += 2
            continue
        if sql[i] == delim:
            if i + 1 < len(sql) and sql[i + 1] == delim:
                i += 2
                continue
            return i + 1
        i += 1
    return None


def string_value(token: str) -> str:
    """The value TDengine takes from a quoted token (its escape table)."""
    escapes = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", "'": "'", '"': '"'}
    body, out, i = token[1:-1], [], 0
    while i < len(body):
        if body[i] == "\\" and i + 1 < len(body):
            out.append(escapes.get(body[i + 1], body[i + 1]))
            i += 2
        elif body[i] == "'" and body[i + 1:i + 2] == "'":
            out.append("'")
            i += 2
        else:
            out.append(body[i])
            i += 1
    return "".join(out)


TEXT = st.text(alphabet=st.characters(blacklist_characters="\x00"), max_size=60)


@given(TEXT, st.sampled_from(["", " , 1)", ") ; DROP DATABASE x; -- '", ", 'x')", ")"]))
def test_a_quoted_text_is_exactly_one_string_token(text, after):
    """Whatever the text, its literal is one token, the SQL after it stays outside, and
    TDengine reads back exactly the text. (The backend always follows a literal with a
    separator: a quote right after it would read as a doubled quote.)"""
    quoted = quote_text(text)
    assert token_length(quoted + after) == len(quoted)
    assert string_value(quoted) == text


@pytest.mark.parametrize("text", ["'", "\\", "\\'", "''", "a\\", "x'); DROP TABLE t; --",
                                  "\\\\'", "é'ü\\😀", "line\nbreak"])
def test_known_injection_shapes_stay_data(text):
    """The classic shapes (trailing backslash, doubled quotes, statement breaks) stay data."""
    quoted = quote_text(text)
    assert token_length(quoted + " rest") == len(quoted)
    assert string_value(quoted) == text


def test_literals_are_rendered_by_type():
    """Numbers render from Python numbers only; bools, NULL; NUL bytes and NaN refused."""
    assert literal(None, "int") == "NULL"
    assert literal(42, "int") == "42" and literal(-7.0, "bigint") == "-7"
    assert literal(2.5, "decimal") == "2.5" and literal(3, "decimal") == "3.0"
    assert literal(True, "bool") == "true"
    assert literal({"a": "b'c"}, "json") == "'{\"a\":\"b\\'c\"}'"
    for bad, datatype in [("1; DROP", "int"), (True, "int"), (1.5, "int"), ("1", "decimal"),
                          (float("nan"), "decimal"), (float("inf"), "decimal"), (1, "bool"),
                          ("a\x00b", "string")]:
        with pytest.raises(DomainError):
            literal(bad, datatype)


def test_names_follow_thinglinks_and_stay_identifiers():
    """`{productType}_{productIdentifier}_{serviceCode}`; unsafe characters cannot pass."""
    assert stable_name("common", "thermo", "env") == "common_thermo_env"
    odd = stable_name("common", "thermo-1.v2", "env")
    assert odd.startswith("common_thermo_1_v2_env_") and odd != stable_name(
        "common", "thermo_1_v2", "env")
    assert subtable_name("common_thermo_env", "dev-001") .startswith("common_thermo_env_dev_001_")
    assert subtable_name("common_thermo_env", "dev_001") == "common_thermo_env_dev_001"
    sneaky = subtable_name("common_thermo_env", "a`; DROP DATABASE x; --")
    assert sneaky.replace("_", "").isalnum()
    with pytest.raises(DomainError):
        stable_name("common", "thermo", "env`x")


# --- a recording stand-in for the driver connections --------------------------------------


class Recorder:
    """Records every call; answers DESCRIBE with the columns it was told exist."""

    def __init__(self, described=()):
        self.calls: list[tuple] = []
        self.described = list(described)
        self.answers: list[list[tuple]] = []

    # taosws.Connection
    def execute(self, sql):
        self.calls.append(("execute", sql))
        return 0

    def query(self, sql):
        self.calls.append(("query", sql))
        if sql.startswith("DESCRIBE"):
            return [(c,) for c in self.described]
        return self.answers.pop(0) if self.answers else []

    def statement(self):
        return RecordingStatement(self.calls)

    # DB-API (taosrest / taos)
    def cursor(self):
        return RecordingCursor(self)


class RecordingStatement:
    def __init__(self, calls):
        self.calls = calls
        self.rows = 0

    def prepare(self, sql):
        self.calls.append(("prepare", sql))

    def set_tbname_tags(self, name, tags):
        self.calls.append(("set_tbname_tags", name, tags))

    def bind_param(self, columns):
        self.calls.append(("bind_param", columns))
        self.rows = len(columns[0][1])

    def add_batch(self):
        self.calls.append(("add_batch",))

    def execute(self):
        self.calls.append(("stmt_execute",))

    def affect_rows(self):
        return self.rows

    def close(self):
        self.calls.append(("stmt_close",))


class RecordingCursor:
    def __init__(self, recorder):
        self.recorder = recorder
        self.rows: list[tuple] = []

    def execute(self, sql):
        self.rows = self.recorder.query(sql) if sql.startswith(("SELECT", "DESCRIBE")) else []
        if not sql.startswith(("SELECT", "DESCRIBE")):
            self.recorder.execute(sql)

    def fetchall(self):
        return self.rows

    def close(self):
        pass


class Driver:
    """taosws's column/tag constructors, recorded as (kind, values)."""

    def __getattr__(self, name):
        if name.endswith(("_to_column", "_to_tag")):
            return lambda values: (name, values)
        raise AttributeError(name)


def ws_backend(recorder):
    return TDengineBackend("taosws://root:taosdata@td:6041/tl",
                           opener=lambda: (WsConnection(recorder, Driver()), "tl"))


def rest_backend(recorder):
    return TDengineBackend("taosrest://root:taosdata@td:6041/tl",
                           opener=lambda: (TextConnection(recorder), "tl"))


STABLE = "`tl`.`common_sensor_env`"


def test_schema_statements(sensor):
    """Database, one super table per service with typed columns and the device tag, and
    ALTER STABLE for a column the server lacks."""
    recorder = Recorder(described=["ts", "received", "temperature", "humidity", "label"])
    ws_backend(recorder).ensure_schema(sensor)
    sql = [c[1] for c in recorder.calls]
    assert sql[:2] == ["CREATE DATABASE IF NOT EXISTS `tl` PRECISION 'ms'", "USE `tl`"]
    assert sql[2] == (f"CREATE STABLE IF NOT EXISTS {STABLE} (ts TIMESTAMP, received BIGINT, "
                      "`temperature` DOUBLE, `humidity` INT, `label` NCHAR(1024), `ok` BOOL) "
                      "TAGS (`device_identification` NCHAR(64))")
    assert sql[3] == f"DESCRIBE {STABLE}"
    assert sql[4] == f"ALTER STABLE {STABLE} ADD COLUMN `ok` BOOL"
    assert "CREATE STABLE IF NOT EXISTS `tl`.`common_sensor_power`" in sql[5]


def test_taosws_writes_bind_every_value(sensor):
    """Inserts are prepared statements: sub-table, tag and values bound, none in the SQL."""
    recorder = Recorder(described=["ts", "received", "temperature", "humidity", "label", "ok"])
    backend = ws_backend(recorder)
    nasty = "x'); DROP DATABASE tl; --"
    assert backend.write([point("dev-1", BASE, humidity=1, label=nasty),
                          point("dev-1", BASE + 1, humidity=2, label="ok")]) == 2
    calls = [c for c in recorder.calls if c[0] in ("prepare", "set_tbname_tags", "bind_param",
                                                   "add_batch", "stmt_execute")]
    assert calls == [
        ("prepare", f"INSERT INTO ? USING {STABLE} TAGS (?) (`ts`, `received`, `humidity`, "
                    "`label`) VALUES (?, ?, ?, ?)"),
        ("set_tbname_tags", subtable_name("common_sensor_env", "dev-1"),
         [("nchar_to_tag", "dev-1")]),
        ("bind_param", [("millis_timestamps_to_column", [BASE, BASE + 1]),
                        ("big_ints_to_column", [BASE + 5, BASE + 6]),
                        ("ints_to_column", [1, 2]),
                        ("nchar_to_column", [nasty, "ok"])]),
        ("add_batch",),
        ("stmt_execute",),
    ]
    assert not any(nasty in str(c[1]) for c in recorder.calls if c[0] in ("execute", "query"))


def test_points_with_other_properties_go_in_their_own_statement(sensor):
    """A point writes only the properties it carries (the others keep their values)."""
    recorder = Recorder(described=["ts", "received", "temperature", "humidity", "label", "ok"])
    ws_backend(recorder).write([point("d", BASE, temperature=1.5),
                                point("d", BASE + 1, humidity=3)])
    prepared = [c[1] for c in recorder.calls if c[0] == "prepare"]
    assert [p.split("(`ts`, `received`, ")[1].split(")")[0] for p in prepared] == [
        "`temperature`", "`humidity`"]


def test_rest_writes_render_values_as_safe_literals(sensor):
    """The REST client takes SQL text: every value is a typed literal, text escaped."""
    recorder = Recorder(described=["ts", "received", "temperature", "humidity", "label", "ok"])
    backend = rest_backend(recorder)
    nasty = "it's \\' ); DROP DATABASE tl; --"
    backend.write([point("dev-1", BASE, temperature=2.5, label=nasty, ok=True)])
    insert = next(c[1] for c in recorder.calls if c[1].startswith("INSERT"))
    sub = subtable_name("common_sensor_env", "dev-1")
    head = (f"INSERT INTO `tl`.`{sub}` USING {STABLE} TAGS ('dev-1') "
            "(`ts`, `received`, `label`, `ok`, `temperature`) VALUES (")
    assert insert.startswith(head)
    values = insert[len(head):]
    assert values.startswith(f"{BASE}, {BASE + 5}, '")
    text_at = values.index("'")
    length = token_length(values[text_at:])
    assert string_value(values[text_at:text_at + length]) == nasty
    assert values[text_at + length:] == ", true, 2.5)"


def test_query_statements(sensor):
    """Raw ranges per device with the cursor, aggregates with INTERVAL and FILL, latest."""
    recorder = Recorder(described=["ts", "received", "temperature", "humidity", "label", "ok"])
    backend = ws_backend(recorder)
    backend.ensure_schema(sensor)
    recorder.calls.clear()
    recorder.answers = [[(BASE + 2, 7)], [(BASE + 1, 5)]]
    query = SeriesQuery(product=sensor, service="env", devices=["d1", "d'2"],
                        properties=["humidity"], start=BASE, end=BASE + 60_000, limit=10,
                        after=BASE)
    rows = backend.query(query)
    assert rows == [{"device": "d'2", "ts": BASE + 1, "humidity": 5},
                    {"device": "d1", "ts": BASE + 2, "humidity": 7}]
    assert [c[1] for c in recorder.calls] == [
        f"SELECT CAST(ts AS BIGINT), `humidity` FROM {STABLE} WHERE `device_identification` = "
        f"'d1' AND ts >= {BASE} AND ts < {BASE + 60_000} AND ts > {BASE} ORDER BY ts ASC "
        f"LIMIT 10",
        f"SELECT CAST(ts AS BIGINT), `humidity` FROM {STABLE} WHERE `device_identification` = "
        f"'d\\'2' AND ts >= {BASE} AND ts < {BASE + 60_000} AND ts > {BASE} ORDER BY ts ASC "
        f"LIMIT 10"]
    recorder.calls.clear()
    single = SeriesQuery(product=sensor, service="env", devices=["d1"],
                         properties=["humidity", "temperature"], start=BASE, end=BASE + 60_000)
    backend.aggregate(single, 60_000, "avg", Fill("value", -1.0))
    backend.aggregate(single, 60_000, "last", Fill("previous"))
    backend.latest(SeriesQuery(product=sensor, service="env", devices=["d1"],
                               properties=["humidity"], start=0, end=BASE))
    where = f"`device_identification` = 'd1' AND ts >= {BASE} AND ts < {BASE + 60_000}"
    assert [c[1] for c in recorder.calls] == [
        f"SELECT CAST(_wstart AS BIGINT), AVG(`humidity`), AVG(`temperature`) FROM {STABLE} "
        f"WHERE {where} INTERVAL(60000a) FILL(VALUE, -1.0, -1.0)",
        f"SELECT CAST(_wstart AS BIGINT), LAST(`humidity`), LAST(`temperature`) FROM {STABLE} "
        f"WHERE {where} INTERVAL(60000a) FILL(PREV)",
        f"SELECT CAST(LAST(ts) AS BIGINT), LAST(`humidity`) FROM {STABLE} WHERE "
        f"`device_identification` = 'd1' AND ts >= 0 AND ts < {BASE} AND `humidity` IS NOT NULL",
    ]


def test_retention_deletes_old_rows(sensor):
    """Per-product raw retention is a DELETE on each super table."""
    recorder = Recorder(described=["ts", "received", "temperature", "humidity", "label", "ok"])
    ws_backend(recorder).expire(sensor, BASE)
    deletes = [c[1] for c in recorder.calls if c[1].startswith("DELETE")]
    assert deletes == [f"DELETE FROM {STABLE} WHERE ts < {BASE}",
                       f"DELETE FROM `tl`.`common_sensor_power` WHERE ts < {BASE}"]


def test_a_failed_call_reconnects(sensor):
    """A driver error drops the connection; the next call opens a new one."""
    opened = []

    class Broken(Recorder):
        def query(self, sql):
            if sql.startswith("SELECT"):
                raise ConnectionError("server gone")
            return super().query(sql)

    def opener():
        opened.append(1)
        return WsConnection(Broken(described=["ts"]), Driver()), "tl"

    backend = TDengineBackend("taosws://x/tl", opener=opener)
    with pytest.raises(ConnectionError):
        backend.query(SeriesQuery(product=sensor, service="env", devices=["d1"],
                                  properties=[], start=0, end=1))
    backend.forget_all()
    backend.ensure_schema(sensor)
    assert len(opened) == 2


def test_the_native_driver_needs_the_client_library():
    """`taos://` without TDengine's client library is a configuration error that says so."""
    from django.core.exceptions import ImproperlyConfigured

    from webapp.telemetry.backends.tdengine import connect

    try:
        import taos  # noqa: F401
    except Exception:  # the case under test: no libtaos here
        pass
    else:
        pytest.skip("TDengine's client library is installed on this machine")
    with pytest.raises(ImproperlyConfigured, match="client library"):
        connect("taos://root:taosdata@127.0.0.1:6030/tl")
