"""MQTT load generator for the edge benchmarks: raw asyncio sockets and pre-encoded MQTT 3.1.1
packets, so that the generator is not what limits the measurement.

Run as a subprocess by ``bench.edge_throughput`` and ``bench.edge_connections``; it prints one
JSON object per line on stdout and reads commands (``stop``) from stdin.

    python -m bench.edge_loadgen sub  --port P --topic T --qos Q --connections K
    python -m bench.edge_loadgen pub  --port P --topic T --qos Q --connections K --duration S
    python -m bench.edge_loadgen idle --port P --count N --source 127.2.0.1,127.2.0.2 \
        --inflight 1000 [--rate R] --user dev- --password S ...
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import functools
import heapq
import json
import os
import random
import resource
import select
import socket
import sys
import time
from typing import Any

PINGREQ = b"\xc0\x00"


def emit(**fields: Any) -> None:
    try:
        sys.stdout.write(json.dumps(fields) + "\n")
        sys.stdout.flush()
    except BrokenPipeError:  # the bench went away: nothing left to report to
        os._exit(1)


def vbi(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value % 128
        value //= 128
        out.append(byte | 0x80 if value else byte)
        if not value:
            return bytes(out)


def read_vbi(buffer: bytes, pos: int) -> tuple[int, int] | None:
    """The variable byte integer (an MQTT remaining length) starting at `pos` and where what
    follows it starts; None while `buffer` ends inside it."""
    value, shift = 0, 0
    for i in range(pos, len(buffer)):
        byte = buffer[i]
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, i + 1
    return None


def _str(raw: bytes) -> bytes:
    return len(raw).to_bytes(2, "big") + raw


def connect_packet(
    client_id: str, username: str | None = None, password: str | None = None, keepalive: int = 300
) -> bytes:
    flags = 0x02
    payload = _str(client_id.encode())
    if username is not None:
        flags |= 0x80
        payload += _str(username.encode())
    if password is not None:
        flags |= 0x40
        payload += _str(password.encode())
    body = _str(b"MQTT") + bytes((4, flags)) + keepalive.to_bytes(2, "big") + payload
    return b"\x10" + vbi(len(body)) + body


def subscribe_packet(packet_id: int, topic: str, qos: int) -> bytes:
    body = packet_id.to_bytes(2, "big") + _str(topic.encode()) + bytes((qos,))
    return b"\x82" + vbi(len(body)) + body


def publish_packet(topic: str, payload: bytes, qos: int, packet_id: int = 1) -> bytes:
    body = _str(topic.encode()) + (packet_id.to_bytes(2, "big") if qos else b"") + payload
    return bytes((0x30 | qos << 1,)) + vbi(len(body)) + body


def _same(protocol: asyncio.Protocol) -> asyncio.Protocol:
    """A protocol factory returning the protocol made beforehand (functools.partial)."""
    return protocol


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Counter(asyncio.Protocol):
    """A subscriber connection that counts PUBLISH packets (and acknowledges QoS 1).

    All messages of a run have the same size, so a whole read of aligned packets is checked
    and counted with slices (C speed); anything else goes through a general parser.
    """

    def __init__(
        self, client_id: str, topic: str, qos: int, sample: bytes, ready: asyncio.Future
    ) -> None:
        self.client_id = client_id
        self.topic = topic
        self.qos = qos
        self.size = len(sample)
        self.expect = sample[:2]
        self.id_offset = 2 + 2 + len(topic.encode())
        self.ready = ready
        self.buffer = b""
        self.count = 0
        self.transport: Any = None
        self.subscribed = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(connect_packet(self.client_id) + subscribe_packet(1, self.topic, self.qos))

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        size = self.size
        n = len(buffer) // size
        end = n * size
        first, second = self.expect
        if n and buffer[0:end:size].count(first) == n and buffer[1:end:size].count(second) == n:
            self.count += n
            if self.qos:
                acks = bytearray(4 * n)
                acks[0::4] = b"\x40" * n
                acks[1::4] = b"\x02" * n
                offset = self.id_offset
                acks[2::4] = buffer[offset:end:size]
                acks[3::4] = buffer[offset + 1 : end : size]
                self.transport.write(bytes(acks))
            self.buffer = buffer[end:]
            return
        self.buffer = self._parse(buffer)

    def _parse(self, buffer: bytes) -> bytes:
        pos = 0
        acks = []
        while len(buffer) - pos >= 2:
            kind = buffer[pos] >> 4
            header = read_vbi(buffer, pos + 1)
            if header is None:
                break
            length, i = header
            end = i + length
            if end > len(buffer):
                break
            if kind == 3:
                self.count += 1
                if (buffer[pos] >> 1) & 3:
                    topic_len = int.from_bytes(buffer[i : i + 2], "big")
                    packet_id = buffer[i + 2 + topic_len : i + 4 + topic_len]
                    acks.append(b"\x40\x02" + packet_id)
            elif kind == 9 and not self.subscribed:
                self.subscribed = True
                if not self.ready.done():
                    self.ready.set_result(True)
            elif kind == 2 and buffer[i + 1] != 0 and not self.ready.done():
                self.ready.set_exception(RuntimeError(f"CONNACK refused {buffer[i + 1]}"))
            pos = end
        if acks:
            self.transport.write(b"".join(acks))
        return buffer[pos:]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(RuntimeError("connection lost before SUBACK"))


async def run_sub(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    sample = publish_packet(args.topic, b"x" * args.payload, args.qos)
    counters = []
    for i in range(args.connections):
        ready = loop.create_future()
        counter = Counter(f"bench-sub-{os.getpid()}-{i}", args.topic, args.qos, sample, ready)
        await loop.create_connection(functools.partial(_same, counter), args.host, args.port)
        counters.append((counter, ready))
    await asyncio.gather(*(ready for _, ready in counters))
    emit(ready=True)
    samples: list[tuple[float, int]] = []
    stop = asyncio.Event()
    loop.add_reader(sys.stdin.fileno(), stop.set)
    cpu0 = cpu_seconds()
    while not stop.is_set():
        samples.append((time.time(), sum(c.count for c, _ in counters)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.1)
    # Stopped: what the broker still holds keeps coming; wait until a second passes without
    # a message (at most 15 s), so that "lost" means lost, not late.
    loop.remove_reader(sys.stdin.fileno())
    quiet_since = time.time()
    last = -1
    while time.time() - quiet_since < 1.0 and time.time() - samples[-1][0] < 15:
        total = sum(c.count for c, _ in counters)
        if total != last:
            last, quiet_since = total, time.time()
        await asyncio.sleep(0.1)
    samples.append((time.time(), sum(c.count for c, _ in counters)))
    emit(
        samples=samples,
        received=samples[-1][1],
        per_connection=[c.count for c, _ in counters],
        cpu=cpu_seconds() - cpu0,
    )


class Publisher(asyncio.Protocol):
    def __init__(self, args: argparse.Namespace, index: int, done: asyncio.Future) -> None:
        self.args = args
        self.index = index
        self.done = done
        self.transport: Any = None
        self.sent = 0
        self.acked = 0
        self.buffer = b""
        self.connected = asyncio.get_running_loop().create_future()
        self.writable = asyncio.Event()
        self.writable.set()
        self.next_id = 1
        payload = b"x" * args.payload
        self.head = publish_packet(args.topic, b"", args.qos)
        body_prefix = _str(args.topic.encode())
        if args.qos:
            total = len(body_prefix) + 2 + len(payload)
            self.q1_head = bytes((0x32,)) + vbi(total) + body_prefix
            self.q1_tail = payload
        else:
            packet = publish_packet(args.topic, payload, 0)
            self.chunk = packet * args.batch
        self.stopping = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(connect_packet(f"bench-pub-{os.getpid()}-{self.index}"))

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        if not self.connected.done():
            if len(buffer) < 4:
                self.buffer = buffer
                return
            if buffer[3] != 0:
                self.connected.set_exception(RuntimeError(f"CONNACK refused {buffer[3]}"))
                return
            self.connected.set_result(True)
            buffer = buffer[4:]
        n = len(buffer) // 4
        # PUBACKs (and PINGRESPs) only: count the 4-byte acks.
        self.acked += buffer[0 : n * 4 : 4].count(0x40)
        self.buffer = buffer[n * 4 :]
        if self.args.qos and not self.stopping:
            self.fill()

    def fill(self) -> None:
        window = self.args.window
        missing = window - (self.sent - self.acked)
        if missing <= 0:
            return
        head, tail = self.q1_head, self.q1_tail
        parts = []
        next_id = self.next_id
        for _ in range(missing):
            parts.append(head + next_id.to_bytes(2, "big") + tail)
            next_id = next_id % 65535 + 1
        self.next_id = next_id
        self.sent += missing
        self.transport.write(b"".join(parts))

    async def run_qos0(self, deadline: float) -> None:
        chunk = self.chunk
        batch = self.args.batch
        while time.time() < deadline:
            await self.writable.wait()
            self.transport.write(chunk)
            self.sent += batch

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.connected.done():
            self.connected.set_exception(RuntimeError("connection lost before CONNACK"))
        if not self.done.done():
            self.done.set_result(True)


async def run_pub(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    publishers = []
    for i in range(args.connections):
        done = loop.create_future()
        publisher = Publisher(args, i, done)
        await loop.create_connection(functools.partial(_same, publisher), args.host, args.port)
        publishers.append(publisher)
    await asyncio.gather(*(p.connected for p in publishers))
    cpu0 = cpu_seconds()
    start = time.time()
    deadline = start + args.duration
    emit(started=start)
    if args.qos:
        for p in publishers:
            p.fill()
        while time.time() < deadline:
            await asyncio.sleep(0.05)
        for p in publishers:
            p.stopping = True
        # Let the window drain (acks of what is in flight).
        limit = time.time() + 10
        while any(p.acked < p.sent for p in publishers) and time.time() < limit:
            await asyncio.sleep(0.05)
    else:
        await asyncio.gather(*(p.run_qos0(deadline) for p in publishers))
    end = time.time()
    emit(
        sent=sum(p.sent for p in publishers),
        acked=sum(p.acked for p in publishers),
        start=start,
        end=end,
        cpu=cpu_seconds() - cpu0,
    )
    for p in publishers:
        p.transport.close()


# --- Idle connections (``idle``): many connections held by one process ---------------------
#
# The generator must not be what limits the connect rate: it drives non-blocking sockets on
# one epoll directly (no asyncio transport per connection), binds each socket to one of many
# loopback source addresses with IP_BIND_ADDRESS_NO_PORT (the kernel then picks the local port
# at connect time, unique per (source, destination) 4-tuple, so ports do not run out at
# 28,000 per process and bind never fails with EADDRINUSE), keeps up to ``--inflight`` CONNECTs
# open at once, optionally paces new connects (``--rate``), and retries a refused, reset or
# timed-out connect after an exponential backoff with full jitter, as a device would.

IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
CONNACK_OK = b"\x20\x02\x00\x00"
PINGRESP = b"\xd0\x00"
# Loopback source addresses handed to the generators: 127.2.0.1 onwards (127.0.0.1 stays the
# machine's; addresses ending in .0 or .255 are skipped).
SOURCE_BASE = (127 << 24) | (2 << 16)


def source_addresses(first: int, count: int) -> list[str]:
    """``count`` loopback source addresses starting at the ``first``-th of 127.2.0.1,
    127.2.0.2, … (last octet 1 to 254 only); the k-th generator takes its own slice."""
    out = []
    for index in range(first, first + count):
        block, offset = divmod(index, 254)
        value = SOURCE_BASE + block * 256 + offset + 1
        if value >> 24 != 127:
            raise ValueError("out of loopback addresses")
        out.append(socket.inet_ntoa(value.to_bytes(4, "big")))
    return out


def addresses_needed(connections: int, per_address: int = 10_000) -> int:
    """Source addresses for ``connections`` to one destination: at most ``per_address`` each
    (well below the 28,232 ephemeral ports of a (source, destination) pair)."""
    return max(1, -(-connections // per_address))


def backoff_delay(
    attempt: int, base: float = 0.5, cap: float = 30.0, rng: random.Random | None = None
) -> float:
    """Seconds to wait before retry ``attempt`` (1 for the first retry): "full jitter",
    uniform in [0, min(cap, base * 2**(attempt - 1))], so that refused devices do not all
    come back at the same moment."""
    ceiling = min(cap, base * 2 ** max(0, attempt - 1))
    return (rng or random).uniform(0.0, ceiling)


def percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


CONNECTING, WAITING = 1, 2


class Holder:
    """Opens ``count`` MQTT connections and holds them (one process, one epoll)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.host = args.host
        self.port = args.port
        self.sources = [s for s in args.source.split(",") if s]
        self.epoll = select.epoll()
        self.rng = random.Random(args.seed if args.seed is not None else os.getpid())
        # fd -> [socket, index, attempt, phase, started, buffer]
        self.inflight: dict[int, list[Any]] = {}
        self.held: dict[int, socket.socket] = {}
        self.retries: list[tuple[float, int, int]] = []  # (due, index, attempt)
        self.failures: dict[str, int] = {}
        self.latencies: list[float] = []
        self.attempts = 0
        self.gave_up = 0
        self.closed_by_peer = 0
        self.next_index = args.start
        self.last_index = args.start + args.count
        self.started_new = 0
        self.pongs: dict[int, int] = {}
        self.stdin: int | None = None  # watched while connecting when set (run_idle)

    def packet(self, index: int) -> bytes:
        a = self.args
        ident = f"{a.user}{index}"
        return connect_packet(
            f"{a.client_prefix}{index}",
            ident if a.password is not None else None,
            a.password,
            keepalive=a.keepalive,
        )

    def open(self, index: int, attempt: int) -> None:
        self.attempts += 1
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            sock.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((self.sources[index % len(self.sources)], 0))
            code = sock.connect_ex((self.host, self.port))
        except OSError as exc:
            sock.close()
            self.fail(None, index, attempt, errno.errorcode.get(exc.errno or 0, str(exc)))
            return
        if code not in (0, errno.EINPROGRESS):
            sock.close()
            self.fail(None, index, attempt, errno.errorcode.get(code, str(code)))
            return
        fd = sock.fileno()
        self.inflight[fd] = [sock, index, attempt, CONNECTING, time.monotonic(), b""]
        self.epoll.register(fd, select.EPOLLOUT)

    def fail(self, fd: int | None, index: int, attempt: int, reason: str) -> None:
        if fd is not None:
            entry = self.inflight.pop(fd)
            with contextlib.suppress(OSError):
                self.epoll.unregister(fd)
            entry[0].close()
        self.failures[reason] = self.failures.get(reason, 0) + 1
        if attempt + 1 >= self.args.attempts:
            self.gave_up += 1
            return
        delay = backoff_delay(attempt + 1, self.args.backoff_base, self.args.backoff_cap, self.rng)
        heapq.heappush(self.retries, (time.monotonic() + delay, index, attempt + 1))

    def on_event(self, fd: int, events: int) -> None:
        entry = self.inflight.get(fd)
        if entry is None:
            sock = self.held.get(fd)
            if sock is not None:  # data or a close on a held connection
                self.on_held(fd, sock)
            return
        sock, index, attempt, phase, began, buffer = entry
        if phase == CONNECTING:
            error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if error:
                self.fail(fd, index, attempt, errno.errorcode.get(error, str(error)))
                return
            try:
                sock.send(self.packet(index))
            except OSError as exc:
                self.fail(fd, index, attempt, errno.errorcode.get(exc.errno or 0, str(exc)))
                return
            entry[3] = WAITING
            self.epoll.modify(fd, select.EPOLLIN)
            return
        try:
            data = sock.recv(64)
        except BlockingIOError:
            return
        except OSError as exc:
            self.fail(fd, index, attempt, errno.errorcode.get(exc.errno or 0, str(exc)))
            return
        if not data:
            self.fail(fd, index, attempt, "closed before CONNACK")
            return
        buffer += data
        if len(buffer) < 4:
            entry[5] = buffer
            return
        if buffer[:4] != CONNACK_OK:
            self.fail(fd, index, attempt, f"CONNACK {buffer[:4].hex()}")
            return
        del self.inflight[fd]
        self.held[fd] = sock
        self.latencies.append(time.monotonic() - began)

    def on_held(self, fd: int, sock: socket.socket) -> None:
        try:
            data = sock.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            self.pongs[fd] = self.pongs.get(fd, 0) + data.count(PINGRESP)
            return
        self.closed_by_peer += 1
        del self.held[fd]
        with contextlib.suppress(OSError):
            self.epoll.unregister(fd)
        sock.close()

    def expire(self, now: float) -> None:
        limit = now - self.args.timeout
        for fd, entry in list(self.inflight.items()):
            if entry[4] < limit:
                self.fail(fd, entry[1], entry[2], "timeout")

    def may_start(self, now: float, began: float) -> bool:
        if len(self.inflight) >= self.args.inflight:
            return False
        rate = self.args.rate
        return not rate or self.started_new < rate * (now - began) + 1

    def on_stdin_while_connecting(self) -> None:
        """The bench gave up (``stop`` or its end of the pipe closed): stop at once."""
        assert self.stdin is not None
        chunk = os.read(self.stdin, 4096)
        if not chunk or b"stop" in chunk:
            self.close()
            raise SystemExit(1)

    def connect_all(self) -> dict[str, Any]:
        began = time.monotonic()
        wall = time.time()
        cpu0 = cpu_seconds()
        last_expire = last_report = began
        poll = self.epoll.poll
        while self.inflight or self.retries or self.next_index < self.last_index:
            now = time.monotonic()
            while self.retries and self.retries[0][0] <= now and self.may_start(now, began):
                _, index, attempt = heapq.heappop(self.retries)
                self.open(index, attempt)
            while self.next_index < self.last_index and self.may_start(now, began):
                self.open(self.next_index, 0)
                self.next_index += 1
                self.started_new += 1
            wait = 0.2
            if self.retries:
                wait = min(wait, max(0.0, self.retries[0][0] - now))
            if self.args.rate and self.next_index < self.last_index:
                wait = min(wait, 1.0 / self.args.rate)
            for fd, events in poll(wait, 4096):
                if fd == self.stdin:
                    self.on_stdin_while_connecting()
                else:
                    self.on_event(fd, events)
            now = time.monotonic()
            if now - last_expire > 0.5:
                self.expire(now)
                last_expire = now
            if now - last_report > 10:
                last_report = now
                print(
                    f"loadgen {self.sources[0]}…: {len(self.held)} held, {len(self.inflight)}"
                    f" in flight, {len(self.retries)} waiting to retry,"
                    f" {sum(self.failures.values())} failed attempts"
                    f" {sorted(self.failures.items(), key=lambda kv: -kv[1])[:3]}",
                    file=sys.stderr,
                    flush=True,
                )
        end = time.monotonic()
        return {
            "held": len(self.held),
            "failures": self.failures,
            "attempts": self.attempts,
            "gave_up": self.gave_up,
            "start": wall,
            "end": wall + (end - began),
            "connects_per_second": len(self.held) / (end - began) if end > began else 0.0,
            "p50_ms": _ms(percentile(self.latencies, 0.5)),
            "p99_ms": _ms(percentile(self.latencies, 0.99)),
            "cpu": round(cpu_seconds() - cpu0, 3),
            "rss_kb": rss_kb(),
            "sources": len(self.sources),
        }

    def watch(self, seconds: float) -> None:
        """Serve events on the held connections (closes by the broker) for ``seconds``."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            for fd, events in self.epoll.poll(min(left, 0.5), 4096):
                self.on_event(fd, events)

    def ping(self, timeout: float) -> dict[str, Any]:
        """PINGREQ on every held connection; counts the PINGRESPs that come back."""
        cpu0 = cpu_seconds()
        self.pongs = {}
        sent = 0
        for fd, sock in list(self.held.items()):
            try:
                sock.send(PINGREQ)
                sent += 1
            except OSError:
                self.on_held(fd, sock)
        deadline = time.monotonic() + timeout
        while sum(self.pongs.values()) < sent and time.monotonic() < deadline:
            for fd, events in self.epoll.poll(0.2, 4096):
                self.on_event(fd, events)
        answered = sum(1 for fd in self.held if self.pongs.get(fd))
        return {
            "pinged": sent,
            "pongs": answered,
            "held": len(self.held),
            "closed_by_peer": self.closed_by_peer,
            "ping_cpu": round(cpu_seconds() - cpu0, 3),
            "rss_kb": rss_kb(),
        }

    def close(self) -> None:
        for sock in self.held.values():
            sock.close()
        for entry in self.inflight.values():
            entry[0].close()
        self.held.clear()
        self.inflight.clear()
        self.epoll.close()


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(1000 * seconds, 2)


def rss_kb() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def run_idle(args: argparse.Namespace) -> None:
    """Connect, report, then obey commands on stdin: ``ping`` (PINGREQ on every connection,
    report PINGRESPs), ``stop`` or end of input (report closes by the broker, close all)."""
    holder = Holder(args)
    stdin = holder.stdin = sys.stdin.fileno()
    holder.epoll.register(stdin, select.EPOLLIN)
    emit(**holder.connect_all())
    lines = b""
    try:
        while True:
            command = None
            for fd, _events in holder.epoll.poll(1.0, 4096):
                if fd == stdin:
                    chunk = os.read(stdin, 4096)
                    if not chunk:
                        command = "stop"
                        break
                    lines += chunk
                    if b"\n" in lines:
                        line, _, lines = lines.partition(b"\n")
                        command = line.decode().strip()
                else:
                    holder.on_event(fd, _events)
            if command is None:
                continue
            if command.startswith("ping"):
                emit(**holder.ping(float(command.split()[1]) if " " in command else 60.0))
            else:
                emit(closed_by_peer=holder.closed_by_peer, held=len(holder.held))
                break
    finally:
        holder.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.edge_loadgen")
    parser.add_argument("mode", choices=("sub", "pub", "idle"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--topic", default="bench/t")
    parser.add_argument("--qos", type=int, default=0)
    parser.add_argument("--payload", type=int, default=64)
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--window", type=int, default=100)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument(
        "--source", default="127.0.0.1", help="source addresses, comma-separated (idle)"
    )
    parser.add_argument("--inflight", "--concurrency", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=0.0, help="new connects/s (0: no pacing)")
    parser.add_argument("--timeout", type=float, default=30.0, help="CONNECT to CONNACK, s")
    parser.add_argument("--attempts", type=int, default=8)
    parser.add_argument("--backoff-base", type=float, default=0.5)
    parser.add_argument("--backoff-cap", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--user", default="bench-dev-")
    parser.add_argument("--password", default=None)
    parser.add_argument("--client-prefix", default="bench-idle-")
    parser.add_argument("--keepalive", type=int, default=600)
    args = parser.parse_args()
    if args.mode == "idle":
        run_idle(args)
        return
    asyncio.run(run_sub(args) if args.mode == "sub" else run_pub(args))


if __name__ == "__main__":
    main()
