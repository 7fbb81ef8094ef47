"""Binary frames: the two example codecs decode sample frames into ThingLinks uplink messages,
encode commands, check MACs and checksums, and refuse mutated input with a reason."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from edge.codecs import thinglinks as tl
from edge.frames import Codec, FrameError
from edge.frames.checksums import crc16_modbus, frame_mac
from tests.support.example_models import TH_SENSOR_MODEL

EXAMPLES = Path(__file__).resolve().parents[2] / "edge" / "frames" / "examples"
TH = Codec.loads((EXAMPLES / "th-sensor-tcp.json").read_text())
METER = Codec.loads((EXAMPLES / "meter-udp.json").read_text())
SECRET = "s3cret"

# aa55 | type | … | CRC-16/MODBUS of what precedes, low byte first
TH_REPORT = bytes.fromhex("aa550200fd01c2753e")  # 25.3 °C, 45.0 %
TH_REPORT_COLD = bytes.fromhex("aa5502ff380000d516")  # -20.0 °C, 0 %
TH_INTERVAL_SET = bytes.fromhex("aa55830000000700003cdce6")  # command 7: ok, 60 s
# 68 | bytes after the length field (u16) | type | address (6, hex) | … | MAC (8)
METER_READING = bytes.fromhex("68001801000012345678000186a009060fa083d4af67c5ec92b1e1")
METER_ALARM = bytes.fromhex("68001202000012345678020a287bb246072316eaec")


def th_frame(hex_body: str) -> bytes:
    body = bytes.fromhex(hex_body)
    return body + crc16_modbus(body).to_bytes(2, "little")


def th_login(device: str = "th-001", password: str = SECRET) -> bytes:
    fields = device.encode().ljust(32, b"\0") + password.encode().ljust(96, b"\0")
    return th_frame("aa5501" + fields.hex())


def meter_frame(hex_body: str, secret: str = SECRET) -> bytes:
    body = bytes.fromhex(hex_body)
    return body + frame_mac(secret, body, 8)


METER_RELAY_SET = meter_frame("68001583000012345678000000090001")


def test_the_examples_are_valid_codecs() -> None:
    assert TH.spec.transport == "tcp" and TH.spec.auth == "login"
    assert TH.spec.framing.lengths == {1: 133, 2: 9, 131: 12}
    assert METER.spec.transport == "udp" and METER.spec.auth == "mac"
    assert METER.spec.framing.type == "length"


def test_th_login_names_the_device_and_carries_its_secret() -> None:
    decoded = TH.decode(th_login())
    assert decoded.message.kind == "login"
    assert decoded.device == "th-001"
    assert decoded.password == SECRET
    assert decoded.values == {"device_id": "th-001"}  # the secret is not among the values
    assert decoded.uplink() is None
    signed = "hmac-sha256:1700000000000:" + "ab" * 32  # a signed password fits too
    assert TH.decode(th_login(password=signed)).password == signed


def test_th_report_is_a_datas_message_of_the_logged_in_device() -> None:
    decoded = TH.decode(TH_REPORT)
    assert decoded.device is None
    assert decoded.values == {"temperature": 25.3, "humidity": 45.0}
    uplink = decoded.uplink("th-001")
    assert uplink is not None and uplink.suffix == "datas"
    assert uplink.body == {
        "devices": [
            {
                "deviceId": "th-001",
                "services": [
                    {"serviceCode": "env", "data": {"temperature": 25.3, "humidity": 45.0}}
                ],
            }
        ]
    }
    assert TH.decode(TH_REPORT_COLD).values == {"temperature": -20.0, "humidity": 0.0}
    with pytest.raises(FrameError, match="nobody logged in") as caught:
        decoded.uplink()
    assert caught.value.code == "no_device"


def test_th_uplinks_land_like_mqtt_messages() -> None:
    """The uplink body goes through the transport-independent reader and validation of the
    MQTT path unchanged."""
    contexts = {"th-001": tl.DeviceContext("th-001", "th-sensor", TH_SENSOR_MODEL)}
    uplink = TH.decode(TH_REPORT).uplink("th-001")
    assert uplink is not None
    parsed = tl.read("th-001", uplink.suffix, json.dumps(uplink.body).encode())
    outcome = tl.evaluate(parsed, contexts, ts=1)
    assert not outcome.errors
    assert outcome.events[0]["v"] == {"temperature": 25.3, "humidity": 45.0}
    answer = TH.decode(TH_INTERVAL_SET).uplink("th-001")
    assert answer is not None
    parsed = tl.read("th-001", answer.suffix, json.dumps(answer.body).encode())
    event = tl.evaluate(parsed, contexts, ts=1).events[0]
    assert (event["t"], event["mid"], event["cmd"], event["err"]) == (
        "cmdrsp",
        7,
        "setReportInterval",
        0,
    )
    assert event["params"] == {"interval": 60}


def test_th_command_response() -> None:
    uplink = TH.decode(TH_INTERVAL_SET).uplink("th-001")
    assert uplink is not None and uplink.suffix == "commandResponse"
    assert uplink.body == {
        "msgType": "deviceRsp",
        "serviceCode": "config",
        "cmd": "setReportInterval",
        "errCode": 0,
        "params": {"interval": 60},
        "mid": 7,
    }


def test_th_encodes_commands_and_the_login_answer() -> None:
    frame = TH.encode_command("config", "setReportInterval", {"interval": 60}, mid=7)
    # aa55 | 03 | command id 7 (u32) | 60 s (u16) | CRC-16/MODBUS, low byte first
    assert frame.hex() == "aa550300000007003ccb84"
    assert crc16_modbus(frame[:-2]) == 0x84CB
    assert TH.encode("login_answer", {"result": "accepted"}).hex() == "aa55810051bc"
    assert TH.encode("login_answer", {"result": "refused"})[3] == 1


@pytest.mark.parametrize(
    ("call", "code", "reason"),
    [
        (lambda: TH.encode_command("config", "reboot", {}), "unknown_command", "config.reboot"),
        (lambda: TH.encode("nothing"), "unknown_downlink", "'nothing'"),
        (
            lambda: TH.encode_command("config", "setReportInterval", {"interval": 60}),
            "missing_param",
            "carries the command id",
        ),
        (
            lambda: TH.encode_command("config", "setReportInterval", {}, mid=1),
            "missing_param",
            "needs interval",
        ),
        (
            lambda: TH.encode_command(
                "config", "setReportInterval", {"interval": 1, "colour": 2}, mid=1
            ),
            "unknown_param",
            "no field for colour",
        ),
        (
            lambda: TH.encode_command("config", "setReportInterval", {"interval": 70000}, mid=1),
            "out_of_range",
            "70000 is outside 0..65535",
        ),
        (
            lambda: TH.encode_command("config", "setReportInterval", {"interval": 6}, mid=2**32),
            "out_of_range",
            "seq: 4294967296",
        ),
        (lambda: TH.encode("login_answer", {"result": "maybe"}), "bad_value", "not one of"),
        (
            lambda: METER.encode_command(
                "meter", "setRelay", {"on": True}, mid=1, device="000012345678"
            ),
            "unauthenticated",
            "needs the device's secret",
        ),
        (
            lambda: METER.encode_command("meter", "setRelay", {"on": True}, mid=1, secret=SECRET),
            "missing_param",
            "names its device",
        ),
    ],
)
def test_commands_that_cannot_be_encoded_are_refused(call, code: str, reason: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(FrameError, match=reason) as caught:
        call()
    assert caught.value.code == code


def test_th_stream_split_at_every_byte() -> None:
    stream = th_login() + TH_REPORT + TH_INTERVAL_SET + TH_REPORT_COLD
    expected = [th_login(), TH_REPORT, TH_INTERVAL_SET, TH_REPORT_COLD]
    for cut in range(len(stream) + 1):
        framer = TH.framer()
        assert framer.feed(stream[:cut]) + framer.feed(stream[cut:]) == expected, cut
    framer = TH.framer()
    frames = [frame for byte in stream for frame in framer.feed(bytes([byte]))]
    assert [TH.decode(frame).message.name for frame in frames] == [
        "login",
        "report",
        "interval_set",
        "report",
    ]


@pytest.mark.parametrize(
    ("frame", "code", "reason"),
    [
        (
            TH_REPORT[:-1] + b"\x00",
            "bad_checksum",
            "crc16-modbus is 7500; the bytes before it give 753e",
        ),
        (bytes.fromhex("aa550200fe01c2753e"), "bad_checksum", "crc16-modbus"),
        (TH_REPORT[:-1], "bad_checksum", "crc16-modbus is c275"),
        (th_frame("aa550200fd01c200"), "bad_length", "a report frame has 9 bytes, not 10"),
        (th_frame("aa5507"), "unknown_type", "no message has the type 7"),
        (b"\xaa", "truncated", "the frame has 1 bytes, less than a header"),
        (b"", "truncated", "empty"),
        (b"\x55\xaa", "bad_header", "starts with aa55, not 55aa"),
        (bytes(200), "oversize", "a frame of 200 bytes"),
    ],
)
def test_th_refuses_bad_frames(frame: bytes, code: str, reason: str) -> None:
    with pytest.raises(FrameError, match=reason) as caught:
        TH.decode(frame)
    assert caught.value.code == code


def test_meter_reading_with_status_bits() -> None:
    frame = METER.datagram(METER_READING)
    assert METER.identify(frame) == "000012345678"
    decoded = METER.decode(frame, SECRET)
    uplink = decoded.uplink()
    assert uplink is not None and uplink.suffix == "datas"
    assert uplink.body == {
        "devices": [
            {
                "deviceId": "000012345678",
                "services": [
                    {
                        "serviceCode": "meter",
                        "data": {
                            "energy": 1000.0,
                            "voltage": 231.0,
                            "current": 4.0,
                            "relay": True,  # status 0x83: bit 0
                            "mode": "eco",  # bits 1-2 = 01
                            "tamper": True,  # bit 7
                        },
                    }
                ],
            }
        ]
    }
    assert decoded.uplink("000012345678") == uplink
    with pytest.raises(FrameError, match="the frame names 000012345678") as caught:
        decoded.uplink("000099999999")
    assert caught.value.code == "wrong_device"


def test_meter_alarm_event_and_command_response() -> None:
    alarm = METER.decode(METER.datagram(METER_ALARM), SECRET).uplink()
    assert alarm is not None and alarm.suffix == "events"
    assert alarm.body == {
        "services": [
            {
                "serviceCode": "meter",
                "event": "alarm",
                "params": {"type": "overcurrent", "value": 260.0},
            }
        ]
    }
    answer = METER.decode(METER.datagram(METER_RELAY_SET), SECRET).uplink()
    assert answer is not None and answer.suffix == "commandResponse"
    assert answer.body == {
        "msgType": "deviceRsp",
        "serviceCode": "meter",
        "cmd": "setRelay",
        "errCode": 0,
        "params": {"on": True},
        "mid": 9,
    }


def test_meter_command_carries_a_mac_the_device_can_check() -> None:
    frame = METER.encode_command(
        "meter", "setRelay", {"on": True}, mid=9, secret=SECRET, device="000012345678"
    )
    # 68 | 20 bytes follow | 03 | address | command id 9 | on | MAC
    assert frame[:-8].hex() == "680014030000123456780000000901"
    assert frame[-8:] == frame_mac(SECRET, frame[:-8], 8)
    assert METER.datagram(frame) == frame


def test_meter_mac_good_bad_and_truncated() -> None:
    frame = METER.datagram(METER_READING)
    assert METER.decode(frame, SECRET).device == "000012345678"
    bad = {
        "no secret": (frame, None, "unauthenticated"),
        "another secret": (frame, "other", "bad_mac"),
        "a MAC bit": (frame[:-1] + bytes([frame[-1] ^ 1]), SECRET, "bad_mac"),
        "a data bit": (frame[:15] + bytes([frame[15] ^ 1]) + frame[16:], SECRET, "bad_mac"),
        "MAC of another secret": (
            meter_frame(METER_READING[:-8].hex(), "other"),
            SECRET,
            "bad_mac",
        ),
        # one MAC byte cut off (the length field says so): the MAC no longer matches
        "a short MAC": (b"\x68\x00\x17" + frame[3:-1], SECRET, "bad_mac"),
        # too short to hold its fields and a MAC
        "no MAC": (b"\x68\x00\x05" + frame[3:8], SECRET, "truncated"),
    }
    for name, (data, secret, code) in bad.items():
        with pytest.raises(FrameError) as caught:
            METER.decode(METER.datagram(data), secret)
        assert caught.value.code == code, name


def test_meter_datagrams_that_are_not_one_frame() -> None:
    for data, code in [
        (METER_READING + b"\x00", "bad_length"),
        (METER_READING[:-1], "truncated"),
        (b"\x68\x00", "truncated"),
        (b"\x69" + METER_READING[1:], "bad_header"),
        (b"\x68\xff\xff" + bytes(10), "oversize"),
        (meter_frame("6800100700001234567800"), "unknown_type"),
    ]:
        with pytest.raises(FrameError) as caught:
            METER.decode(METER.datagram(data), SECRET)
        assert caught.value.code == code, data.hex()


def _mutations(sample: bytes, rng: random.Random) -> bytes:
    data = bytearray(sample)
    for _ in range(rng.randint(1, 4)):
        choice = rng.randrange(5)
        at = rng.randrange(len(data) + 1)
        if choice == 0 and data:
            data[min(at, len(data) - 1)] ^= 1 << rng.randrange(8)
        elif choice == 1:
            data[at:at] = bytes([rng.randrange(256)])
        elif choice == 2:
            del data[at : at + rng.randint(1, 3)]
        elif choice == 3:
            data = data[:at]
        else:
            data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
    return bytes(data)


def test_mutated_frames_are_refused_with_a_reason_never_an_exception() -> None:
    """A small mutation fuzz over both examples: every input is decoded or refused with a
    FrameError; a mutated meter frame never passes its MAC unless it is a sample itself."""
    rng = random.Random(13)
    th_samples = [th_login(), TH_REPORT, TH_REPORT_COLD, TH_INTERVAL_SET]
    meter_samples = [METER_READING, METER_ALARM, METER_RELAY_SET]
    outcomes = {"decoded": 0, "refused": 0}
    for _ in range(3000):
        stream = b"".join(_mutations(rng.choice(th_samples), rng) for _ in range(2))
        framer = TH.framer()
        try:
            for start in range(0, len(stream), 7):
                for frame in framer.feed(stream[start : start + 7]):
                    decoded = TH.decode(frame)
                    if decoded.message.kind != "login":
                        decoded.uplink("th-001")
                    outcomes["decoded"] += 1
        except FrameError as exc:
            assert exc.code and exc.reason
            outcomes["refused"] += 1
        data = _mutations(rng.choice(meter_samples), rng)
        try:
            frame = METER.datagram(data)
            METER.identify(frame)
            decoded = METER.decode(frame, SECRET)
            assert data in meter_samples, data.hex()
            decoded.uplink()
            outcomes["decoded"] += 1
        except FrameError as exc:
            assert exc.code and exc.reason
            outcomes["refused"] += 1
    assert outcomes["refused"] > 1000 and outcomes["decoded"] > 0


# Delimited frames over TCP, each naming its device by a BCD address, with a MAC and a sum8.
LINE = Codec.from_json(
    {
        "codec": 1,
        "name": "tank-line",
        "transport": "tcp",
        "framing": {"type": "delimiter", "delimiter": "7e", "max_frame": 32},
        "checksum": {"type": "sum8", "at": -1},
        "auth": {"type": "mac", "size": 4, "at": -5},
        "messages": [
            {
                "name": "level",
                "kind": "datas",
                "service": "tank",
                "device": "address",
                "fields": [
                    {"name": "address", "type": "bcd", "offset": 0, "length": 3},
                    {"name": "level", "type": "u8", "offset": 3, "scale": 0.5, "bias": -10},
                ],
            }
        ],
        "downlinks": [
            {
                "name": "fill",
                "service": "tank",
                "command": "fill",
                "device": "address",
                "fields": [
                    {"name": "address", "type": "bcd", "offset": 0, "length": 3},
                    {"name": "to", "type": "u8", "offset": 3},
                ],
            }
        ],
    }
)


def line_frame(hex_body: str) -> bytes:
    body = bytes.fromhex(hex_body)
    body += frame_mac(SECRET, body, 4)
    return body + bytes([sum(body) & 0xFF])


def test_a_bcd_address_keeps_its_leading_zeros() -> None:
    frame = line_frame("00004228")  # level 40 * 0.5 - 10
    assert LINE.identify(frame) == "000042"
    uplink = LINE.decode(frame, SECRET).uplink()
    assert uplink is not None
    assert uplink.body["devices"] == [
        {"deviceId": "000042", "services": [{"serviceCode": "tank", "data": {"level": 10.0}}]}
    ]


def test_many_frames_in_one_chunk() -> None:
    frames = [line_frame(f"{i % 10000:06d}28") for i in range(3000)]
    stream = b"".join(frame + b"\x7e" for frame in frames if b"\x7e" not in frame)
    got = LINE.framer().feed(stream)
    assert got == [frame for frame in frames if b"\x7e" not in frame]
    assert [LINE.decode(frame, SECRET).device for frame in got[:2]] == ["000000", "000001"]


def test_an_encoded_frame_never_holds_its_delimiter() -> None:
    frame = LINE.encode_command("tank", "fill", {"to": 5}, secret=SECRET, device="000042")
    assert frame[:4].hex() == "00004205" and frame.endswith(b"\x7e") and frame.count(b"\x7e") == 1
    assert LINE.framer().feed(frame) == [frame[:-1]]
    with pytest.raises(FrameError, match="would contain its delimiter 7e") as caught:
        LINE.encode_command("tank", "fill", {"to": 0x7E}, secret=SECRET, device="000042")
    assert caught.value.code == "bad_value"
    with pytest.raises(FrameError, match="holds a number"):
        LINE.encode_command("tank", "fill", {"to": 5}, secret=SECRET, device="tank-1")
