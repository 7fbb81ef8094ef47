"""``REDIS_URL``: one Redis server, or a Sentinel set that names the master (docs/bus.md).

Pure Python (no Twisted, no Django): the edge's client (:mod:`edge.bus.redis`) and the web
processes' settings (``config.redis_sentinel``) read the same grammar::

    redis://[[username]:password@]host[:port][/db]
    unix:///path/to/redis.sock[?db=N]
    redis+sentinel://[[username]:password@]host[:port][,host[:port]...]/master_name[/db]
        [?sentinel_password=...&sentinel_username=...]

In the Sentinel form the hosts are the sentinels (port 26379 when omitted, IPv6 in brackets),
``master_name`` is the name the sentinels monitor, and the credentials before ``@`` are the
master's (and its replicas'): they AUTH on the data server. Sentinels protected by their own
``requirepass`` take ``sentinel_password`` (and ``sentinel_username`` for an ACL user) in the
query. Every part is percent-decoded. A malformed URL raises :class:`ValueError` whose text
never repeats a password.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

SENTINEL_SCHEME = "redis+sentinel"
SENTINEL_PORT = 26379
_SENTINEL_QUERY = frozenset({"sentinel_password", "sentinel_username"})


def _db(text: str) -> int:
    if not text.isdigit():
        raise ValueError(f"Redis URL: database {text!r} is not a number")
    return int(text)


def _port(text: str, default: int) -> int:
    if not text:
        return default
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"Redis URL: port {text!r} is not a TCP port")
    return int(text)


def _host_port(entry: str, default_port: int) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port``."""
    if entry.startswith("["):
        end = entry.find("]")
        if end < 0 or (end + 1 < len(entry) and entry[end + 1] != ":"):
            raise ValueError(f"Redis URL: bad sentinel address {entry!r}")
        return entry[1:end], _port(entry[end + 2:], default_port)
    host, _, port = entry.partition(":")
    if not host or ":" in port:
        raise ValueError(f"Redis URL: bad sentinel address {entry!r}")
    return host, _port(port, default_port)


@dataclass(frozen=True, slots=True)
class RedisAddress:
    """Where the Redis data server is. With ``sentinels`` set, ``host``/``port`` are unused:
    the master's address is asked of the sentinels on every connection."""

    host: str = "127.0.0.1"
    port: int = 6379
    path: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinels: tuple[tuple[str, int], ...] = ()
    master_name: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = None

    @property
    def is_sentinel(self) -> bool:
        return bool(self.sentinels)

    @classmethod
    def parse(cls, url: str) -> RedisAddress:
        """Read a ``redis://``, ``unix://`` or ``redis+sentinel://`` URL (module docstring)."""
        scheme = url.partition("://")[0].lower() if "://" in url else ""
        if scheme == SENTINEL_SCHEME:
            return cls._parse_sentinel(url)
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise ValueError("Redis URL: malformed host or port") from None
        query = parse_qs(parts.query)
        password = unquote(parts.password) if parts.password else None
        username = unquote(parts.username) if parts.username else None
        if parts.scheme == "unix":
            if not parts.path:
                raise ValueError("Redis URL: unix:// needs a socket path")
            db = _db(query.get("db", ["0"])[0])
            return cls(path=parts.path, db=db, username=username, password=password)
        if parts.scheme != "redis":
            raise ValueError(
                f"unsupported Redis URL scheme {parts.scheme!r} "
                "(redis://, unix:// or redis+sentinel://)"
            )
        db_text = parts.path.strip("/") or query.get("db", ["0"])[0]
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=port or 6379,
            db=_db(db_text),
            username=username,
            password=password,
        )

    @classmethod
    def _parse_sentinel(cls, url: str) -> RedisAddress:
        rest = url.split("://", 1)[1]
        rest, _, fragment = rest.partition("#")
        if fragment:
            raise ValueError("Redis URL: a fragment (#...) is not allowed")
        rest, _, query_text = rest.partition("?")
        netloc, slash, path = rest.partition("/")
        userinfo, at, hosts = netloc.rpartition("@")
        username = password = None
        if at:
            user, colon, secret = userinfo.partition(":")
            username = unquote(user) or None
            password = unquote(secret) if colon else None
            if not colon:
                # `user@host` without a colon: the text is a password, as redis-py reads it.
                username, password = None, unquote(user) or None
        if not hosts:
            raise ValueError("Redis URL: redis+sentinel:// needs at least one sentinel host")
        sentinels = tuple(_host_port(entry, SENTINEL_PORT) for entry in hosts.split(","))
        segments = path.split("/") if slash else []
        if len(segments) > 1 and segments[-1] == "":
            segments.pop()  # one trailing slash
        if not segments or not segments[0]:
            raise ValueError(
                "Redis URL: redis+sentinel:// needs the master name "
                "(redis+sentinel://host:26379/mymaster/0)"
            )
        if len(segments) > 2:
            raise ValueError("Redis URL: the path is /master_name[/db]")
        master_name = unquote(segments[0])
        db = _db(segments[1]) if len(segments) == 2 else 0
        query = parse_qs(query_text, keep_blank_values=True, strict_parsing=False)
        unknown = sorted(set(query) - _SENTINEL_QUERY)
        if unknown:
            raise ValueError(
                f"Redis URL: unknown option(s) {', '.join(unknown)} "
                "(sentinel_password, sentinel_username)"
            )
        if any(len(values) > 1 for values in query.values()):
            raise ValueError("Redis URL: an option is given twice")
        return cls(
            host="",
            port=0,
            db=db,
            username=username,
            password=password,
            sentinels=sentinels,
            master_name=master_name,
            sentinel_username=query.get("sentinel_username", [""])[0] or None,
            sentinel_password=query.get("sentinel_password", [""])[0] or None,
        )

    def __str__(self) -> str:
        """The address without credentials, for logs."""
        if self.sentinels:
            hosts = ",".join(
                f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in self.sentinels
            )
            return f"{SENTINEL_SCHEME}://{hosts}/{self.master_name}/{self.db}"
        where = f"unix://{self.path}" if self.path else f"redis://{self.host}:{self.port}"
        return f"{where}/{self.db}"
