"""Redis through Sentinel on the edge: the ``redis+sentinel://`` grammar
(edge.bus.redis_url), and the client's way to the master on a memory reactor — sentinels
asked in turn, ROLE checked, READONLY dropped — and the uplink's WAIT (edge.bus.uplink)."""

from __future__ import annotations

from typing import Any

import hiredis
import pytest
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure

from edge.bus.keys import Keys
from edge.bus.redis import RedisAddress, RedisClient, RedisConnector, pack_command
from edge.bus.uplink import Uplink
from edge.service import ConfigError, EdgeConfig

from .test_bus_redis import Server, results

# ROLE of a master with one replica.
MASTER_REPLY = (
    b"*3\r\n$6\r\nmaster\r\n:0\r\n*1\r\n*3\r\n$8\r\n10.0.0.8\r\n$4\r\n6379\r\n$1\r\n0\r\n"
)
ROLE = pack_command(("ROLE",))


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "redis+sentinel://10.0.0.1:26379,10.0.0.2:26380/mymaster/0",
            RedisAddress(
                host="", port=0, sentinels=(("10.0.0.1", 26379), ("10.0.0.2", 26380)),
                master_name="mymaster",
            ),
        ),
        (
            "redis+sentinel://s1,s2,s3/mymaster",
            RedisAddress(
                host="", port=0, sentinels=(("s1", 26379), ("s2", 26379), ("s3", 26379)),
                master_name="mymaster",
            ),
        ),
        (
            "redis+sentinel://:p%40ss@h:1/m/3/?sentinel_password=s%26p",
            RedisAddress(
                host="", port=0, db=3, password="p@ss", sentinels=(("h", 1),),
                master_name="m", sentinel_password="s&p",
            ),
        ),
        (
            "redis+sentinel://app:pw@[::1]:26379,[fe80::2]/m/1"
            "?sentinel_username=watch&sentinel_password=spw",
            RedisAddress(
                host="", port=0, db=1, username="app", password="pw",
                sentinels=(("::1", 26379), ("fe80::2", 26379)), master_name="m",
                sentinel_username="watch", sentinel_password="spw",
            ),
        ),
        ("REDIS+SENTINEL://h/m", RedisAddress(host="", port=0, sentinels=(("h", 26379),),
                                              master_name="m")),
    ],
)  # fmt: skip
def test_sentinel_url_parsing(url: str, expected: RedisAddress):
    """Sentinel hosts (26379 by default, IPv6 in brackets), master name, database; the
    credentials before @ are the master's, sentinel_password/username the sentinels'."""
    address = RedisAddress.parse(url)
    assert address == expected
    assert address.is_sentinel


def test_sentinel_url_printed_without_credentials():
    address = RedisAddress.parse(
        "redis+sentinel://u:secret1@h1:26379,[::1]:26380/mymaster/2?sentinel_password=secret2"
    )
    assert str(address) == "redis+sentinel://h1:26379,[::1]:26380/mymaster/2"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+sentinel:///mymaster/0", "at least one sentinel host"),
        ("redis+sentinel://h:26379", "needs the master name"),
        ("redis+sentinel://h:26379/", "needs the master name"),
        ("redis+sentinel://h:26379//0", "needs the master name"),
        ("redis+sentinel://h:26379/m/x", "database 'x' is not a number"),
        ("redis+sentinel://h:26379/m/0/extra", "the path is /master_name[/db]"),
        ("redis+sentinel://h:99999/m", "port '99999' is not a TCP port"),
        ("redis+sentinel://h:abc/m", "port 'abc' is not a TCP port"),
        ("redis+sentinel://h,,h2/m", "bad sentinel address ''"),
        ("redis+sentinel://[::1/m", "bad sentinel address"),
        ("redis+sentinel://h/m?password=x", "unknown option(s) password"),
        ("redis+sentinel://h/m?sentinel_password=a&sentinel_password=b", "given twice"),
        ("redis+sentinel://h/m#frag", "fragment"),
        ("redis+sentinel://h/m?ssl_cert_reqs=none", "need the rediss:// scheme"),
        ("http://h/0", "unsupported Redis URL scheme 'http'"),
        ("redis://h:port/0", "malformed host or port"),
        ("redis://h/zero", "database 'zero' is not a number"),
    ],
)
def test_bad_urls_are_refused_clearly(url: str, message: str):
    with pytest.raises(ValueError) as raised:
        RedisAddress.parse(url)
    assert message in str(raised.value)


def test_a_bad_url_never_repeats_its_password():
    with pytest.raises(ValueError) as raised:
        RedisAddress.parse("redis+sentinel://:hunter2@h:26379/m/x?sentinel_password=hunter3")
    assert "hunter" not in str(raised.value)


def test_edge_config_waits_for_a_replica_behind_sentinel():
    """One replica by default with a Sentinel URL, none with one server; both settable; a
    bad URL or value is a ConfigError."""
    env = {"DJANGO_SECRET_KEY": "k"}
    single = EdgeConfig.from_env({**env, "REDIS_URL": "redis://h:6379/0"})
    assert (single.redis_wait_replicas, single.redis_wait_timeout_ms) == (0, 1000)
    sentinel = EdgeConfig.from_env({**env, "REDIS_URL": "redis+sentinel://h/m"})
    assert sentinel.redis_wait_replicas == 1
    tuned = EdgeConfig.from_env({
        **env, "REDIS_URL": "redis+sentinel://h/m", "EDGE_REDIS_WAIT_REPLICAS": "0",
        "EDGE_REDIS_WAIT_TIMEOUT_MS": "250",
    })  # fmt: skip
    assert (tuned.redis_wait_replicas, tuned.redis_wait_timeout_ms) == (0, 250)
    assert not sentinel.redis_wait_strict
    strict = EdgeConfig.from_env(
        {**env, "REDIS_URL": "redis+sentinel://h/m", "EDGE_REDIS_WAIT_STRICT": "1"}
    )
    assert strict.redis_wait_strict
    for bad in (
        {"REDIS_URL": "redis+sentinel://h"},
        {"REDIS_URL": "redis://h/0", "EDGE_REDIS_WAIT_REPLICAS": "-1"},
        {"REDIS_URL": "redis://h/0", "EDGE_REDIS_WAIT_TIMEOUT_MS": "0"},
    ):
        with pytest.raises(ConfigError):
            EdgeConfig.from_env({**env, **bad})


def sentinel_client(reactor: MemoryReactorClock, url: str, name: str = "redis") -> RedisClient:
    return RedisClient(reactor, RedisAddress.parse(url), name)


def answer_master(server: Server, host: bytes = b"10.0.0.5", port: bytes = b"6379") -> None:
    server.reply(b"*2\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(host), host, len(port), port))


def test_the_master_is_asked_of_the_sentinels_in_turn():
    """A sentinel that refuses the connection is skipped; the next one, authenticated with
    the sentinel password, names the master; the connection to it authenticates with the
    master's password and checks ROLE before carrying the commands waiting."""
    reactor = MemoryReactorClock()
    client = sentinel_client(
        reactor, "redis+sentinel://:mpw@10.0.0.1:26379,10.0.0.2:26380/tl/2?sentinel_password=spw"
    )
    started = results(client.start())
    early = results(client.execute("GET", "k"))
    server = Server(reactor)
    assert reactor.tcpClients[0][:2] == ("10.0.0.1", 26379)
    server.refuse()
    assert reactor.tcpClients[1][:2] == ("10.0.0.2", 26380)
    server.accept()
    assert server.sent() == pack_command(("AUTH", "spw")) + pack_command(
        ("SENTINEL", "get-master-addr-by-name", "tl")
    )
    server.reply(b"+OK\r\n")
    answer_master(server)
    assert server.transport is not None and server.transport.disconnecting
    assert reactor.tcpClients[2][:2] == ("10.0.0.5", 6379)
    server.accept()
    assert server.sent() == pack_command(("AUTH", "mpw")) + pack_command(("SELECT", 2)) + ROLE
    server.reply(b"+OK\r\n+OK\r\n" + MASTER_REPLY)
    assert started == [None] and client.connected
    assert server.sent() == pack_command(("GET", "k"))
    server.reply(b"$1\r\nv\r\n")
    assert early == [b"v"]
    # The sentinel that answered is asked first next time.
    server.drop()
    reactor.advance(0.1)
    assert reactor.tcpClients[3][:2] == ("10.0.0.2", 26380)


def test_a_server_that_is_not_master_is_left_and_the_sentinels_asked_again():
    reactor = MemoryReactorClock()
    client = sentinel_client(reactor, "redis+sentinel://10.0.0.1/tl")
    started = results(client.start())
    server = Server(reactor)
    server.accept()
    server.sent()
    answer_master(server)
    transport = server.accept()
    assert server.sent() == ROLE
    server.reply(b"*5\r\n$5\r\nslave\r\n$8\r\n10.0.0.9\r\n:6379\r\n$9\r\nconnected\r\n:10\r\n")
    assert transport.disconnecting and not started and not client.connected
    server.drop()
    reactor.advance(0.1)
    server.accept()
    server.sent()
    answer_master(server, b"10.0.0.9")
    server.accept()
    assert reactor.tcpClients[-1][:2] == ("10.0.0.9", 6379)
    server.reply(MASTER_REPLY)
    assert started == [None] and client.connected


def test_no_sentinel_answering_is_a_failed_attempt_retried_within_a_second():
    """Sentinels refusing, not knowing the master or silent: the attempt fails and is made
    again; behind Sentinel the delay stops growing at one second."""
    reactor = MemoryReactorClock()
    client = sentinel_client(reactor, "redis+sentinel://10.0.0.1,10.0.0.2,10.0.0.3/tl")
    started = results(client.start())
    server = Server(reactor)
    server.refuse()
    server.accept()
    server.sent()
    server.reply(b"*-1\r\n")  # does not know the master
    server.accept()  # silent: times out
    reactor.advance(2.0)
    assert not started and server.attempts() == 3
    for _ in range(6):
        reactor.advance(1.0)
        assert server.attempts() > server.seen
        while server.attempts() > server.seen:
            server.refuse()
    assert not started and not client.connected


def test_a_readonly_reply_drops_the_connection():
    """A demoted master answers -READONLY: the command fails and the connection is dropped
    so that the next one goes to the new master."""
    reactor = MemoryReactorClock()
    client = sentinel_client(reactor, "redis+sentinel://10.0.0.1/tl")
    client.start()
    server = Server(reactor)
    server.accept()
    server.sent()
    answer_master(server)
    transport = server.accept()
    server.sent()
    server.reply(MASTER_REPLY)
    written = results(client.execute("XADD", "s", "*", "b", "1"))
    server.reply(b"-READONLY You can't write against a read only replica.\r\n")
    assert isinstance(written[0], Failure) and "READONLY" in written[0].getErrorMessage()
    assert transport.disconnecting


def connected_uplink(
    wait: int, strict: bool = False
) -> tuple[MemoryReactorClock, Server, Uplink]:
    reactor = MemoryReactorClock()
    client = RedisClient(reactor, RedisAddress())
    client.start()
    server = Server(reactor)
    server.accept()
    uplink = Uplink(
        client, Keys("t:"), reactor, wait_replicas=wait, wait_timeout_ms=300, wait_strict=strict
    )
    return reactor, server, uplink


def commands(data: bytes) -> list[bytes]:
    """The command names of a pipeline, in order."""
    reader = hiredis.Reader()
    reader.feed(data)
    out: list[bytes] = []
    while (reply := reader.gets()) is not False:
        out.append(reply[0])
    return out


def test_uplink_acknowledges_after_a_replica_has_the_entry():
    """XADD, WAIT, ROLE in one pipeline; the waiter fires only when the replica confirmed;
    one write in flight at a time, what comes meanwhile goes into the next entry."""
    reactor, server, uplink = connected_uplink(1)
    confirmed: list[Any] = []
    uplink.emit_confirmed([{"e": 1}]).addBoth(confirmed.append)
    reactor.advance(0)
    sent = server.sent()
    assert commands(sent) == [b"XADD", b"WAIT", b"ROLE"]
    assert sent.endswith(pack_command(("WAIT", 1, 300)) + ROLE)
    uplink.emit_confirmed([{"e": 2}])
    reactor.advance(0)
    assert server.sent() == b""  # waits for the write in flight
    server.reply(b"$3\r\n1-0\r\n:1\r\n" + MASTER_REPLY)
    assert confirmed == [None]
    reactor.advance(0)
    assert commands(server.sent()) == [b"XADD", b"WAIT", b"ROLE"]


def test_uplink_refuses_when_the_replica_does_not_confirm_and_follows_the_replica_count():
    """No replica confirming in time: the write is tried again, then the waiters fail. A
    master without replicas (after a failover) is enough, and WAIT then asks for none."""
    reactor, server, uplink = connected_uplink(1)
    outcome: list[Any] = []
    uplink.emit_confirmed([{"e": 1}]).addBoth(outcome.append)
    reactor.advance(0)
    for _ in range(uplink.retries + 1):
        assert outcome == []
        server.sent()
        server.reply(b"$3\r\n1-0\r\n:0\r\n" + MASTER_REPLY)
        reactor.advance(uplink.retry_delay)
    assert len(outcome) == 1 and isinstance(outcome[0], Failure)
    assert "0 of 1 replica" in outcome[0].getErrorMessage()
    assert uplink.unreplicated == uplink.retries + 1 and uplink.failures == 1

    alone = b"*3\r\n$6\r\nmaster\r\n:0\r\n*0\r\n"
    done: list[Any] = []
    uplink.emit_confirmed([{"e": 2}]).addBoth(done.append)
    reactor.advance(0)
    server.sent()
    server.reply(b"$3\r\n2-0\r\n:0\r\n" + alone)  # the replica is gone: enough
    assert done == [None]
    uplink.emit_confirmed([{"e": 3}])
    reactor.advance(0)
    assert pack_command(("WAIT", 0, 300)) in server.sent()


def test_strict_uplink_refuses_a_master_without_replicas():
    """EDGE_REDIS_WAIT_STRICT: a master that has no replica (it may be one whose replica was
    just promoted) does not acknowledge alone; WAIT does not sit out its timeout for it."""
    reactor, server, uplink = connected_uplink(1, strict=True)
    outcome: list[Any] = []
    uplink.emit_confirmed([{"e": 1}]).addBoth(outcome.append)
    reactor.advance(0)
    alone = b"*3\r\n$6\r\nmaster\r\n:0\r\n*0\r\n"
    for attempt in range(uplink.retries + 1):
        sent = server.sent()
        assert pack_command(("WAIT", 0 if attempt else 1, 300)) in sent
        server.reply(b"$3\r\n1-0\r\n:0\r\n" + alone)
        reactor.advance(uplink.retry_delay)
    assert len(outcome) == 1 and "0 of 1 replica" in outcome[0].getErrorMessage()


def test_uplink_without_waiters_or_replicas_writes_xadd_alone():
    reactor, server, uplink = connected_uplink(1)
    uplink.emit({"e": 1})
    reactor.advance(0)
    assert commands(server.sent()) == [b"XADD"]
    reactor, server, uplink = connected_uplink(0)
    uplink.emit_confirmed([{"e": 1}])
    reactor.advance(0)
    assert commands(server.sent()) == [b"XADD"]


def test_switch_master_moves_every_connection_of_the_connector():
    """While a connection is started, one connection to a sentinel (the next one each time)
    listens to +switch-master; a switch of our master drops the connections on the old one
    (another master name is ignored); the watch ends with the last connection."""
    reactor = MemoryReactorClock()
    connector = RedisConnector(
        reactor, RedisAddress.parse("redis+sentinel://10.0.0.1,10.0.0.2/tl?sentinel_password=s")
    )
    client = connector.client("redis")
    started = results(client.start())
    watch_server = Server(reactor)
    # tcpClients[0]: the client asking a sentinel; [1]: the watch's connection.
    assert [c[:2] for c in reactor.tcpClients] == [("10.0.0.1", 26379), ("10.0.0.1", 26379)]
    asking = Server(reactor)
    asking.accept()
    asking.sent()
    asking.reply(b"+OK\r\n")
    answer_master(asking)
    watch_server.seen = 1
    watch_server.accept()
    assert watch_server.sent() == pack_command(("AUTH", "s"))
    watch_server.reply(b"+OK\r\n")
    assert watch_server.sent() == pack_command(("SUBSCRIBE", "+switch-master"))
    watch_server.reply(b"*3\r\n$9\r\nsubscribe\r\n$14\r\n+switch-master\r\n:1\r\n")
    master = Server(reactor)
    master.seen = 2
    master_transport = master.accept()
    assert reactor.tcpClients[2][:2] == ("10.0.0.5", 6379)
    master.sent()
    master.reply(MASTER_REPLY)
    assert started == [None]

    def switch(text: bytes) -> None:
        watch_server.reply(
            b"*3\r\n$7\r\nmessage\r\n$14\r\n+switch-master\r\n$%d\r\n%s\r\n" % (len(text), text)
        )

    switch(b"other 10.0.0.5 6379 10.0.0.6 6379")
    assert not master_transport.disconnecting
    switch(b"tl 10.0.0.5 6379 10.0.0.5 6379")  # already there
    assert not master_transport.disconnecting
    switch(b"tl 10.0.0.5 6379 10.0.0.6 6380")
    assert master_transport.disconnecting and connector.group is not None
    assert connector.group.switches == 2
    # The watch's connection lost: the next sentinel is watched.
    watch_server.drop()
    reactor.advance(0.1)
    assert ("10.0.0.2", 26379) in [c[:2] for c in reactor.tcpClients]
    attempts = len(reactor.tcpClients)
    client.stop()
    assert connector.group.watch is None and not connector.group.clients
    reactor.advance(10)
    assert len(reactor.tcpClients) == attempts  # neither retries any more
