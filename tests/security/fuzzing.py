"""Mutation fuzzing of every decoder that reads bytes from outside the platform.

Each target takes one input and either accepts it or refuses it with the error type its
decoder documents; any other exception is a finding. The MQTT and WebSocket decoders are also
checked against themselves: the same bytes fed whole and split at random boundaries give the same
packets (or the same error), and a decoded MQTT packet re-encodes to bytes that decode to it.

    python -m tests.security.fuzzing --cases 1000000          # make fuzz
    python -m tests.security.fuzzing --cases 2000 --target mqtt

The generator is deterministic for a seed, so a failure is reproduced by rerunning with the
seed and case number it prints. `tests/security/test_fuzz_decoders.py` runs every target small.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import random
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass

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
        print(f"{name:10} {done:>9,} cases  {elapsed:7.1f} s  {done / elapsed:>9,.0f}/s  ok",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
