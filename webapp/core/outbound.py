"""Connections to destinations a user named: forwarding sinks, notification channels and
webhook actions (the one guard every such connection goes through; docs/security.md).

- The host name is resolved and *every* address it resolves to is checked: loopback,
  link-local, private (RFC 1918), shared (CGNAT, RFC 6598), unique-local, multicast,
  unspecified, reserved and every other non-global address is refused, in its IPv4-mapped,
  6to4, Teredo and NAT64 forms too. Unix sockets are always refused.
- Unless the address is inside `settings.OUTBOUND_ALLOWED_NETWORKS` (CIDRs an administrator
  trusts, empty by default).
- The platform's own database, Redis (event bus, Celery broker, cache, Channels layer) and
  time-series server are refused even when allow-listed: by address and port, and on any
  address of this machine when they listen on loopback.
- The caller connects to the checked address (`Destination.address`), never to the name
  again, so a name that re-resolves to another address between the check and the connection
  (DNS rebinding) reaches nothing new. A TLS connection keeps the name for the certificate
  check: an address it was rebound to cannot present a certificate for that name.
- HTTP (`http_request`) follows no redirect and reads at most `MAX_REPLY_BYTES` of a reply.

Failures are described by `failure()` in generic words ("connection refused", "timeout",
"HTTP 500", "database error"): what a remote server or a database answered never reaches a
user, so an error cannot be used to read it.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import socket
import ssl
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.translation import gettext_lazy as _

from edge.bus.redis_url import RedisAddress, is_sentinel_url

log = logging.getLogger("thinglinks.outbound")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_REPLY_BYTES = 64 * 1024
DEFAULT_PORTS = {"http": 80, "https": 443, "redis": 6379, "rediss": 6379, "amqp": 5672,
                 "amqps": 5671, "pyamqp": 5672, "mysql": 3306, "mariadb": 3306,
                 "postgres": 5432, "postgresql": 5432, "mqtt": 1883, "mqtts": 8883,
                 "taosws": 6041, "taosrest": 6041, "taos": 6030}
_DATABASE_PORTS = {"postgresql": 5432, "postgis": 5432, "mysql": 3306, "oracle": 1521}
_SHARED = ipaddress.ip_network("100.64.0.0/10")
_UNIQUE_LOCAL = ipaddress.ip_network("fc00::/7")
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


class OutboundRefused(ValueError):
    """The destination may not be reached; `reason` says why (safe to show the user)."""

    def __init__(self, reason: Any) -> None:
        self.reason = reason
        super().__init__(str(reason))


@dataclass(frozen=True, slots=True)
class Destination:
    """A checked destination: connect to `address` (`host` is for TLS and the Host header)."""

    host: str
    port: int
    addresses: tuple[str, ...]

    @property
    def address(self) -> str:
        return self.addresses[0]

    def connect_host(self, *, tls: bool) -> str:
        """What to hand a client library: the checked address, or the name over TLS."""
        return self.host if tls and not _is_literal(self.host) else self.address


def _is_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


# --- settings ------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _networks(entries: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError as exc:
            raise ImproperlyConfigured(
                f"OUTBOUND_ALLOWED_NETWORKS: {entry!r} is not a network (CIDR)") from exc
    return tuple(networks)


def allowed_networks() -> tuple[IPNetwork, ...]:
    value = getattr(settings, "OUTBOUND_ALLOWED_NETWORKS", ()) or ()
    entries = value.split(",") if isinstance(value, str) else value
    return _networks(tuple(str(e).strip() for e in entries if str(e).strip()))


def _url_endpoint(url: str) -> tuple[str, int] | None:
    """(host, port) of a service URL; None for Unix sockets and URLs without a host."""
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.split("+")[0].lower()
    if not parts.hostname or scheme in ("unix", "socket"):
        return None
    try:
        port = parts.port
    except ValueError:
        return None
    return parts.hostname, port or DEFAULT_PORTS.get(scheme, 0)


def _platform_urls() -> tuple[str, ...]:
    """The URLs of the platform's own services, from its settings."""
    urls = [str(getattr(settings, name, "") or "") for name in
            ("REDIS_URL", "CELERY_BROKER_URL", "TSDB_URL")]
    for cache in getattr(settings, "CACHES", {}).values():
        location = cache.get("LOCATION")
        urls.extend(location if isinstance(location, list | tuple) else [str(location or "")])
    for layer in getattr(settings, "CHANNEL_LAYERS", {}).values():
        for host in (layer.get("CONFIG") or {}).get("hosts") or []:
            address = host.get("address") if isinstance(host, dict) else host
            urls.append(address if isinstance(address, str) else "")
    return tuple(url for url in _sentinels_expanded(urls) if "://" in url)


def _sentinels_expanded(urls: Iterable[str]) -> list[str]:
    """A Sentinel URL (several hosts) stands for each of its sentinels; the master and its
    replicas are where the sentinels say, found at run time, so not among these."""
    out: list[str] = []
    for url in urls:
        if is_sentinel_url(url):  # redis+sentinel:// or rediss+sentinel://
            try:
                sentinels = RedisAddress.parse(url).sentinels
            except ValueError:
                continue
            out.extend(f"redis://[{h}]:{p}" if ":" in h else f"redis://{h}:{p}"
                       for h, p in sentinels)
        else:
            out.append(url)
    return out


def _platform_databases() -> tuple[tuple[str, int], ...]:
    found = []
    for database in settings.DATABASES.values():
        host = str(database.get("HOST") or "")
        engine = str(database.get("ENGINE") or "").rsplit(".", 1)[-1]
        if host.startswith("/") or engine not in _DATABASE_PORTS:
            continue  # SQLite; a Unix socket (refused anyway)
        found.append((host or "localhost",
                      int(database.get("PORT") or _DATABASE_PORTS[engine])))
    return tuple(found)


@functools.lru_cache(maxsize=8)
def _resolve_own(endpoints: tuple[tuple[str, int], ...]
                 ) -> tuple[frozenset[tuple[IPAddress, int]], frozenset[int]]:
    """The own services' (address, port) pairs, and the ports they listen on at loopback
    (which any address of this machine may reach when the service listens on all)."""
    pairs: set[tuple[IPAddress, int]] = set()
    local_ports: set[int] = set()
    for host, port in endpoints:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            log.warning("cannot resolve the platform's own service %s:%s", host, port)
            continue
        for info in infos:
            address = _canonical(ipaddress.ip_address(str(info[4][0]).split("%")[0]))
            pairs.add((address, port))
            if address.is_loopback or address.is_unspecified:
                local_ports.add(port)
    return frozenset(pairs), frozenset(local_ports)


def own_endpoints() -> tuple[frozenset[tuple[IPAddress, int]], frozenset[int]]:
    endpoints = [*_platform_databases()]
    endpoints.extend(e for e in map(_url_endpoint, _platform_urls()) if e is not None)
    return _resolve_own(tuple(sorted(set(endpoints))))


def own_service_endpoints() -> tuple[frozenset[tuple[IPAddress, int]], frozenset[int]]:
    """As `own_endpoints`, without the database servers (Redis, the time-series server)."""
    endpoints = [e for e in map(_url_endpoint, _platform_urls()) if e is not None]
    return _resolve_own(tuple(sorted(set(endpoints))))


def platform_database_names() -> frozenset[str]:
    """The names of the platform's own databases (the test database's too)."""
    from django.db import connections

    names = set()
    for database in settings.DATABASES.values():
        names.add(str(database.get("NAME") or ""))
        names.add(str((database.get("TEST") or {}).get("NAME") or ""))
    for connection in connections.all(initialized_only=True):
        names.add(str(connection.settings_dict.get("NAME") or ""))
    return frozenset(n.lower() for n in names if n)


def _reaches(endpoints: tuple[frozenset[tuple[IPAddress, int]], frozenset[int]],
             address: IPAddress, port: int) -> bool:
    pairs, local_ports = endpoints
    return (address, port) in pairs or (port in local_ports and (
        address.is_loopback or address.is_unspecified or _is_local_address(address)))


@functools.lru_cache(maxsize=256)
def _is_local_address(address: IPAddress) -> bool:
    """Whether the address belongs to this machine (binding to it succeeds)."""
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.bind((str(address), 0))
    except OSError:
        return False
    return True


# --- checking --------------------------------------------------------------------------------


def _canonical(address: IPAddress) -> IPAddress:
    """An IPv4-mapped IPv6 address is the IPv4 address it maps."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _embedded(address: IPAddress) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address leads to (6to4, Teredo, NAT64)."""
    if not isinstance(address, ipaddress.IPv6Address):
        return []
    found = []
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    if address.teredo is not None:
        found.extend(address.teredo)
    if any(address in net for net in _NAT64):
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found


def _kind(address: IPAddress) -> Any:
    """Why the address is not a public destination (None when it is)."""
    if address.is_unspecified:
        return _("unspecified")
    if address.is_loopback:
        return _("loopback")
    if address.is_link_local:
        return _("link-local")
    if address.is_multicast:
        return _("multicast")
    if address in _SHARED:
        return _("shared (CGNAT)")
    if address in _UNIQUE_LOCAL:
        return _("unique-local")
    if address.is_private:
        return _("private")
    if address.is_reserved or not address.is_global:
        return _("reserved")
    return None


def check_address(host: str, address: IPAddress, port: int,
                  database: str | None = None) -> None:
    """Refuse one resolved address of `host` (raises OutboundRefused). `database` is the
    database an SQL sink names: another database than the platform's own on the platform's
    database server is a destination like any other (a sink writes rows of its own tables,
    never system tables, and no SQL reaches across databases)."""
    address = _canonical(address)
    if _reaches(own_endpoints(), address, port) and (
            database is None or database.lower() in platform_database_names()
            or _reaches(own_service_endpoints(), address, port)):
        raise OutboundRefused(_(
            "{host}:{port} is the platform's own database or Redis: it is never a "
            "destination.").format(host=host, port=port))
    networks = allowed_networks()
    candidates = [address, *_embedded(address)]
    if any(c.version == n.version and c in n for c in candidates for n in networks):
        return
    for candidate in candidates:
        kind = _kind(candidate)
        if kind is not None:
            raise OutboundRefused(_(
                "The destination {host} is refused: it is a {kind} address. An administrator "
                "may allow trusted networks in OUTBOUND_ALLOWED_NETWORKS.").format(
                    host=host, kind=kind))


def check_host(host: str, port: int, database: str | None = None) -> Destination:
    """Resolve `host` and check every address; returns what to connect to."""
    host = (host or "").strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host:
        raise OutboundRefused(_("The destination has no host."))
    if host.startswith("/") or "%2f" in host.lower():
        raise OutboundRefused(_("Unix sockets are never a destination."))
    if not 0 < int(port) < 65536:
        raise OutboundRefused(_("The port {port} is not a TCP port.").format(port=port))
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise OutboundRefused(_("The host name {host} does not resolve.").format(
            host=host)) from exc
    addresses: list[str] = []
    for info in infos:
        text = str(info[4][0]).split("%")[0]
        check_address(host, ipaddress.ip_address(text), int(port), database)
        if text not in addresses:
            addresses.append(text)
    if not addresses:
        raise OutboundRefused(_("The host name {host} does not resolve.").format(host=host))
    return Destination(host=host, port=int(port), addresses=tuple(addresses))


def check_url(url: str, *, schemes: Iterable[str] | None = None,
              database: bool = False) -> Destination:
    """Check the host of a URL (scheme in `schemes` when given; its default port). With
    `database`, the URL's path names a database (SQL sinks; see `check_address`)."""
    try:
        parts = urllib.parse.urlsplit(str(url))
        port = parts.port
    except ValueError as exc:
        raise OutboundRefused(_("The URL is not valid.")) from exc
    scheme = parts.scheme.lower()
    if scheme in ("unix", "redis+socket", "socket"):
        raise OutboundRefused(_("Unix sockets are never a destination."))
    if schemes is not None and scheme not in set(schemes):
        raise OutboundRefused(_("The URL scheme is one of {schemes}.").format(
            schemes=", ".join(sorted(schemes))))
    if not parts.hostname:
        raise OutboundRefused(_("The URL has no host."))
    name = urllib.parse.unquote(parts.path.lstrip("/")) if database else None
    return check_host(parts.hostname, port or DEFAULT_PORTS.get(scheme, 0), name or None)


def with_host(url: str, host: str) -> str:
    """The URL with its host replaced (the checked address), user and port kept."""
    parts = urllib.parse.urlsplit(url)
    netloc = f"[{host}]" if ":" in host else host
    if parts.port:
        netloc += f":{parts.port}"
    userinfo, at, _rest = parts.netloc.rpartition("@")
    if at:
        netloc = f"{userinfo}@{netloc}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query,
                                    parts.fragment))


def templated_host(url: str) -> bool:
    """Whether the host part of a URL is a template (checked only when it is rendered)."""
    rest = str(url).partition("://")[2]
    return "{{" in rest.split("/", 1)[0]


# --- HTTP ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HttpReply:
    status: int
    body: bytes  # at most MAX_REPLY_BYTES

    def json(self) -> Any:
        import json

        return json.loads(self.body)


def http_request(method: str, url: str, *, body: bytes, headers: Mapping[str, str],
                 timeout: float) -> HttpReply:
    """One HTTP(S) request to the checked address of the URL's host; no redirect followed
    (a 3xx is the reply), no proxy from the environment. Raises OutboundRefused or the
    connection's error (describe it with `failure`)."""
    import certifi
    import urllib3

    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    destination = check_url(url, schemes=("http", "https"))
    host = destination.host
    host_header = f"[{host}]" if ":" in host else host
    if parts.port:
        host_header += f":{parts.port}"
    sent = {k: v for k, v in headers.items() if k.lower() != "host"}
    sent["Host"] = host_header
    if parts.username is not None:
        user = urllib.parse.unquote(parts.username)
        password = urllib.parse.unquote(parts.password or "")
        sent.update(urllib3.util.make_headers(basic_auth=f"{user}:{password}"))
    target = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
    limits = urllib3.Timeout(connect=timeout, read=timeout)
    for n, address in enumerate(destination.addresses, start=1):
        pool: urllib3.HTTPConnectionPool
        if scheme == "https":
            pool = urllib3.HTTPSConnectionPool(
                address, destination.port, timeout=limits, retries=False,
                cert_reqs="CERT_REQUIRED", ca_certs=certifi.where(), assert_hostname=host,
                server_hostname=None if _is_literal(host) else host)
        else:
            pool = urllib3.HTTPConnectionPool(address, destination.port, timeout=limits,
                                              retries=False)
        try:
            response = pool.urlopen(method, target, body=body, headers=sent, redirect=False,
                                    retries=False, preload_content=False,
                                    assert_same_host=False)
            try:
                data = response.read(MAX_REPLY_BYTES)
            finally:
                response.release_conn()
            return HttpReply(response.status, data)
        except (urllib3.exceptions.NewConnectionError,
                urllib3.exceptions.ConnectTimeoutError):
            if n == len(destination.addresses):
                raise  # else the next checked address of the name, as browsers do
        finally:
            pool.close()
    raise AssertionError("unreachable: a Destination has at least one address")


# --- describing failures ---------------------------------------------------------------------


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    stack: list[BaseException | None] = [exc]
    while stack:
        current = stack.pop()
        if current is None or any(current is s for s in seen) or len(seen) > 20:
            continue
        seen.append(current)
        reason = getattr(current, "reason", None)
        stack.extend([current.__cause__, current.__context__,
                      reason if isinstance(reason, BaseException) else None])
    return seen


def failure(exc: BaseException) -> str:
    """A generic description of why a connection or request failed: never what the other
    side said (a refusal of ours gives its reason)."""
    chain = _chain(exc)
    for item in chain:
        if isinstance(item, OutboundRefused):
            return str(item.reason)
    names = {type(item).__name__ for item in chain}
    for item in chain:
        if isinstance(item, socket.gaierror):
            return "host name not resolved"
        if isinstance(item, ConnectionRefusedError):
            return "connection refused"
        if isinstance(item, ConnectionResetError | BrokenPipeError):
            return "connection reset"
        if isinstance(item, TimeoutError | socket.timeout) or "Timeout" in type(item).__name__:
            return "timeout"
        if isinstance(item, ssl.SSLError | ssl.CertificateError) or "SSLError" in names:
            return "TLS error"
    if names & {"OperationalError", "InterfaceError"} and any(
            "connect" in str(item).lower() for item in chain):
        return "cannot connect to the database"
    for item in chain:
        code = database_code(item)
        if code is not None:
            return f"database error ({code})" if code else "database error"
    if any(isinstance(item, OSError) for item in chain) or names & {
            "NewConnectionError", "ProtocolError", "ConnectionError", "KafkaConnectionError"}:
        return "connection failed"
    return "failed"


def database_code(exc: BaseException) -> str | None:
    """The standard code of a database error (SQLSTATE, MySQL error number), which says
    what went wrong without the data its message may quote; "" for a database error
    without one, None for another error."""
    module = type(exc).__module__ or ""
    if not module.startswith(("psycopg", "pymysql", "django.db")):
        return None
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate.isalnum() and len(sqlstate) == 5:
        return f"SQLSTATE {sqlstate}"
    if module.startswith("pymysql") and exc.args and isinstance(exc.args[0], int):
        return f"MySQL {exc.args[0]}"
    return ""
