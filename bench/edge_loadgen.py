"""MQTT load generator for the edge benchmarks: raw asyncio sockets and pre-encoded MQTT 3.1.1
packets, so that the generator is not what limits the measurement.

Run as a subprocess by ``bench.edge_throughput`` and ``bench.edge_connections``; it prints one
JSON object per line on stdout and reads commands (``stop``) from stdin.

    python -m bench.edge_loadgen sub  --port P --topic T --qos Q --connections K
    python -m bench.edge_loadgen pub  --port P --topic T --qos Q --connections K --duration S
    python -m bench.edge_loadgen idle --port P --count N --source 127.0.0.2 --user dev- ...
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
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
        await loop.create_connection(lambda c=counter: c, args.host, args.port)
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
        await loop.create_connection(lambda p=publisher: p, args.host, args.port)
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


class Idle(asyncio.Protocol):
    __slots__ = ("done", "transport")

    def __init__(self, done: asyncio.Future) -> None:
        self.done = done
        self.transport: Any = None

    def data_received(self, data: bytes) -> None:
        if not self.done.done():
            if len(data) >= 4 and data[0] == 0x20 and data[3] == 0:
                self.done.set_result(True)
            else:
                self.done.set_exception(RuntimeError(f"refused: {data[:4].hex()}"))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(RuntimeError(f"connection lost: {exc}"))


async def run_idle(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(args.concurrency)
    held: list[Any] = []
    failures: dict[str, int] = {}
    latencies: list[float] = []

    async def one(index: int) -> None:
        ident = f"{args.user}{index}"
        packet = connect_packet(
            f"{args.client_prefix}{index}",
            ident if args.password is not None else None,
            args.password,
            keepalive=args.keepalive,
        )
        for attempt in range(6):
            async with gate:
                done = loop.create_future()
                began = time.perf_counter()
                try:
                    transport, _ = await loop.create_connection(
                        lambda d=done: Idle(d), args.host, args.port, local_addr=(args.source, 0)
                    )
                    transport.write(packet)
                    await asyncio.wait_for(done, 30)
                except (OSError, RuntimeError, TimeoutError) as exc:
                    key = type(exc).__name__ + ": " + str(exc)[:60]
                    failures[key] = failures.get(key, 0) + 1
                    await asyncio.sleep(0.2 * (attempt + 1))
                    continue
                latencies.append(time.perf_counter() - began)
                held.append(transport)
                return

    async def progress() -> None:
        while True:
            await asyncio.sleep(10)
            print(
                f"loadgen {args.source}: {len(held)} held, {sum(failures.values())} failures",
                file=sys.stderr,
                flush=True,
            )

    start = time.time()
    reporter = asyncio.ensure_future(progress())
    await asyncio.gather(*(one(args.start + i) for i in range(args.count)))
    reporter.cancel()
    end = time.time()
    latencies.sort()
    emit(
        held=len(held),
        failures=failures,
        start=start,
        end=end,
        connects_per_second=len(held) / (end - start) if end > start else 0.0,
        p50_ms=1000 * latencies[len(latencies) // 2] if latencies else None,
        p99_ms=1000 * latencies[int(len(latencies) * 0.99)] if latencies else None,
    )
    stop = asyncio.Event()
    loop.add_reader(sys.stdin.fileno(), stop.set)
    await stop.wait()
    closed = sum(1 for t in held if t.is_closing())
    emit(closed_by_peer=closed)
    for transport in held:
        transport.abort()


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
    parser.add_argument("--source", default="127.0.0.1")
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--user", default="bench-dev-")
    parser.add_argument("--password", default=None)
    parser.add_argument("--client-prefix", default="bench-idle-")
    parser.add_argument("--keepalive", type=int, default=600)
    args = parser.parse_args()
    runner = {"sub": run_sub, "pub": run_pub, "idle": run_idle}[args.mode]
    asyncio.run(runner(args))


if __name__ == "__main__":
    main()
