"""MySQL/MariaDB and PostgreSQL sinks: one INSERT per message, values always bound.

The statement is written with placeholders, e.g.
`INSERT INTO readings (device, temperature, ts) VALUES ({{device}}, {{value}}, {{ts}})`;
every `{{ … }}` becomes a bound parameter (`%s`), never text in the SQL. Only that shape is
accepted: a table (optionally `schema.table`, not a system schema), a column list, and one
value per column, each a placeholder or a constant (number, plain 'text', NULL, DEFAULT,
TRUE, FALSE, CURRENT_TIMESTAMP, NOW()). No `;`, no comments, no sub-query, no function call:
a sink writes rows, it cannot read anything.
"""

from __future__ import annotations

import contextlib
import json
import re
import urllib.parse
from collections.abc import Mapping
from typing import Any

from webapp.core import outbound
from webapp.rules.expressions import Node, Template
from webapp.rules.sinks.base import Driver, Outgoing, SinkError
from webapp.rules.sinks.drivers import TIMEOUT_S, refuse_password_in_url

SCHEMES = ("mysql", "mariadb", "postgres", "postgresql")
_PLAIN = re.compile(r"[A-Za-z0-9_$.\-]+")
_INSERT = re.compile(r"^\s*insert\s+into\s+", re.IGNORECASE)
_BOUND = "\x00"  # where a placeholder stands while the statement's shape is checked
_NAME = r'(?:[A-Za-z_][A-Za-z0-9_$]*|"[^"\x00]+"|`[^`\x00]+`)'
_VALUE = (rf"(?:{_BOUND}|[-+]?\d+(?:\.\d+)?|'[^'\\\x00]*'|null|default|true|false"
          r"|current_timestamp|now\(\s*\))")
_SHAPE = re.compile(
    rf"^\s*insert\s+into\s+(?P<table>{_NAME}(?:\s*\.\s*{_NAME})?)\s*"
    rf"\((?P<columns>\s*{_NAME}(?:\s*,\s*{_NAME})*\s*)\)\s*"
    rf"values\s*\((?P<values>\s*{_VALUE}(?:\s*,\s*{_VALUE})*\s*)\)\s*$",
    re.IGNORECASE)
_SYSTEM_SCHEMAS = {"information_schema", "mysql", "performance_schema", "sys"}


def compile_insert(statement: str) -> tuple[str, Template]:
    """The SQL text with `%s` placeholders, and the template whose values are bound."""
    if not isinstance(statement, str) or not _INSERT.match(statement):
        raise ValueError("the statement is one INSERT INTO … VALUES (…) with {{ }} placeholders")
    template = Template(statement)
    sql: list[str] = []
    quotes = 0
    for part in template.parts:
        if isinstance(part, Node):
            if quotes % 2:
                raise ValueError("a {{ }} placeholder is a bound value: do not quote it")
            sql.append("%s")
            continue
        if ";" in part or "--" in part or "/*" in part or "#" in part:
            raise ValueError("one statement only: no ';' and no comments")
        quotes += part.count("'") + part.count('"')
        sql.append(part.replace("%", "%%"))
    if not any(isinstance(p, Node) for p in template.parts):
        raise ValueError("the statement has no {{ }} placeholder")
    _check_shape("".join(_BOUND if isinstance(p, Node) else p for p in template.parts))
    return "".join(sql), template


def _check_shape(statement: str) -> None:
    shape = _SHAPE.match(statement)
    if shape is None:
        raise ValueError("the statement is INSERT INTO table (column, …) VALUES (value, …), "
                         "each value a {{ }} placeholder or a constant: no sub-query, no "
                         "function call")
    names = [n.strip().strip('"`').lower() for n in shape["table"].split(".")]
    if any(n.startswith("pg_") or n in _SYSTEM_SCHEMAS for n in names):
        raise ValueError("the statement writes to a system table")
    columns = len(re.findall(_NAME, shape["columns"]))
    values = len(re.findall(_VALUE, shape["values"], re.IGNORECASE))
    if columns != values:
        raise ValueError(f"the statement names {columns} columns and {values} values")


def bind(value: Any) -> Any:
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
    return value


class SqlDriver(Driver):
    def __init__(self, config: Mapping[str, Any], credentials: Mapping[str, Any]) -> None:
        super().__init__(config, credentials)
        self.sql, self.template = compile_insert(str(config.get("statement") or ""))
        self.connection: Any = None

    def _connect(self) -> Any:
        """Connect to the checked address (PostgreSQL keeps the name for TLS: `hostaddr`)."""
        url = urllib.parse.urlsplit(str(self.config["url"]))
        password = str(self.credentials.get("password") or "")
        database = url.path.lstrip("/")
        try:
            destination = outbound.check_url(str(self.config["url"]), schemes=SCHEMES,
                                             database=True)
            if url.scheme in ("mysql", "mariadb"):
                import pymysql

                return pymysql.connect(host=destination.address, port=destination.port,
                                       user=urllib.parse.unquote(url.username or "root"),
                                       password=password, database=database, autocommit=True,
                                       connect_timeout=TIMEOUT_S, charset="utf8mb4")
            import psycopg

            return psycopg.connect(host=destination.host, hostaddr=destination.address,
                                   port=destination.port,
                                   user=urllib.parse.unquote(url.username or "postgres"),
                                   password=password or None, dbname=database, autocommit=True,
                                   connect_timeout=TIMEOUT_S)
        except Exception as exc:
            raise SinkError(f"cannot connect to the database: {outbound.failure(exc)}"
                            ) from exc

    def send(self, outgoing: Outgoing) -> None:
        if self.connection is None:
            self.connection = self._connect()
        params = [bind(v) for v in self.template.values(outgoing.env)]
        try:
            with self.connection.cursor() as cursor:
                cursor.execute(self.sql, params)
        except Exception as exc:
            raise SinkError(f"INSERT failed: {outbound.failure(exc)}") from exc

    def close(self) -> None:
        if self.connection is not None:
            with contextlib.suppress(Exception):  # dropping a broken connection
                self.connection.close()
        self.connection = None

    @classmethod
    def check(cls, config: Mapping[str, Any]) -> None:
        refuse_password_in_url(config.get("url"))
        url = urllib.parse.urlsplit(str(config["url"]))
        if url.scheme not in SCHEMES:
            raise ValueError("the 'url' is mysql://user@host:port/db or postgres://…")
        # libpq reads a database name holding '=' or a URI as connection settings.
        names = [urllib.parse.unquote(url.path.lstrip("/")),
                 urllib.parse.unquote(url.username or "")]
        if url.query or any(not _PLAIN.fullmatch(n) for n in names if n):
            raise ValueError("the 'url' names a database and a user of letters, digits, "
                             "'_', '-', '.' and '$' only, with no query")
        compile_insert(str(config.get("statement") or ""))

    @classmethod
    def check_destination(cls, config: Mapping[str, Any]) -> None:
        outbound.check_url(str(config.get("url")), schemes=SCHEMES, database=True)
