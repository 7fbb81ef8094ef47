"""Writing the device message log on the ingest path.

Every uplink publish and downlink message is logged, so the log grows as fast as the data.
Django's `bulk_create` spends most of its time building model instances and adapting values;
here the rows stay tuples: `COPY` into a session temp table and one
`INSERT … ON CONFLICT (source) DO NOTHING` on PostgreSQL, `INSERT OR IGNORE` on SQLite. The
`source` key (stream entry id / position) makes a replayed entry add no second row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from django.db import connection, transaction

from webapp.telemetry.models import DeviceMessage

COLUMNS = ("device_identifier", "ts", "direction", "topic", "payload", "result", "reason",
           "source")


@dataclass(slots=True)
class LoggedMessage:
    """A message-log row as ingest read it (the attributes of `DeviceMessage`)."""

    device_identifier: str
    ts: datetime
    direction: str
    topic: str
    payload: str
    result: str
    reason: str
    source: str | None

    def row(self) -> tuple:
        return (self.device_identifier, self.ts, self.direction, self.topic, self.payload,
                self.result, self.reason, self.source)


def store(messages: Sequence[LoggedMessage]) -> None:
    if not messages:
        return
    qn = connection.ops.quote_name
    table = qn(DeviceMessage._meta.db_table)
    names = ", ".join(qn(c) for c in COLUMNS)
    rows = [m.row() for m in messages]
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            stage = qn("tl_stage_devicemessage")
            # The log's columns without its constraints (no id to fill in).
            cursor.execute(f"CREATE TEMP TABLE IF NOT EXISTS {stage} ON COMMIT DELETE ROWS "  # noqa: S608
                           f"AS SELECT {names} FROM {table} WITH NO DATA")
            with cursor.cursor.copy(f"COPY {stage} ({names}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            cursor.execute(f"INSERT INTO {table} ({names}) SELECT {names} FROM {stage} "  # noqa: S608
                           f"ON CONFLICT (source) DO NOTHING")
            cursor.execute(f"DELETE FROM {stage}")  # noqa: S608
        else:
            adapt = connection.ops.adapt_datetimefield_value
            rows = [(r[0], adapt(r[1]), *r[2:]) for r in rows]
            marks = ", ".join(["%s"] * len(COLUMNS))
            cursor.executemany(f"INSERT OR IGNORE INTO {table} ({names}) VALUES ({marks})",  # noqa: S608
                               rows)
