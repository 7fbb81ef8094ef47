"""``REDIS_URL``: one Redis server, or a Sentinel set that names the master (docs/bus.md).

Pure Python (no Twisted, no Django): the edge's client (:mod:`edge.bus.redis`) and the web
processes' settings (``config.redis_sentinel``) read the same grammar::

    redis://[[username]:password@]host[:port][/db]
    rediss://[[username]:password@]host[:port][/db][?TLS options]
    unix:///path/to/redis.sock[?db=N]
    redis+sentinel://[[username]:password@]host[:port][,host[:port]...]/master_name[/db]
        [?sentinel_password=...&sentinel_username=...]
    rediss+sentinel://...  (the same, TLS to the sentinels and to the master)

In the Sentinel form the hosts are the sentinels (port 26379 when omitted, IPv6 in brackets),
``master_name`` is the name the sentinels monitor, and the credentials before ``@`` are the
master's (and its replicas'): they AUTH on the data server. Sentinels protected by their own
``requirepass`` take ``sentinel_password`` (and ``sentinel_username`` for an ACL user) in the
query. Every part is percent-decoded. A malformed URL raises :class:`ValueError` whose text
never repeats a password.

``rediss`` is Redis over TLS (:class:`RedisTls`), with the query options redis-py reads in its
own ``rediss://`` URLs, so that one URL serves every client: ``ssl_ca_certs`` (PEM file of the
CAs to trust; default: the system's store), ``ssl_certfile`` and ``ssl_keyfile`` (a client
certificate, for a server with ``tls-auth-clients yes``), ``ssl_cert_reqs`` (``required``, the
default, or ``none``: no verification at all) and ``ssl_check_hostname`` (``true``, the
default, or ``false``: the chain is verified, not the name). The server's certificate is
verified by default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

SENTINEL_SCHEME = "redis+sentinel"
TLS_SENTINEL_SCHEME = "rediss+sentinel"
SENTINEL_PORT = 26379
_SENTINEL_QUERY = frozenset({"sentinel_password", "sentinel_username"})
TLS_OPTIONS = (
    "ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs", "ssl_check_hostname"
)
# The spellings redis-py's to_bool reads the same way (kombu's differ: settings derived from
# the URL give it booleans, config.redis_settings).
_TRUE = frozenset({"1", "t", "true", "y", "yes"})
_FALSE = frozenset({"0", "f", "false", "n", "no"})


def is_sentinel_url(url: str) -> bool:
    """Whether ``url`` names a Sentinel set (``redis+sentinel://`` or ``rediss+sentinel://``)."""
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    return scheme in (SENTINEL_SCHEME, TLS_SENTINEL_SCHEME)


@dataclass(frozen=True, slots=True)
class RedisTls:
    """TLS to Redis (``rediss://``): what the client checks and what it shows."""

    ca_certs: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    verify: bool = True  # ssl_cert_reqs=required (else none)
    check_hostname: bool = True

    @property
    def checks_hostname(self) -> bool:
        """Whether the server's name is checked: never without verification (as redis-py)."""
        return self.verify and self.check_hostname

    def redis_py_options(self) -> dict[str, Any]:
        """The keyword arguments of a redis-py connection (``ssl=True`` and ``ssl_*``)."""
        options: dict[str, Any] = {
            "ssl": True,
            "ssl_cert_reqs": "required" if self.verify else "none",
            "ssl_check_hostname": self.checks_hostname,
        }
        if self.ca_certs:
            options["ssl_ca_certs"] = self.ca_certs
        if self.certfile:
            options["ssl_certfile"] = self.certfile
        if self.keyfile:
            options["ssl_keyfile"] = self.keyfile
        return options


def _single(query: dict[str, list[str]], names: frozenset[str] | tuple[str, ...]) -> None:
    if any(len(query[name]) > 1 for name in names if name in query):
        raise ValueError("Redis URL: an option is given twice")


def _tls(query: dict[str, list[str]], tls: bool) -> RedisTls | None:
    """The TLS options of a query read with blank values kept (None without TLS)."""
    given = sorted(name for name in query if name.lower().startswith("ssl_"))
    if not tls:
        if given:
            raise ValueError(
                f"Redis URL: TLS options ({', '.join(given)}) need the rediss:// scheme "
                "(or rediss+sentinel://)"
            )
        return None
    unknown = [name for name in given if name not in TLS_OPTIONS]
    if unknown:
        raise ValueError(
            f"Redis URL: unsupported TLS option(s) {', '.join(unknown)} "
            f"({', '.join(TLS_OPTIONS)})"
        )
    _single(query, TLS_OPTIONS)
    values = {name: query[name][0] for name in given}
    for name, value in values.items():
        if not value:
            raise ValueError(f"Redis URL: {name} is empty")
    reqs = values.get("ssl_cert_reqs", "required")
    if reqs not in ("required", "none"):
        # (The values are not repeated: one may be a password pasted in the wrong place.)
        raise ValueError("Redis URL: ssl_cert_reqs is 'required' or 'none' (lower case)")
    check = values.get("ssl_check_hostname", "true").lower()
    if check not in _TRUE | _FALSE:
        raise ValueError("Redis URL: ssl_check_hostname is true or false")
    if "ssl_keyfile" in values and "ssl_certfile" not in values:
        raise ValueError("Redis URL: ssl_keyfile needs ssl_certfile (the client certificate)")
    return RedisTls(
        ca_certs=values.get("ssl_ca_certs"),
        certfile=values.get("ssl_certfile"),
        keyfile=values.get("ssl_keyfile"),
        verify=reqs == "required",
        check_hostname=check in _TRUE,
    )


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
    # rediss:// (rediss+sentinel://: to the sentinels and to the master alike)
    tls: RedisTls | None = None

    @property
    def is_sentinel(self) -> bool:
        return bool(self.sentinels)

    @classmethod
    def parse(cls, url: str) -> RedisAddress:
        """Read a ``redis://``, ``rediss://``, ``unix://``, ``redis+sentinel://`` or
        ``rediss+sentinel://`` URL (module docstring)."""
        scheme = url.partition("://")[0].lower() if "://" in url else ""
        if scheme in (SENTINEL_SCHEME, TLS_SENTINEL_SCHEME):
            return cls._parse_sentinel(url, tls=scheme == TLS_SENTINEL_SCHEME)
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise ValueError("Redis URL: malformed host or port") from None
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError(
                f"unsupported Redis URL scheme {parts.scheme!r} (redis://, rediss://, "
                "unix://, redis+sentinel:// or rediss+sentinel://)"
            )
        # Other options (socket_timeout=...) are redis-py's, which reads the URL too.
        query = parse_qs(parts.query, keep_blank_values=True)
        tls = _tls(query, parts.scheme == "rediss")
        password = unquote(parts.password) if parts.password else None
        username = unquote(parts.username) if parts.username else None
        if parts.scheme == "unix":
            if not parts.path:
                raise ValueError("Redis URL: unix:// needs a socket path")
            db = _db(query.get("db", ["0"])[0] or "0")
            return cls(path=parts.path, db=db, username=username, password=password)
        db_text = parts.path.strip("/") or query.get("db", ["0"])[0] or "0"
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=port or 6379,
            db=_db(db_text),
            username=username,
            password=password,
            tls=tls,
        )

    @classmethod
    def _parse_sentinel(cls, url: str, tls: bool = False) -> RedisAddress:
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
        scheme = TLS_SENTINEL_SCHEME if tls else SENTINEL_SCHEME
        if not hosts:
            raise ValueError(f"Redis URL: {scheme}:// needs at least one sentinel host")
        sentinels = tuple(_host_port(entry, SENTINEL_PORT) for entry in hosts.split(","))
        segments = path.split("/") if slash else []
        if len(segments) > 1 and segments[-1] == "":
            segments.pop()  # one trailing slash
        if not segments or not segments[0]:
            raise ValueError(
                f"Redis URL: {scheme}:// needs the master name "
                f"({scheme}://host:26379/mymaster/0)"
            )
        if len(segments) > 2:
            raise ValueError("Redis URL: the path is /master_name[/db]")
        master_name = unquote(segments[0])
        db = _db(segments[1]) if len(segments) == 2 else 0
        query = parse_qs(query_text, keep_blank_values=True, strict_parsing=False)
        address_tls = _tls(query, tls)
        unknown = sorted(set(query) - _SENTINEL_QUERY - set(TLS_OPTIONS))
        if unknown:
            known = "sentinel_password, sentinel_username" + (
                ", " + ", ".join(TLS_OPTIONS) if tls else ""
            )
            raise ValueError(f"Redis URL: unknown option(s) {', '.join(unknown)} ({known})")
        _single(query, tuple(query))
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
            tls=address_tls,
        )

    def __str__(self) -> str:
        """The address without credentials, for logs."""
        if self.sentinels:
            hosts = ",".join(
                f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in self.sentinels
            )
            scheme = TLS_SENTINEL_SCHEME if self.tls else SENTINEL_SCHEME
            return f"{scheme}://{hosts}/{self.master_name}/{self.db}"
        if self.path:
            return f"unix://{self.path}/{self.db}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'rediss' if self.tls else 'redis'}://{host}:{self.port}/{self.db}"
