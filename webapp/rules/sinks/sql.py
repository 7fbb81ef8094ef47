"""MySQL/MariaDB and PostgreSQL sinks: one INSERT per message, values always bound.

The statement is written with placeholders, e.g.
`INSERT INTO readings (device, temperature, ts) VALUES ({{device}}, {{value}}, {{ts}})`;
every `{{ … }}` becomes a bound parameter (`%s`), never text in the SQL. Only one INSERT
statement is accepted: no `;`, no comments, no placeholder inside a quoted literal.
"""

from __future__ import annotations

import contextlib
import json
import re
import urllib.parse
from collections.abc import Mapping
from typing import Any

from webapp.rules.expressions import Node, Template
from webapp.rules.sinks.base import Driver, Outgoing, SinkError
from webapp.rules.sinks.drivers import TIMEOUT_S, refuse_password_in_url

_INSERT = re.compile(r"^\s*insert\s+into\s+", re.IGNORECASE)


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
    return "".join(sql), template


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
        url = urllib.parse.urlsplit(str(self.config["url"]))
        password = str(self.credentials.get("password") or "")
        database = url.path.lstrip("/")
        try:
            if url.scheme in ("mysql", "mariadb"):
                import pymysql

                return pymysql.connect(host=url.hostname or "127.0.0.1", port=url.port or 3306,
                                       user=urllib.parse.unquote(url.username or "root"),
                                       password=password, database=database, autocommit=True,
                                       connect_timeout=TIMEOUT_S, charset="utf8mb4")
            import psycopg

            return psycopg.connect(host=url.hostname or "127.0.0.1", port=url.port or 5432,
                                   user=urllib.parse.unquote(url.username or "postgres"),
                                   password=password or None, dbname=database, autocommit=True,
                                   connect_timeout=TIMEOUT_S)
        except Exception as exc:
            raise SinkError(f"cannot connect to the database: {type(exc).__name__}: {exc}"
                            ) from exc

    def send(self, outgoing: Outgoing) -> None:
        if self.connection is None:
            self.connection = self._connect()
        params = [bind(v) for v in self.template.values(outgoing.env)]
        try:
            with self.connection.cursor() as cursor:
                cursor.execute(self.sql, params)
        except Exception as exc:
            raise SinkError(f"INSERT failed: {type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        if self.connection is not None:
            with contextlib.suppress(Exception):  # dropping a broken connection
                self.connection.close()
        self.connection = None

    @classmethod
    def check(cls, config: Mapping[str, Any]) -> None:
        refuse_password_in_url(config.get("url"))
        scheme = urllib.parse.urlsplit(str(config["url"])).scheme
        if scheme not in ("mysql", "mariadb", "postgres", "postgresql"):
            raise ValueError("the 'url' is mysql://user@host:port/db or postgres://…")
        compile_insert(str(config.get("statement") or ""))
