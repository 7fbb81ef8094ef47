"""Mutation fuzzing of every decoder that reads bytes from outside the platform.

Each target takes one input and either accepts it or refuses it with the error type its
decoder documents; any other exception is a finding. The incremental decoders (MQTT, WebSocket,
HTTP requests, JSON lines, binary frames) are also checked against themselves: the same bytes
fed whole and split at random boundaries give the same packets (or the same error), and a
decoded MQTT packet or CoAP message re-encodes to the bytes it came from. The CoAP exchange
layer reads a script of datagrams from three peers on a fake clock and must stay within its
budgets, its counters matching what it holds.

    python -m tests.security.fuzzing --cases 1000000          # make fuzz
    python -m tests.security.fuzzing --cases 2000 --target mqtt

The generator is deterministic for a seed, so a failure is reproduced by rerunning with the
seed and case number it prints. `tests/security/test_fuzz_decoders.py` runs every target small.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import os
import random
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

INTERESTING = (b"\x00", b"\xff", b"\x7f", b"\x80", b"\xff\xff\xff\x7f", b"\xff\xff\xff\xff\x7f",
               b"\x00\x00", b"\xc0\x80", b"\xed\xa0\x80", b"#", b"+", b"/", b"\r\n\r\n", b'"',
               b"{", b"[", b"1e309", b"-0", b"9" * 40, b"\\u0000")


class Finding(AssertionError):
    """A decoder broke its contract on one input."""


@dataclass
class Target:
    name: str
    seeds: list[bytes]
    check: Callable[[bytes, random.Random], None]
    # Slow targets (spreadsheets) run this fraction of the cases.
    weight: float = 1.0
    max_size: int = 4096


def mutate(data: bytes, rng: random.Random, seeds: list[bytes], max_size: int) -> bytes:
    """One input derived from ``data`` by a few random edits (AFL's havoc stage, in small)."""
    buf = bytearray(data)
    for _ in range(rng.choice((1, 1, 2, 3, 5, 8))):
        op = rng.randrange(9)
        if op == 0 and buf:  # flip a bit
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 1 and buf:  # replace a byte
            buf[rng.randrange(len(buf))] = rng.randrange(256)
        elif op == 2:  # insert random bytes
            i = rng.randrange(len(buf) + 1)
            buf[i:i] = rng.randbytes(rng.choice((1, 2, 4, 16)))
        elif op == 3 and buf:  # delete a run
            i = rng.randrange(len(buf))
            del buf[i : i + rng.choice((1, 2, 4, 16))]
        elif op == 4:  # an interesting value
            i = rng.randrange(len(buf) + 1)
            value = rng.choice(INTERESTING)
            if rng.random() < 0.5:
                buf[i:i] = value
            else:
                buf[i : i + len(value)] = value
        elif op == 5 and buf:  # truncate
            del buf[rng.randrange(len(buf)) :]
        elif op == 6:  # splice with another seed
            other = rng.choice(seeds)
            cut = rng.randrange(len(buf) + 1)
            buf = buf[:cut] + other[rng.randrange(len(other) + 1) :]
        elif op == 7 and buf:  # duplicate a run
            i = rng.randrange(len(buf))
            j = min(len(buf), i + rng.choice((2, 8, 64)))
            buf[i:i] = buf[i:j] * rng.choice((2, 8, 100))
        elif op == 8 and len(buf) > 1:  # +/- on a byte (lengths, counters)
            i = rng.randrange(len(buf))
            buf[i] = (buf[i] + rng.choice((-1, 1, 16, -16))) & 0xFF
    return bytes(buf[:max_size])


def split_at_random(data: bytes, rng: random.Random) -> Iterator[bytes]:
    i = 0
    while i < len(data):
        step = rng.choice((1, 2, 3, 7, 64, len(data)))
        yield data[i : i + step]
        i += step


# MQTT ---------------------------------------------------------------------------------------

def _mqtt_seeds() -> list[bytes]:
    from edge.mqtt import codec
    from edge.mqtt.packets import (
        MQTT_3_1_1,
        MQTT_5,
        Auth,
        Connect,
        Disconnect,
        PingReq,
        PubAck,
        Publish,
        PubRel,
        Subscribe,
        Subscription,
        Unsubscribe,
        Will,
    )
    from edge.mqtt.properties import Properties

    props = Properties(session_expiry_interval=60, receive_maximum=10,
                       user_properties=(("k", "v"), ("a", "b")), topic_alias_maximum=5,
                       authentication_method="SCRAM", authentication_data=b"\x01\x02")
    seeds = []
    for level in (MQTT_3_1_1, MQTT_5):
        v5 = level == MQTT_5
        p = props if v5 else Properties()
        connect = Connect("dev-1", protocol_level=level, clean_start=False, keep_alive=30,
                          username="dev-1", password=b"secret",
                          will=Will("/v1/devices/dev-1/events", b"bye", 1, True), properties=p)
        body = [
            Publish("/v1/devices/dev-1/datas", b'{"devices":[]}', qos=1, packet_id=7,
                    properties=Properties(topic_alias=1, content_type="json",
                                          correlation_data=b"c", response_topic="r/t")
                    if v5 else Properties()),
            Publish("a/b", b"x" * 40, qos=2, retain=True, packet_id=9),
            Publish("a", b"", qos=0),
            PubAck(7), PubRel(9),
            Subscribe(3, (Subscription("/v1/devices/dev-1/#", 1),
                          Subscription("+/x/+", 2, no_local=v5, retain_handling=2 if v5 else 0)),
                      Properties(subscription_identifiers=(5,)) if v5 else Properties()),
            Unsubscribe(4, ("a/#", "b")),
            PingReq(),
            Disconnect(0x04 if v5 else 0),
        ]
        if v5:
            body.append(Auth(0x18, Properties(authentication_method="SCRAM")))
        first = codec.encode(connect, level)
        seeds.append(first)
        seeds.append(first + b"".join(codec.encode(packet, level) for packet in body))
    return seeds


def _decode_all(data_chunks: Iterator[bytes], version: int | None) -> tuple[list, str | None]:
    from edge.mqtt.codec import Decoder
    from edge.mqtt.errors import MqttError

    decoder = Decoder(version)
    packets: list = []
    try:
        for chunk in data_chunks:
            for packet in decoder.feed(chunk):
                packets.append(packet)
                if decoder.version is None and getattr(packet, "protocol_level", None):
                    decoder.version = packet.protocol_level
    except MqttError as exc:
        return packets, f"{type(exc).__name__}"
    return packets, None


def check_mqtt(data: bytes, rng: random.Random) -> None:
    from edge.mqtt import codec
    from edge.mqtt.packets import ConnAck, Connect

    whole, error = _decode_all(iter((data,)), None)
    split, split_error = _decode_all(split_at_random(data, rng), None)
    if (whole, error) != (split, split_error):
        raise Finding(f"split feeding differs: {whole!r} {error} vs {split!r} {split_error}")
    if not whole or not isinstance(whole[0], Connect):
        return
    version = whole[0].protocol_level
    for packet in whole:
        if isinstance(packet, ConnAck):
            continue
        again, again_error = _decode_all(iter((codec.encode(packet, version),)), version
                                         if not isinstance(packet, Connect) else None)
        if again_error or again != [packet]:
            raise Finding(f"{packet!r} re-encodes to {again!r} ({again_error})")


# WebSocket ----------------------------------------------------------------------------------

def _ws_seeds() -> list[bytes]:
    rng = random.Random(1)
    handshake = (b"GET /mqtt HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n"
                 b"Sec-WebSocket-Key: " + base64.b64encode(b"k" * 16) + b"\r\n\r\n")

    def frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
        from edge.transports.rfc6455 import encode_frame

        head = bytearray(encode_frame(opcode, b"", fin))
        head[1] |= 0x80
        length = len(payload)
        if length < 126:
            head[1] = 0x80 | length
            head = head[:2]
        elif length < 65536:
            head[1] = 0x80 | 126
            head = head[:2] + length.to_bytes(2, "big")
        else:
            head[1] = 0x80 | 127
            head = head[:2] + length.to_bytes(8, "big")
        mask = rng.randbytes(4)
        return bytes(head) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))

    frames = (frame(2, b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00")
              + frame(2, b"a" * 200, fin=False) + frame(0, b"b" * 10)
              + frame(9, b"ping") + frame(10, b"") + frame(8, b"\x03\xe8bye"))
    return [handshake, handshake + frames, frames, frame(2, b"z" * 70000)]


def check_websocket(data: bytes, rng: random.Random) -> None:
    from edge.transports.rfc6455 import FrameDecoder, FrameError, HandshakeError, parse_handshake

    try:
        handshake = parse_handshake(data)
    except HandshakeError:
        handshake = None
    rest = data[handshake.consumed :] if handshake else data

    def run(chunks: Iterator[bytes]) -> tuple[list, int | None]:
        decoder = FrameDecoder(max_frame=1 << 16)
        events: list = []
        try:
            for chunk in chunks:
                events.extend(decoder.feed(chunk))
                if events and events[-1][0] == "close":
                    break
        except FrameError as exc:
            return events, exc.code
        return events, None

    whole = run(iter((rest,)))
    split = run(split_at_random(rest, rng))
    # A decoder that refuses a frame drops what came before it in the same read (the
    # connection closes): only the error is compared then.
    if whole[1] is not None or split[1] is not None:
        if whole[1] != split[1]:
            raise Finding(f"split feeding ends in close {split[1]}, whole in {whole[1]}")
    elif _joined(whole) != _joined(split):
        raise Finding(f"split feeding differs: {whole!r} vs {split!r}")


def _joined(result: tuple[list, int | None]) -> tuple:
    """Data events concatenated: how a payload is chunked across frames is not a difference."""
    events, code = result
    out: list = []
    for event in events:
        if event[0] == "data" and out and out[-1][0] == "data":
            out[-1] = ("data", out[-1][1] + event[1])
        else:
            out.append(event)
    return tuple(out), code


# The ThingLinks envelope ----------------------------------------------------------------------

class _Keys:
    sign_key = "sign-key-123"
    encrypt_key = "0123456789abcdef"
    encrypt_vector = "fedcba9876543210"


def _envelope_seeds() -> list[bytes]:
    from edge.codecs.thinglinks import CIPHER_AES, data_sign, encrypt_body

    body = {"devices": [{"deviceId": "dev-1", "services": [
        {"serviceCode": "env", "data": {"temperature": 21.5, "humidity": 40},
         "eventTime": 1700000000000}]}]}
    text = json.dumps(body)
    head = {"mid": 12, "timeStamp": 1700000000000, "cipherFlag": 0}
    signed = {"head": head, "dataBody": body,
              "dataSign": data_sign(json.dumps(body, separators=(",", ":")), head["timeStamp"],
                                    _Keys.sign_key)}
    encrypted = {"head": {**head, "cipherFlag": CIPHER_AES},
                 "dataBody": encrypt_body(text, CIPHER_AES, _Keys())}
    return [text.encode(), json.dumps(signed).encode(), json.dumps(encrypted).encode(),
            b'{"deviceIdentification":"dev-2","status":0}', b'[1,2,{"a":[{}]}]']


ENVELOPE_TOPICS = ("/v1/devices/dev-1/datas", "/v1/devices/dev-1/events",
                   "/v1/devices/dev-1/commandResponse", "/v1/devices/dev-1/shadow/update",
                   "/v1/devices/dev-1/topo/add", "/v1/devices/dev-1/other")


def check_envelope(data: bytes, rng: random.Random) -> None:
    from edge import fastjson
    from edge.codecs.thinglinks import DeviceContext, evaluate, parse

    topic = rng.choice(ENVELOPE_TOPICS)
    parsed = parse(topic, data, _Keys() if rng.random() < 0.5 else None)
    if parsed is None:
        raise Finding(f"a device topic {topic} was not parsed")
    for error in parsed.errors:
        if not (isinstance(error.reason, str) and error.reason):
            raise Finding(f"an error without a reason: {error!r}")
    if parsed.kind == "data" and parsed.reports:
        model = _thermo_model()
        contexts = {report.device: DeviceContext(report.device, "thermo", model)
                    for report in parsed.reports}
        outcome = evaluate(parsed, contexts, 1700000000000)
        for event in outcome.events:  # what the edge writes to the uplink stream
            fastjson.dumps(event)


_MODEL: list = []


def _thermo_model() -> object:
    from edge.thingmodel import ThingModel

    if not _MODEL:
        _MODEL.append(ThingModel.from_json({"services": {"env": {"properties": {
            "temperature": {"datatype": "decimal", "min": -40, "max": 125},
            "humidity": {"datatype": "int", "min": 0, "max": 100},
            "name": {"datatype": "string", "length": 16}}}}}))
    return _MODEL[0]


# Uploads --------------------------------------------------------------------------------------

def _upload_seeds() -> list[bytes]:
    import openpyxl

    csv = (b"\xef\xbb\xbfidentifier,name,product,description\r\n"
           b"dev-1,Device 1,thermo,'=1+1\r\ndev-2,\"Dev, 2\",thermo,\r\n")
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append(["identifier", "name", "product"])
    sheet.append(["dev-1", "Device 1", "thermo"])
    xlsx = io.BytesIO()
    workbook.save(xlsx)
    return [csv, xlsx.getvalue()]


def check_upload(data: bytes, rng: random.Random) -> None:
    from webapp.core.errors import DomainError
    from webapp.devices.actions.imports import read_dataset

    file_format = "xlsx" if data[:2] == b"PK" else "csv"
    try:
        read_dataset(data, file_format)
    except DomainError as exc:
        if not str(exc):
            raise Finding("an upload refused without a reason") from None


# CoAP: the message codec ----------------------------------------------------------------------

def _coap_messages() -> list[bytes]:
    from edge.coap.message import Block, Code, Type, build, empty, encode, option
    from edge.coap.message import OptionNumber as Opt

    datas = (option(Opt.URI_PATH, "v1"), option(Opt.URI_PATH, "datas"))
    messages = [
        build(Type.CON, Code.POST, 1, b"tk", (*datas, option(Opt.CONTENT_FORMAT, 50),
                                              option(Opt.URI_QUERY, "u=dev-1"),
                                              option(Opt.URI_QUERY, "p=secret")),
              b'{"devices":[]}'),
        build(Type.CON, Code.GET, 2, b"\x01\x02\x03\x04\x05\x06\x07\x08",
              (option(Opt.URI_PATH, "v1"), option(Opt.URI_PATH, "command"),
               option(Opt.OBSERVE, 0), option(Opt.ACCEPT, 50))),
        build(Type.NON, Code.PUT, 3, b"", (*datas, option(Opt.BLOCK1, Block(1, True, 0)),
                                           option(Opt.SIZE1, 48)), b"b" * 16),
        build(Type.CON, Code.GET, 4, b"t", (*datas, option(Opt.BLOCK2, Block(2, False, 6)),
                                            option(Opt.ETAG, b"\x00\x01"))),
        build(Type.ACK, Code.CONTENT, 5, b"t", (option(Opt.MAX_AGE, 60),
                                                option(Opt.LOCATION_PATH, "x"))),
        build(Type.CON, Code.POST, 6, b"", (option(Opt.PROXY_URI, "coap://h/" + "p" * 300),
                                            option(2048, b"elective"), option(65001, b"c"))),
        empty(Type.ACK, 7), empty(Type.RST, 8), empty(Type.CON, 9),
    ]
    return [encode(message) for message in messages]


def check_coap(data: bytes, rng: random.Random) -> None:
    from edge.coap.message import MessageFormatError, bad_option, decode, encode

    try:
        message = decode(data)
    except MessageFormatError as exc:
        if not exc.reason:
            raise Finding("a datagram refused without a reason") from None
        reply = exc.reply()
        if reply is not None and decode(encode(reply)) != reply:
            raise Finding(f"the Reset {reply!r} does not survive encoding") from None
        return
    if encode(message) != data:
        raise Finding(f"{message!r} re-encodes to {encode(message)!r}")
    problem = bad_option(message)
    if problem is not None and not problem:
        raise Finding("an option problem without a reason")
    # what the exchange and the resources read of an accepted message
    _ = message.uri_path, message.uri_query, message.observe, message.content_format
    for block in ("block1", "block2"):
        with contextlib.suppress(ValueError):  # the reserved SZX 7: the exchange answers 4.00
            getattr(message, block)


# CoAP: the exchange layer fed datagrams of three peers ---------------------------------------
#
# An input is a script of records: peer (a byte, modulo 3), time step (a byte), datagram
# length (2 bytes) and the datagram. A step of 240 or more jumps minutes, so that lifetimes end.

COAP_PEERS = (("192.0.2.1", 5683), ("192.0.2.2", 5683), ("198.51.100.7", 40000))


def _coap_script(*records: tuple[int, int, bytes]) -> bytes:
    return b"".join(bytes((peer, step)) + len(datagram).to_bytes(2, "big") + datagram
                    for peer, step, datagram in records)


def _coap_exchange_seeds() -> list[bytes]:
    from edge.coap.message import Block, Code, Type, build, empty, encode, option
    from edge.coap.message import OptionNumber as Opt

    def msg(type_: Type, code: int, mid: int, *options: tuple[int, bytes], token: bytes = b"tk",
            payload: bytes = b"") -> bytes:
        path = (option(Opt.URI_PATH, "v1"), option(Opt.URI_PATH, "datas"))
        return encode(build(type_, code, mid, token, (*path, *options), payload))

    blocks = [msg(Type.CON, Code.POST, 10 + i, option(Opt.BLOCK1, Block(i, i < 2, 0)),
                  option(Opt.SIZE1, 40), payload=b"x" * (16 if i < 2 else 8)) for i in range(3)]
    return [
        _coap_script(
            (0, 1, msg(Type.CON, Code.GET, 1, option(Opt.OBSERVE, 0), token=b"ob")),
            (0, 10, encode(empty(Type.ACK, 0))), (0, 10, encode(empty(Type.RST, 1))),
            (0, 1, msg(Type.CON, Code.GET, 1, option(Opt.OBSERVE, 0), token=b"ob")),
            (1, 0, msg(Type.NON, Code.GET, 2, option(Opt.OBSERVE, 1), token=b"ob")),
            (0, 250, msg(Type.CON, Code.GET, 3, option(Opt.OBSERVE, 0), token=b"o2")),
        ),
        _coap_script(*((0, 1, block) for block in blocks), (0, 1, blocks[1]),
                     (1, 2, blocks[2]), (0, 255, blocks[0])),
        _coap_script(
            (2, 1, msg(Type.CON, Code.GET, 7, option(Opt.BLOCK2, Block(0, False, 1)))),
            (2, 1, msg(Type.CON, Code.GET, 8, option(Opt.BLOCK2, Block(1, False, 1)))),
            (2, 1, msg(Type.NON, Code.GET, 9, option(Opt.BLOCK2, Block(3, False, 0)))),
            (2, 1, msg(Type.CON, Code.GET, 9, option(Opt.BLOCK2, Block(7, False, 2)))),
        ),
        _coap_script(
            (0, 0, msg(Type.CON, Code.POST, 20, payload=b'{"devices":[]}')),
            (0, 0, msg(Type.CON, Code.POST, 20, payload=b'{"devices":[]}')),
            (1, 0, msg(Type.NON, Code.POST, 20, payload=b"x" * 300)),
            (1, 0, msg(Type.CON, Code.POST, 21, (9, b"critical"))),
            (2, 0, encode(empty(Type.CON, 22))), (2, 0, b"\x40\x45\x00\x17"),
            (2, 0, b"\x4f\x01\x00\x18"), (0, 255, b"\x50\x02\x00\x19\xff"),
        ),
    ]


def check_coap_exchange(data: bytes, rng: random.Random) -> None:
    from edge.coap.exchange import Endpoint, Request, Response, Transmit
    from edge.coap.message import Code, decode

    endpoint = Endpoint(rng=lambda: 0.0, max_body=64, max_exchanges_per_peer=6,
                        max_exchanges=12, max_observations_per_peer=1, max_observations=2,
                        max_transfers_per_peer=1, max_transfers=2, max_peers=2)
    now, deferred, observed = 1000.0, [], []

    def settle(outputs: list) -> None:
        for output in outputs:
            if isinstance(output, Transmit):
                if decode(output.data) != output.message:
                    raise Finding(f"{output.message!r} does not survive encoding")
            elif isinstance(output, Request):
                if rng.random() < 0.25 and endpoint.defer(output):
                    deferred.append(output)
                else:
                    answer(output)
        _coap_consistent(endpoint)

    def answer(request: Request) -> None:
        code = rng.choice((Code.CONTENT, Code.CHANGED, Code.NOT_FOUND))
        response = Response(code, rng.randbytes(rng.choice((0, 12, 40, 100, 700))))
        outputs = endpoint.respond(request, response, now, observe=request.observe == 0)
        if request.observe == 0:
            observed.append((request.peer, request.token))
        settle(outputs)

    pos = 0
    while pos + 4 <= len(data):
        peer, step = COAP_PEERS[data[pos] % 3], data[pos + 1]
        size = int.from_bytes(data[pos + 2 : pos + 4], "big")
        datagram, pos = data[pos + 4 : pos + 4 + size], pos + 4 + size
        now += (step - 239) * 60.0 if step >= 240 else step / 10
        for request in deferred:
            answer(request)
        deferred.clear()
        settle(endpoint.receive(peer, datagram, now))
        if observed and rng.random() < 0.5:
            peer, token = rng.choice(observed)
            code = Code.CONTENT if rng.random() < 0.9 else Code.NOT_FOUND
            settle(endpoint.notify(peer, token, Response(code, rng.randbytes(rng.choice((3, 90)))),
                                   now, confirmable=rng.random() < 0.5))
        deadline = endpoint.next_deadline()
        if deadline is not None and deadline <= now:
            settle(endpoint.poll(now))
    for _ in range(100):  # every retransmission runs out (at most 5 polls per message)
        deadline = endpoint.next_deadline()
        if deadline is None:
            break
        now = max(now, deadline)
        settle(endpoint.poll(now))
    if endpoint.next_deadline() is not None:
        raise Finding("a Confirmable message is retransmitted forever")


def _coap_consistent(endpoint: object) -> None:
    """What the endpoint remembers is within its budgets, and each peer's counters match the
    tables they count (a counter that drifts would let a peer past its budget)."""
    from collections import Counter

    from edge.coap.exchange import Endpoint

    assert isinstance(endpoint, Endpoint)
    if not (endpoint.peers <= endpoint.max_peers and endpoint.exchanges <= endpoint.max_exchanges
            and endpoint.observations <= endpoint.max_observations
            and endpoint.transfers <= endpoint.max_transfers):
        raise Finding(f"past a budget: {endpoint.peers} peers, {endpoint.exchanges} exchanges, "
                      f"{endpoint.observations} observations, {endpoint.transfers} transfers")
    tables = {
        "exchanges": Counter(peer for peer, _ in endpoint._seen),
        "observations": Counter(peer for peer, _ in endpoint._observations),
        "transfers": Counter(peer for peer, _ in [*endpoint._assemblies, *endpoint._bodies]),
        "pending": Counter(peer for peer, _ in endpoint._pending),
    }
    for name, counts in tables.items():
        for peer in set(counts) | set(endpoint._peers):
            state = endpoint._peers.get(peer)
            counted = getattr(state, name) if state is not None else 0
            if counted != counts[peer]:
                raise Finding(f"{peer} counts {counted} {name}, holds {counts[peer]}")


# HTTP device requests -------------------------------------------------------------------------

def _http_seeds() -> list[bytes]:
    def post(path: str, body: bytes, *headers: str) -> bytes:
        extra = "".join(f"{h}\r\n" for h in headers)
        return (f"POST {path} HTTP/1.1\r\nHost: edge\r\nContent-Length: {len(body)}\r\n{extra}"
                "\r\n").encode() + body

    login = "Authorization: Basic " + base64.b64encode(b"dev-1:secret").decode()
    return [
        post("/v1/devices/dev-1/datas", b'{"devices":[]}', login, "Content-Type: application/json")
        + b"GET /v1/devices/dev-1/commands?wait=0 HTTP/1.1\r\nHost: edge\r\n\r\n"
        + b"POST /c HTTP/1.1\r\nHost: edge\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        post("/a", b"x" * 300, "Expect: 100-continue"),
        post("/b", b"{}", "Connection: close") + post("/after-close", b""),
        b"GET /v1/devices/dev-1/commands HTTP/1.0\r\n" + b"X-Big: " + b"h" * 500 + b"\r\n\r\n",
        b"POST /c HTTP/1.1\r\nHost: edge\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"100\r\n" + b"z" * 256 + b"\r\n1\r\nz\r\n0\r\nTrailer: t\r\n\r\n",
    ]


HTTP_REFUSALS = (400, 413, 431)


def _http_run(chunks: Iterator[bytes]) -> list[tuple]:
    from edge.http.config import HttpConfig
    from edge.http.connection import HttpConnection, Request, Response

    connection = HttpConnection(HttpConfig(port=0, max_body=256, max_header=512, read_ahead=1024))
    seen: list[tuple] = []
    for chunk in (*chunks, b""):
        connection.receive(chunk)
        while (item := connection.next_request()) is not None:
            if isinstance(item, Request):
                seen.append((item.method, item.target, item.headers, item.body))
                connection.send(Response(200, b"{}"))
            else:
                if item.status not in HTTP_REFUSALS or not item.close:
                    raise Finding(f"an undocumented refusal {item!r}")
                if not json.loads(item.body)["statusDesc"]:
                    raise Finding("a refusal without a reason")
                # A head both malformed and too large is refused as either, by what arrived
                # first: the refusing is compared, not its status.
                seen.append(("refused",))
                connection.send(item)
            if not isinstance(connection.data_to_send(), bytes):
                raise Finding("the answer is not bytes")
        if connection.closing:
            break
    return seen


def check_http(data: bytes, rng: random.Random) -> None:
    whole = _http_run(iter((data,)))
    split = _http_run(split_at_random(data, rng))
    if whole != split:
        raise Finding(f"split feeding differs: {whole!r} vs {split!r}")


# Raw devices: JSON lines over TCP and JSON datagrams over UDP ---------------------------------

def _jsonlines_seeds() -> list[bytes]:
    login = b'{"deviceId": "dev-1", "password": "secret"}\n'
    lines = (b'{"topic": "datas", "payload": {"devices": [{"deviceId": "dev-1", "services": '
             b'[{"serviceCode": "env", "data": {"temperature": 21.5}}]}]}}\r\n'
             b'\n{"topic": "events", "payload": "{\\"services\\": []}"}\n'
             b'{"topic": "nowhere", "payload": {}}\n[1, 2]\nnot json\n'
             b'{"topic": "shadow/get"}\n')
    return [login, login + lines, login + b"x" * 300 + b"\n" + lines, lines]


def _lines_run(chunks: Iterator[bytes], accept: bool) -> tuple[list, bool]:
    from edge.rawdevices import jsonlines as jl

    session = jl.LineSession(max_line=256)
    actions: list = []
    for chunk in chunks:
        actions.extend(session.receive(chunk))
        if session.splitter.buffered > 257:
            raise Finding(f"{session.splitter.buffered} bytes held of one line")
    if session.state == "checking":  # answered once everything is in, whole or split alike
        actions.extend(session.logged_in("dev-1") if accept else session.refused("no"))
    for action in actions:
        if isinstance(action, jl.Send):
            if not (action.data.endswith(b"\n") and isinstance(json.loads(action.data), dict)):
                raise Finding(f"an answer that is not a JSON line: {action.data!r}")
        elif isinstance(action, jl.Uplink) and action.suffix not in jl.UPLINK_SUFFIXES:
            raise Finding(f"an uplink on {action.suffix!r}")
    return actions, any(isinstance(action, jl.Close) for action in actions)


def check_jsonlines(data: bytes, rng: random.Random) -> None:
    accept = rng.random() < 0.8
    whole, whole_closed = _lines_run(iter((data,)), accept)
    split, split_closed = _lines_run(split_at_random(data, rng), accept)
    # A line over the limit ends the connection before the lines of the same read are
    # handled: only the closing is compared then.
    if whole_closed != split_closed or (not whole_closed and whole != split):
        raise Finding(f"split feeding differs: {whole!r} vs {split!r}")


def _udp_json_seeds() -> list[bytes]:
    return [b'{"deviceId": "dev-1", "password": "secret", "topic": "datas", "payload": '
            b'{"devices": [{"deviceId": "dev-1", "services": []}]}}',
            b'{"deviceId": "dev-1", "password": "hmac-sha256:1700000000:abc", '
            b'"topic": "commandResponse", "payload": "{\\"mid\\": 1}"}',
            b' {"deviceId": "", "topic": "x"}']


def check_udp_json(data: bytes, rng: random.Random) -> None:
    from edge.rawdevices import jsonlines as jl

    try:
        device, password, suffix, payload = jl.datagram(data)
    except jl.BadInput as exc:
        if not exc.reason:
            raise Finding("a datagram refused without a reason") from None
        jl.error_line(exc.reason)  # what the transport answers
        return
    if suffix not in jl.UPLINK_SUFFIXES or not device or not password:
        raise Finding(f"accepted {device!r} {password!r} on {suffix!r}")
    jl.topic_line("datasResponse", payload)


# Binary frames --------------------------------------------------------------------------------

FRAME_SECRET = "s3cret"
LINE_CODEC = {
    "codec": 1, "name": "tank-line", "transport": "tcp",
    "framing": {"type": "delimiter", "delimiter": "7e", "max_frame": 32},
    "checksum": {"type": "sum8", "at": -1},
    "auth": {"type": "mac", "size": 4, "at": -5},
    "messages": [{"name": "level", "kind": "datas", "service": "tank", "device": "address",
                  "fields": [{"name": "address", "type": "bcd", "offset": 0, "length": 3},
                             {"name": "level", "type": "u8", "offset": 3, "scale": 0.5,
                              "bias": -10}]}],
    "downlinks": [{"name": "fill", "service": "tank", "command": "fill", "device": "address",
                   "fields": [{"name": "address", "type": "bcd", "offset": 0, "length": 3},
                              {"name": "to", "type": "u8", "offset": 3}]}],
}
_CODECS: dict[str, Any] = {}


def _codecs() -> dict[str, Any]:
    """The two example codecs and a delimited one with a BCD address, a MAC and a sum8."""
    from pathlib import Path

    from edge.frames import Codec

    if not _CODECS:
        examples = Path(__file__).resolve().parents[2] / "edge" / "frames" / "examples"
        for name in ("th-sensor-tcp", "meter-udp"):
            _CODECS[name] = Codec.loads((examples / f"{name}.json").read_text())
        _CODECS["tank-line"] = Codec.from_json(LINE_CODEC)
    return _CODECS


def _sealed(name: str, frame: bytes) -> bytes:
    """``frame`` with its MAC and checksum recomputed, as a device would send it."""
    from edge.frames.checksums import CHECKSUMS, frame_mac

    spec = _codecs()[name].spec
    buffer = bytearray(frame)
    for check, mac in ((spec.mac, True), (spec.checksum, False)):
        if check is None:
            continue
        start = check.start if check.start >= 0 else len(buffer) + check.start
        at = check.at if check.at >= 0 else len(buffer) + check.at
        if not 0 <= start <= at <= len(buffer) - check.size:
            return frame
        if mac:
            value = frame_mac(FRAME_SECRET, bytes(buffer[start:at]), check.size)
        else:
            digest = CHECKSUMS[check.algorithm][1](bytes(buffer[start:at]))
            value = digest.to_bytes(check.size, "little" if check.little else "big")
        buffer[at : at + check.size] = value
    return bytes(buffer)


def _frame_seeds() -> list[bytes]:
    th = [_sealed("th-sensor-tcp", bytes.fromhex("aa5501") + b"th-001".ljust(32, b"\0")
                  + FRAME_SECRET.encode().ljust(96, b"\0") + b"\0\0"),
          bytes.fromhex("aa550200fd01c2753e"), bytes.fromhex("aa55830000000700003cdce6")]
    meter = [bytes.fromhex("68001801000012345678000186a009060fa083d4af67c5ec92b1e1"),
             bytes.fromhex("68001202000012345678020a287bb246072316eaec"),
             _sealed("meter-udp", bytes.fromhex("68001583000012345678000000090001") + b"\0" * 8)]
    line = [_sealed("tank-line", bytes.fromhex(f"{n:06d}28") + b"\0" * 5) for n in (42, 70, 123456)]
    line = [frame for frame in line if b"\x7e" not in frame]
    return [*th, *meter, *line, b"".join(th + th[1:]), b"".join(meter),
            b"".join(frame + b"\x7e" for frame in line)]


def _codec_of(data: bytes, rng: random.Random) -> str:
    if rng.random() < 0.1:
        return rng.choice(list(_codecs()))
    return {0xAA: "th-sensor-tcp", 0x68: "meter-udp"}.get(data[:1][0] if data else 0, "tank-line")


def _frames_run(name: str, chunks: Iterator[bytes]) -> tuple[list[bytes], str | None]:
    from edge.frames import FrameError

    framer = _codecs()[name].framer()
    frames: list[bytes] = []
    try:
        for chunk in chunks:
            frames.extend(framer.feed(chunk))
            if framer.buffered > framer.framing.max_frame + len(framer.framing.delimiter):
                raise Finding(f"{framer.buffered} bytes held of one frame")
    except FrameError as exc:
        return frames, exc.code
    return frames, None


def _stream_run(chunks: Iterator[bytes]) -> tuple[list[bytes], str | None, str | None]:
    from edge.frames import FrameError
    from edge.rawdevices.frames import Candidate, FrameStream

    stream = FrameStream([Candidate(name, codec) for name, codec in _codecs().items()
                          if codec.spec.transport == "tcp"])
    frames: list[bytes] = []
    try:
        for chunk in chunks:
            frames.extend(stream.feed(chunk))
    except FrameError as exc:
        return frames, None, exc.code
    return frames, stream.chosen.product if stream.chosen else None, None


def _same_stream(whole: tuple, split: tuple) -> bool:
    """A framer that refuses a frame drops the frames of the same read: only the errors are
    compared then."""
    if whole[-1] is not None or split[-1] is not None:
        return whole[-1] == split[-1]
    return whole == split


def check_frames(data: bytes, rng: random.Random) -> None:
    from edge import fastjson
    from edge.frames import FrameError

    name = _codec_of(data, rng)
    codec = _codecs()[name]
    if rng.random() < 0.3:
        data = _sealed(name, data)  # so that mutations reach the fields
    if codec.spec.framing.type != "datagram":
        whole = _frames_run(name, iter((data,)))
        split = _frames_run(name, split_at_random(data, rng))
        if not _same_stream(whole, split):
            raise Finding(f"{name} split feeding differs: {whole!r} vs {split!r}")
    # A framer that refuses a read drops the frames before the refusal in it (the connection
    # closes), so a codec whose good first frame shares a read with bad bytes drops out whole
    # but is chosen split, and refuses later: streams are compared when neither is refused.
    whole_stream = _stream_run(iter((data,)))
    split_stream = _stream_run(split_at_random(data, rng))
    if whole_stream[-1] is None and split_stream[-1] is None and whole_stream != split_stream:
        raise Finding(f"the stream split differs: {whole_stream!r} vs {split_stream!r}")
    try:
        frame = codec.datagram(data) if codec.spec.transport == "udp" else data
        codec.identify(frame)
        decoded = codec.decode(frame, FRAME_SECRET)
        uplink = decoded.uplink(None if decoded.device else "dev-1")
    except FrameError as exc:
        if not (exc.code and exc.reason):
            raise Finding(f"a frame refused without a code or reason: {exc!r}") from None
        return
    if uplink is not None:
        fastjson.dumps(uplink.body)  # what the transport hands to the pipeline


# Codec descriptions ---------------------------------------------------------------------------

def _spec_seeds() -> list[bytes]:
    from pathlib import Path

    examples = Path(__file__).resolve().parents[2] / "edge" / "frames" / "examples"
    datagram = {**LINE_CODEC, "transport": "udp", "framing": {"type": "datagram", "max_frame": 40},
                "byte_order": "little", "auth": {"type": "mac", "size": 4, "at": -8},
                "checksum": {"type": "crc32", "start": 0, "at": -4, "byte_order": "big"}}
    datagram["messages"] = [{**LINE_CODEC["messages"][0], "fields": [
        {"name": "address", "type": "hex", "offset": 0, "length": 4},
        {"name": "version", "type": "u8", "offset": 4, "const": 1},
        {"name": "t", "type": "f32le", "offset": 5},
        {"name": "flags", "type": "bits", "offset": 9, "length": 2, "bit": 3, "width": 5},
        {"name": "n", "type": "i64", "offset": 11, "service": "other"}]}]
    return [*(path.read_bytes() for path in sorted(examples.glob("*.json"))),
            json.dumps(LINE_CODEC).encode(), json.dumps(datagram).encode()]


SPEC_WORDS = ("", "u8", "i16le", "u64", "f64", "bcd", "bits", "ascii", "hex", "7e", "aa55",
              "0d0a", "little", "big", "datas", "events", "login", "commandResponse", "mac",
              "crc32", "sum8", "datagram", "length", "fixed", "delimiter", "tcp", "udp")


_SPEC_SEEDS: list[bytes] = []


def _spec_seeds_cached() -> list[bytes]:
    if not _SPEC_SEEDS:
        _SPEC_SEEDS.extend(_spec_seeds())
    return _SPEC_SEEDS


def _tweak(node: Any, rng: random.Random) -> Any:
    """A JSON value with one random edit somewhere inside it (a structural mutation, which
    byte edits of JSON text seldom make without breaking the syntax)."""
    if isinstance(node, dict) and node and rng.random() < 0.85:
        key = rng.choice(list(node))
        edited = dict(node)
        if rng.random() < 0.1:
            del edited[key]
        else:
            edited[key] = _tweak(node[key], rng)
        return edited
    if isinstance(node, list) and node and rng.random() < 0.85:
        i = rng.randrange(len(node))
        edited_list = list(node)
        choice = rng.random()
        if choice < 0.1:
            del edited_list[i]
        elif choice < 0.2:
            edited_list.append(node[i])
        else:
            edited_list[i] = _tweak(node[i], rng)
        return edited_list
    if rng.random() < 0.6:  # a near value of the same kind, which often stays valid
        if isinstance(node, bool):
            return not node
        if isinstance(node, int):
            return node + rng.choice((-1, 1, -8, 8, node, -node - 1, 1 << rng.randrange(64)))
        if isinstance(node, float):
            return node * rng.choice((-1, 0.5, 10, 1e300))
        if isinstance(node, str):
            return rng.choice(SPEC_WORDS)
    return rng.choice((0, 1, -1, 65535, 65536, 2**64, 0.5, 1e300, True, None, [], {},
                       {"0": 1}, rng.choice(SPEC_WORDS)))


def check_frame_spec(data: bytes, rng: random.Random) -> None:
    from edge.frames import Codec, FrameError, SpecError
    from edge.frames.spec import loads

    structural = rng.random() < 0.5  # a valid description with a few edits, not byte noise
    if structural:
        data = rng.choice(_spec_seeds_cached())
    try:
        document = json.loads(data)
    except ValueError:
        document = None
    if document is not None and (structural or rng.random() < 0.5):
        for _ in range(rng.choice((1, 1, 2, 3))):
            document = _tweak(document, rng)
        data = json.dumps(document).encode()
    try:
        codec = Codec(loads(data))
    except SpecError as exc:
        if not exc.reason:
            raise Finding("a description refused without a reason") from None
        return
    # A valid description reads any bytes as a frame or refuses them with a reason.
    for _ in range(4):
        frame = rng.randbytes(rng.choice((1, 4, 9, 16, 40, 133)))
        try:
            if codec.spec.framing.type != "datagram":
                codec.framer().feed(frame)
            decoded = codec.decode(codec.datagram(frame) if rng.random() < 0.5 else frame, "k")
            decoded.uplink("dev-1")
        except FrameError:
            pass


def _django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("DJANGO_SECRET_KEY", base64.b64encode(os.urandom(48)).decode())
    import django

    django.setup()


def targets() -> dict[str, Target]:
    return {
        "mqtt": Target("mqtt", _mqtt_seeds(), check_mqtt),
        "websocket": Target("websocket", _ws_seeds(), check_websocket, max_size=80000),
        "envelope": Target("envelope", _envelope_seeds(), check_envelope),
        "upload": Target("upload", _upload_seeds(), check_upload, weight=0.01, max_size=16384),
        "coap": Target("coap", _coap_messages(), check_coap),
        "coap-exchange": Target("coap-exchange", _coap_exchange_seeds(), check_coap_exchange,
                                weight=0.5),
        "http": Target("http", _http_seeds(), check_http, weight=0.5),
        "jsonlines": Target("jsonlines", _jsonlines_seeds(), check_jsonlines),
        "udp-json": Target("udp-json", _udp_json_seeds(), check_udp_json),
        "frames": Target("frames", _frame_seeds(), check_frames),
        "frame-spec": Target("frame-spec", _spec_seeds(), check_frame_spec, weight=0.5,
                             max_size=16384),
    }


def run(target: Target, cases: int, seed: int = 0, budget_s: float | None = None) -> int:
    """Run ``cases`` inputs against ``target``; the number run (fewer when ``budget_s`` ends it).
    Raises :class:`Finding` with the seed and case number on the first broken contract."""
    rng = random.Random(f"{seed}:{target.name}")
    started = time.monotonic()
    for case in range(cases):
        data = mutate(rng.choice(target.seeds), rng, target.seeds, target.max_size)
        try:
            target.check(data, rng)
        except Finding as exc:
            raise Finding(f"{target.name} case {case} (seed {seed}): {exc}; input "
                          f"{data[:200]!r}") from None
        except Exception:
            raise Finding(f"{target.name} case {case} (seed {seed}) raised unexpectedly on "
                          f"{data[:200]!r}:\n{traceback.format_exc()}") from None
        if budget_s is not None and case % 256 == 0 and time.monotonic() - started > budget_s:
            return case + 1
    return cases


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=1_000_000, help="inputs per target")
    parser.add_argument("--seed", type=int, default=int(os.environ.get("FUZZ_SEED", "0")))
    parser.add_argument("--target", action="append", help="run only these targets")
    args = parser.parse_args(argv)
    _django()
    chosen = targets()
    for name in args.target or list(chosen):
        target = chosen[name]
        cases = max(1, int(args.cases * target.weight))
        started = time.monotonic()
        try:
            done = run(target, cases, args.seed)
        except Finding as exc:
            print(f"FAIL {exc}", file=sys.stderr)
            return 1
        elapsed = time.monotonic() - started
        print(f"{name:13} {done:>9,} cases  {elapsed:7.1f} s  {done / elapsed:>9,.0f}/s  ok",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
