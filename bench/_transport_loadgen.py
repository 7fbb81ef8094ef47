"""Device load generator for ``bench.device_transports``: the same ``datas`` message sent as
HTTP posts (keep-alive, pipelined), CoAP Confirmable POSTs (raw UDP, our own codec) or MQTT
QoS 1 publishes (raw TCP, MQTT 3.1.1), every answer awaited and timed.

Each device keeps ``--window`` messages unanswered and sends the next as each answer comes
back. Requests are encoded before the clock starts and parsed with slices, so that this
process (several run side by side) is not what limits the edge being measured.

    python -m bench._transport_loadgen http|coap|mqtt --port P --devices d1,d2 --secret S

Protocol with the bench (JSON lines on stdout, commands on stdin): after connecting and one
warm-up message per device (registry and secret loaded, as a CONNECT does for MQTT) it prints
``{"ready": …}``; ``go`` starts ``--duration`` seconds of sending; what is in flight then is
awaited (at most 30 s) and the figures are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import functools
import json
import os
import random
import sys
import time
from collections import deque
from typing import Any, TypeVar

from bench.edge_loadgen import _str, connect_packet, cpu_seconds, emit, read_vbi, vbi
from edge.coap.message import Code, OptionNumber, Type, build, encode, option

# A CoAP request not answered (nor acknowledged) after this long is sent again with the same
# message id: the edge deduplicates it and repeats its answer (RFC 7252 section 4.2).
COAP_RETRANSMIT_S = 2.0
# The edge's success answer on each transport.
ACCEPTED = {"http": "200", "coap": "2.04", "mqtt": "puback"}
P = TypeVar("P")


def datas(device: str) -> bytes:
    """The message every transport sends: one service report of two property values."""
    services = [{"serviceCode": "env", "data": {"temperature": 21.5, "humidity": 40}}]
    return json.dumps(
        {"devices": [{"deviceId": device, "services": services}]}, separators=(",", ":")
    ).encode()


class Device:
    """What the three protocols share: the window, send times, answers and latencies."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.sent = 0
        self.answered = 0
        self.statuses: dict[str, int] = {}
        self.latencies = run.latencies
        self.idle = asyncio.get_running_loop().create_future()

    def answer(self, status: str, sent_at: float, now: float) -> None:
        """Latencies are those of accepted messages only (a refusal may come much faster)."""
        self.answered += 1
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if self.run.measuring and status == self.run.accepted:
            self.latencies.append(int((now - sent_at) * 1e6))

    def refill(self) -> None:
        """Send as many as the window allows (nothing once the run is over, nor past
        ``--count``)."""
        missing = self.run.window - (self.sent - self.answered)
        if self.run.count:
            missing = min(missing, self.run.count - self.sent)
        if self.run.sending and missing > 0:
            self.send(missing)
        elif self.sent == self.answered and not self.idle.done():
            self.idle.set_result(None)

    def send(self, count: int) -> None:
        raise NotImplementedError


class Run:
    def __init__(self, args: argparse.Namespace) -> None:
        self.window: int = args.window
        self.count: int = args.count
        self.accepted = ACCEPTED[args.transport]
        # Off until ``go``: the warm-up sends its one message per device by itself.
        self.sending = False
        self.measuring = False
        self.latencies: list[int] = []


# --- HTTP -------------------------------------------------------------------------------------


class HttpDevice(Device, asyncio.Protocol):
    """One keep-alive connection; ``window`` requests pipelined on it."""

    def __init__(self, run: Run, device: str, secret: str) -> None:
        super().__init__(run)
        body = datas(device)
        credentials = base64.b64encode(f"{device}:{secret}".encode()).decode()
        self.request = (
            f"POST /v1/devices/{device}/datas HTTP/1.1\r\nHost: edge\r\n"
            f"Authorization: Basic {credentials}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        self.sent_at: deque[float] = deque()
        self.buffer = b""
        self.transport: Any = None
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def send(self, count: int) -> None:
        now = time.perf_counter()
        self.sent_at.extend([now] * count)
        self.sent += count
        self.transport.write(self.request * count)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        now = time.perf_counter()
        pos = 0
        while True:
            end = buffer.find(b"\r\n\r\n", pos)
            if end < 0:
                break
            head = buffer[pos:end].lower()
            mark = head.find(b"content-length:")
            length = 0
            if mark >= 0:
                stop = head.find(b"\r\n", mark)
                length = int(head[mark + 15 : stop if stop >= 0 else len(head)])
            if len(buffer) < end + 4 + length:
                break
            self.answer(head[9:12].decode(), self.sent_at.popleft(), now)
            pos = end + 4 + length
        self.buffer = buffer[pos:]
        self.refill()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)
        if not self.idle.done():
            self.idle.set_exception(RuntimeError(f"HTTP connection closed: {exc}"))


# --- MQTT -------------------------------------------------------------------------------------


class MqttDevice(Device, asyncio.Protocol):
    """One MQTT 3.1.1 connection with the device's credentials; QoS 1 publishes, each PUBACK
    matched to its packet id."""

    def __init__(self, run: Run, device: str, secret: str) -> None:
        super().__init__(run)
        self.connect = connect_packet(device, device, secret, keepalive=300)
        body = datas(device)
        topic = _str(f"/v1/devices/{device}/datas".encode())
        self.head = bytes((0x32,)) + vbi(len(topic) + 2 + len(body)) + topic
        self.body = body
        self.sent_at: dict[int, float] = {}
        self.next_id = 1
        self.buffer = b""
        self.transport: Any = None
        self.connected = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(self.connect)

    def send(self, count: int) -> None:
        now = time.perf_counter()
        parts = []
        next_id = self.next_id
        for _ in range(count):
            self.sent_at[next_id] = now
            parts.append(self.head + next_id.to_bytes(2, "big") + self.body)
            next_id = next_id % 65535 + 1
        self.next_id = next_id
        self.sent += count
        self.transport.write(b"".join(parts))

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        now = time.perf_counter()
        pos = 0
        while len(buffer) - pos >= 2:
            kind = buffer[pos] & 0xF0
            header = read_vbi(buffer, pos + 1)
            if header is None:
                break
            length, i = header
            if len(buffer) < i + length:
                break
            if kind == 0x20:  # CONNACK
                if buffer[i + 1] != 0:
                    self.connected.set_exception(RuntimeError(f"CONNACK {buffer[i + 1]}"))
                else:
                    self.connected.set_result(None)
            elif kind == 0x40:  # PUBACK
                packet_id = int.from_bytes(buffer[i : i + 2], "big")
                self.answer("puback", self.sent_at.pop(packet_id), now)
            pos = i + length
        self.buffer = buffer[pos:]
        if self.connected.done():
            self.refill()

    def connection_lost(self, exc: Exception | None) -> None:
        for future in (self.connected, self.idle):
            if not future.done():
                future.set_exception(RuntimeError(f"MQTT connection closed: {exc}"))


# --- CoAP -------------------------------------------------------------------------------------


class CoapDevice(Device, asyncio.DatagramProtocol):
    """One UDP socket (one peer address for the edge); Confirmable POSTs with the secret in
    ``p=``. Answers come piggybacked on the ACK, or (when storing takes longer than the edge
    waits) as an empty ACK first and a Confirmable response later, which is acknowledged."""

    def __init__(self, run: Run, device: str, secret: str) -> None:
        super().__init__(run)
        template = encode(
            build(
                Type.CON,
                Code.POST,
                0,
                bytes(8),
                [
                    *(option(OptionNumber.URI_PATH, p) for p in ("v1", "devices", device, "datas")),
                    option(OptionNumber.CONTENT_FORMAT, 50),
                    option(OptionNumber.URI_QUERY, f"p={secret}"),
                ],
                datas(device),
            )
        )
        self.first, self.rest = template[:2], template[12:]
        # A new socket may get the port of one closed a moment ago, whose message ids the edge
        # still remembers (247 s) and would answer from its deduplication cache: message ids
        # start at random and tokens carry a random prefix, as RFC 7252 asks of a client.
        self.salt = os.urandom(4)
        self.mid = random.randrange(0x10000)
        # token -> [sent at, datagram, acknowledged (empty ACK), next retransmission at]
        self.pending: dict[bytes, list[Any]] = {}
        self.counter = 0
        self.retransmitted = 0
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def send(self, count: int) -> None:
        now = time.perf_counter()
        for _ in range(count):
            self.counter += 1
            self.mid = (self.mid + 1) & 0xFFFF
            token = self.salt + self.counter.to_bytes(4, "big")
            datagram = self.first + self.mid.to_bytes(2, "big") + token + self.rest
            self.pending[token] = [now, datagram, False, now + COAP_RETRANSMIT_S]
            self.transport.sendto(datagram)
        self.sent += count

    def datagram_received(self, data: bytes, addr: Any) -> None:
        kind, tkl, code = data[0] >> 4 & 3, data[0] & 0x0F, data[1]
        if kind == Type.CON:  # a separate response: acknowledge it
            self.transport.sendto(bytes((0x60, 0)) + data[2:4])
        token = data[4 : 4 + tkl]
        waiting = self.pending.get(token)
        if waiting is None:
            return
        if code == 0:  # empty ACK: the answer comes later, stop retransmitting
            waiting[2] = True
            return
        del self.pending[token]
        self.answer(f"{code >> 5}.{code & 0x1F:02d}", waiting[0], time.perf_counter())
        self.refill()

    def retransmit(self) -> None:
        now = time.perf_counter()
        for waiting in self.pending.values():
            if not waiting[2] and waiting[3] < now:
                waiting[3] = now + COAP_RETRANSMIT_S
                self.retransmitted += 1
                self.transport.sendto(waiting[1])


# --- the run ----------------------------------------------------------------------------------


def same(protocol: P) -> P:
    """The protocol factory of one already built protocol object."""
    return protocol


async def open_devices(args: argparse.Namespace, run: Run) -> list[Any]:
    loop = asyncio.get_running_loop()
    devices: list[Any] = []
    for name in args.devices.split(","):
        if args.transport == "coap":
            coap = CoapDevice(run, name, args.secret)
            await loop.create_datagram_endpoint(
                functools.partial(same, coap), remote_addr=(args.host, args.port)
            )
            devices.append(coap)
            continue
        device: HttpDevice | MqttDevice = (
            HttpDevice(run, name, args.secret)
            if args.transport == "http"
            else MqttDevice(run, name, args.secret)
        )
        await loop.create_connection(functools.partial(same, device), args.host, args.port)
        if isinstance(device, MqttDevice):
            await asyncio.wait_for(device.connected, 60)
        devices.append(device)
    return devices


async def until_idle(devices: list[Any], timeout: float) -> None:
    """Every device's messages answered (CoAP retransmitting what the edge did not answer)."""
    deadline = time.monotonic() + timeout
    for device in devices:
        device.refill()  # resolves ``idle`` at once when nothing is in flight
    while not all(d.idle.done() for d in devices) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        for device in devices:
            if isinstance(device, CoapDevice):
                device.retransmit()
    for device in devices:
        if device.idle.done() and device.idle.exception() is not None:
            raise device.idle.exception()  # type: ignore[misc]


def all_sent(devices: list[Any], run: Run) -> bool:
    """Every device sent its ``--count`` and has every answer."""
    return bool(run.count) and all(d.sent >= run.count and d.answered == d.sent for d in devices)


def restart(devices: list[Any]) -> None:
    """Before a phase (warm-up, timed run): statuses counted afresh, a new ``idle`` to wait
    for (a CONNACK may have resolved the last one)."""
    loop = asyncio.get_running_loop()
    for device in devices:
        device.idle = loop.create_future()
        device.statuses = {}


async def main_async(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    run = Run(args)
    devices = await open_devices(args, run)
    # Warm-up: one message per device, answered before the clock starts.
    restart(devices)
    for device in devices:
        device.send(1)
    await until_idle(devices, 60)
    warm = {"sent": sum(d.sent for d in devices), "answered": sum(d.answered for d in devices)}
    emit(ready=True, warmup=warm)
    go = asyncio.Event()
    loop.add_reader(sys.stdin.fileno(), go.set)
    await go.wait()
    loop.remove_reader(sys.stdin.fileno())
    before_sent, before_answered = warm["sent"], warm["answered"]
    restart(devices)
    cpu0 = cpu_seconds()
    run.sending, run.measuring = True, True
    start = time.time()
    for device in devices:
        device.refill()
    while time.time() - start < args.duration and not all_sent(devices, run):
        await asyncio.sleep(0.05)
        for device in devices:
            if isinstance(device, CoapDevice):
                device.retransmit()
    run.sending = False
    await until_idle(devices, 30)
    end = time.time()
    statuses: dict[str, int] = {}
    for device in devices:
        for status, n in device.statuses.items():
            statuses[status] = statuses.get(status, 0) + n
    emit(
        start=start,
        end=end,
        sent=sum(d.sent for d in devices) - before_sent,
        answered=sum(d.answered for d in devices) - before_answered,
        statuses=statuses,
        retransmitted=sum(getattr(d, "retransmitted", 0) for d in devices),
        latencies_us=run.latencies,
        cpu=cpu_seconds() - cpu0,
    )
    for device in devices:
        device.transport.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench._transport_loadgen")
    parser.add_argument("transport", choices=("http", "coap", "mqtt"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--devices", required=True, help="comma-separated identifiers")
    parser.add_argument("--secret", required=True)
    parser.add_argument("--window", type=int, default=8)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument(
        "--count", type=int, default=0, help="messages per device at most (0: no limit)"
    )
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
