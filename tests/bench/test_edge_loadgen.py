"""The idle load generator's pieces (bench/edge_loadgen.py) and edge-1m's sizing
(bench/edge_1m.py); the whole bench, small, as one e2e test."""

from __future__ import annotations

import argparse
import ipaddress
import os
import random
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from bench.edge_1m import options
from bench.edge_loadgen import (
    Holder,
    addresses_needed,
    backoff_delay,
    connect_packet,
    percentile,
    source_addresses,
)

ROOT = Path(__file__).resolve().parents[2]


def test_source_addresses_are_loopback_distinct_and_never_the_machines() -> None:
    addresses = source_addresses(0, 1000)
    assert len(set(addresses)) == 1000
    for text in addresses:
        address = ipaddress.ip_address(text)
        assert address in ipaddress.ip_network("127.0.0.0/8")
        assert text != "127.0.0.1"
        assert text.split(".")[-1] not in ("0", "255")
    assert addresses[:3] == ["127.2.0.1", "127.2.0.2", "127.2.0.3"]
    assert addresses[253:255] == ["127.2.0.254", "127.2.1.1"]


def test_each_generator_gets_its_own_slice() -> None:
    per = addresses_needed(18_000)
    slices = [set(source_addresses(k * per, per)) for k in range(56)]
    assert sum(len(s) for s in slices) == len(set().union(*slices)) == 56 * per


def test_addresses_needed_keeps_each_address_far_below_the_ephemeral_range() -> None:
    assert addresses_needed(1) == 1
    assert addresses_needed(10_000) == 1
    assert addresses_needed(10_001) == 2
    assert addresses_needed(18_000) == 2
    assert addresses_needed(1_000_000) == 100


def test_source_addresses_refuse_to_leave_loopback() -> None:
    with pytest.raises(ValueError):
        source_addresses(254 * 256 * 254, 1)


def test_backoff_is_exponential_capped_and_jittered() -> None:
    rng = random.Random(7)
    for attempt, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (7, 30.0), (30, 30.0)]:
        delays = [backoff_delay(attempt, 0.5, 30.0, rng) for _ in range(200)]
        assert all(0.0 <= d <= ceiling for d in delays)
        # full jitter: spread over the whole window, not bunched at its top
        assert min(delays) < ceiling * 0.1 and max(delays) > ceiling * 0.9


def test_backoff_with_a_seed_is_reproducible() -> None:
    one = [backoff_delay(a, rng=random.Random(1)) for a in range(1, 6)]
    two = [backoff_delay(a, rng=random.Random(1)) for a in range(1, 6)]
    assert one == two


def test_connect_packet_bytes() -> None:
    assert connect_packet("c", keepalive=60) == bytes.fromhex("100d00044d5154540402003c000163")
    packet = connect_packet("cid", "dev-1", "s3", keepalive=3600)
    assert packet == (
        b"\x10\x1a"  # CONNECT, remaining length 26
        + b"\x00\x04MQTT\x04"  # protocol name, level 4 (3.1.1)
        + b"\xc2"  # user name, password, clean session
        + b"\x0e\x10"  # keep alive 3600
        + b"\x00\x03cid\x00\x05dev-1\x00\x02s3"
    )


def test_percentile() -> None:
    assert percentile([], 0.5) is None
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert percentile([float(i) for i in range(100)], 0.99) == 99.0


def test_sizing_for_a_million_stays_under_20000_files_per_process() -> None:
    opts = options([], small=False)
    assert opts.devices == 1_000_000
    assert opts.workers == opts.generators == 56
    assert 1_000_000 / 56 < 18_000
    assert opts.inflight * opts.generators <= 6_000
    assert opts.hold == 60.0
    small = options([], small=True)
    assert (small.devices, small.workers, small.generators, small.inflight) == (3000, 3, 1, 1000)
    assert options(["--devices=200000"], small=False).workers == 12


class FakeBroker:
    """A listening socket answering CONNECT with CONNACK and PINGREQ with PINGRESP; it
    closes the first ``refuse`` connections at once (a device must retry those)."""

    def __init__(self, refuse: int = 0) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=512)
        self.port = self.listener.getsockname()[1]
        self.refuse = refuse
        self.accepted = 0
        self.sockets: list[socket.socket] = []
        self.running = True
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        import selectors

        selector = selectors.DefaultSelector()
        selector.register(self.listener, selectors.EVENT_READ)
        while self.running:
            for key, _ in selector.select(0.05):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if sock is self.listener:
                    conn, _ = sock.accept()
                    self.accepted += 1
                    if self.accepted <= self.refuse:
                        conn.close()
                        continue
                    self.sockets.append(conn)
                    selector.register(conn, selectors.EVENT_READ)
                    continue
                data = sock.recv(4096)
                if not data:
                    selector.unregister(sock)
                    sock.close()
                elif data[0] == 0x10:
                    sock.send(b"\x20\x02\x00\x00")
                elif data[:2] == b"\xc0\x00":
                    sock.send(b"\xd0\x00" * (len(data) // 2))
        selector.close()

    def close(self) -> None:
        self.running = False
        self.thread.join(5)
        for sock in self.sockets:
            sock.close()
        self.listener.close()


def holder_args(port: int, count: int, **changes: object) -> argparse.Namespace:
    values: dict[str, object] = {
        "host": "127.0.0.1",
        "port": port,
        "count": count,
        "start": 0,
        "source": ",".join(source_addresses(0, 2)),
        "inflight": 20,
        "rate": 0.0,
        "timeout": 5.0,
        "attempts": 5,
        "backoff_base": 0.01,
        "backoff_cap": 0.05,
        "seed": 1,
        "user": "dev-",
        "password": "s",
        "client_prefix": "c-",
        "keepalive": 60,
    }
    values.update(changes)
    return argparse.Namespace(**values)


def test_holder_connects_from_many_sources_and_answers_pings() -> None:
    broker = FakeBroker()
    holder = Holder(holder_args(broker.port, 200))
    try:
        report = holder.connect_all()
        assert report["held"] == 200 and report["gave_up"] == 0 and report["sources"] == 2
        peers = {s.getpeername()[0] for s in broker.sockets}
        assert peers == {"127.2.0.1", "127.2.0.2"}
        check = holder.ping(5.0)
        assert check["pinged"] == check["pongs"] == 200 and check["closed_by_peer"] == 0
    finally:
        holder.close()
        broker.close()


def test_holder_retries_refused_connects_with_backoff() -> None:
    broker = FakeBroker(refuse=15)
    holder = Holder(holder_args(broker.port, 30))
    try:
        report = holder.connect_all()
        assert report["held"] == 30
        assert sum(report["failures"].values()) == 15
        assert report["attempts"] == 45
    finally:
        holder.close()
        broker.close()


def test_holder_gives_up_after_its_attempts() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # nothing listens: every connect is refused
    holder = Holder(holder_args(port, 3, attempts=3))
    try:
        report = holder.connect_all()
        assert report["held"] == 0 and report["gave_up"] == 3 and report["attempts"] == 9
        assert report["failures"] == {"ECONNREFUSED": 9}
    finally:
        holder.close()


def test_holder_sees_the_broker_closing_a_held_connection() -> None:
    broker = FakeBroker()
    holder = Holder(holder_args(broker.port, 5))
    try:
        assert holder.connect_all()["held"] == 5
        broker.sockets[0].shutdown(socket.SHUT_RDWR)
        holder.watch(0.5)
        assert holder.closed_by_peer == 1
        assert holder.ping(5.0)["pongs"] == 4
    finally:
        holder.close()
        broker.close()


@pytest.mark.e2e
def test_edge_1m_small_holds_every_connection() -> None:
    """`python -m bench --small edge-1m`: 3,000 devices, 3 workers, checked after a hold."""
    env = {**os.environ, "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")}
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--small", "edge-1m"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert '"held_every_connection": true' in done.stdout
    assert '"pongs": 3000' in done.stdout
