"""The raw TCP and UDP codecs without I/O (edge.rawdevices): JSON lines split at every byte,
oversized and garbage lines, the login state machine, datagrams, and binary streams whose
codec is found from the first frame."""

from __future__ import annotations

import json
import random

import pytest

from edge.frames import FrameError
from edge.rawdevices import frames as binary
from edge.rawdevices import jsonlines as jl

from .test_frames_codec import (
    METER,
    METER_READING,
    SECRET,
    TH,
    TH_INTERVAL_SET,
    TH_REPORT,
    th_login,
)

LOGIN = b'{"deviceId": "d1", "password": "s3cret"}\n'
DATAS = b'{"topic": "datas", "payload": {"devices": []}}\n'


def feed_split(session: jl.LineSession, data: bytes, at: int) -> list[jl.Action]:
    return [*session.receive(data[:at]), *session.receive(data[at:])]


def test_lines_split_at_every_byte_give_the_same_actions() -> None:
    stream = LOGIN + DATAS + b"\r\n" + DATAS.replace(b"\n", b"\r\n")
    whole = jl.LineSession(1024)
    expected = whole.receive(stream)
    assert expected == [jl.Login("d1", b"s3cret")]
    expected += whole.logged_in("d1")
    for at in range(len(stream) + 1):
        session = jl.LineSession(1024)
        actions = feed_split(session, stream, at)
        assert actions == [jl.Login("d1", b"s3cret")], at
        assert [*actions, *session.logged_in("d1")] == expected, at
    uplinks = [a for a in expected if isinstance(a, jl.Uplink)]
    assert uplinks == [jl.Uplink("datas", b'{"devices":[]}')] * 2


def test_every_byte_on_its_own() -> None:
    session = jl.LineSession(1024)
    session.receive(LOGIN)
    session.logged_in("d1")
    actions = [a for byte in DATAS * 3 for a in session.receive(bytes([byte]))]
    assert actions == [jl.Uplink("datas", b'{"devices":[]}')] * 3


def test_a_login_answer_releases_the_lines_sent_before_it_in_order() -> None:
    session = jl.LineSession(1024)
    assert session.receive(LOGIN + DATAS + DATAS) == [jl.Login("d1", b"s3cret")]
    send, *uplinks = session.logged_in("d1")
    assert send == jl.Send(b'{"statusCode":0,"statusDesc":"successful"}\n')
    assert uplinks == [jl.Uplink("datas", b'{"devices":[]}')] * 2


def test_too_many_lines_before_the_login_answer_close_the_connection() -> None:
    session = jl.LineSession(1024)
    actions = session.receive(LOGIN + DATAS * (jl.MAX_HELD_LINES + 1))
    assert isinstance(actions[-1], jl.Close) and "before the login answer" in actions[-1].reason


def test_a_refused_login_is_answered_with_the_reason_and_closes() -> None:
    session = jl.LineSession(1024)
    session.receive(LOGIN)
    send, close = session.refused("wrong secret for device d1")
    assert isinstance(send, jl.Send)
    assert json.loads(send.data) == {"statusCode": 1, "statusDesc": "wrong secret for device d1"}
    assert close == jl.Close("wrong secret for device d1")
    assert session.receive(DATAS) == []


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"garbage", "not JSON"),
        (b"[1, 2]", "a line is a JSON object"),
        (b'{"password": "x"}', "deviceId must be"),
        (b'{"deviceId": "d1"}', "password must be"),
        (b'{"deviceId": "d 1", "password": "x"}', "deviceId must be"),
    ],
)
def test_a_bad_login_line_is_refused_with_the_reason(line: bytes, reason: str) -> None:
    session = jl.LineSession(1024)
    send, close = session.receive(line + b"\n")
    assert isinstance(send, jl.Send) and reason in json.loads(send.data)["statusDesc"]
    assert isinstance(close, jl.Close)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"{oops", "not JSON"),
        (b'"text"', "a line is a JSON object"),
        (b'{"topic": "nope", "payload": {}}', "topic must be one of"),
        (b'{"topic": "datas"}', "the message has no payload"),
    ],
)
def test_a_bad_line_after_login_gets_an_error_line_and_the_connection_goes_on(
    line: bytes, reason: str
) -> None:
    session = jl.LineSession(1024)
    session.receive(LOGIN)
    session.logged_in("d1")
    (send,) = session.receive(line + b"\n")
    assert isinstance(send, jl.Send)
    answer = json.loads(send.data)
    assert answer["statusCode"] == 1 and reason in answer["statusDesc"]
    assert session.receive(DATAS) == [jl.Uplink("datas", b'{"devices":[]}')]


def test_an_oversized_line_breaks_the_framing_and_closes() -> None:
    session = jl.LineSession(64)
    session.receive(LOGIN)
    session.logged_in("d1")
    ok = b'{"topic":"datas","payload":"' + b"x" * 30 + b'"}\n'
    assert len(ok) <= 65 and isinstance(session.receive(ok)[0], jl.Uplink)
    # without its end of line: refused as soon as more than a line's worth is held
    actions = session.receive(b"{" + b"x" * 70)
    assert isinstance(actions[-1], jl.Close) and "64 bytes" in actions[-1].reason
    assert session.receive(DATAS) == []
    # with its end in the same chunk
    session = jl.LineSession(64)
    actions = session.receive(b"x" * 65 + b"\n")
    assert isinstance(actions[-1], jl.Close) and "a line of 65 bytes" in actions[-1].reason


def test_garbage_never_raises_and_never_holds_more_than_a_line() -> None:
    rng = random.Random(13)
    for _ in range(300):
        session = jl.LineSession(128)
        for _ in range(10):
            chunk = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 80)))
            session.receive(chunk)
            assert session.splitter.buffered <= 129
            if session.state == "login" and rng.random() < 0.3:
                session.receive(LOGIN)
            if session.state == "checking":
                session.logged_in("d1")


def test_a_string_payload_is_passed_as_is_for_an_envelope() -> None:
    envelope = '{"head":{"mid":1},"dataBody":{}}'
    line = json.dumps({"topic": "commandResponse", "payload": envelope}).encode() + b"\n"
    session = jl.LineSession(1024)
    session.receive(LOGIN)
    session.logged_in("d1")
    assert session.receive(line) == [jl.Uplink("commandResponse", envelope.encode())]


def test_a_datagram_carries_credentials_and_a_message() -> None:
    data = json.dumps(
        {"deviceId": "u1", "password": "p", "topic": "events", "payload": {"services": []}}
    ).encode()
    assert jl.datagram(data) == ("u1", b"p", "events", b'{"services":[]}')
    for bad, reason in [
        (b"\xff\xfe", "not JSON"),
        (b'{"deviceId": "u1", "password": "p"}', "topic must be"),
        (b'{"topic": "datas", "payload": {}}', "deviceId"),
    ]:
        with pytest.raises(jl.BadInput, match=reason):
            jl.datagram(bad)


def test_answers_embed_json_payloads() -> None:
    line = jl.topic_line("command", b'{"head":{"mid":7},"dataBody":{"cmd":"x"}}')
    assert json.loads(line) == {
        "topic": "command",
        "payload": {"head": {"mid": 7}, "dataBody": {"cmd": "x"}},
    }
    assert json.loads(jl.topic_line("command", b"not json"))["payload"] == "not json"
    assert json.loads(jl.accepted_answer()) == {
        "statusCode": 0,
        "statusDesc": "successful",
        "mid": None,
    }


TH_CANDIDATE = binary.Candidate("th", TH)
METER_CANDIDATE = binary.Candidate("meter", METER)


def test_a_binary_stream_split_at_every_byte_finds_its_codec_and_frames() -> None:
    stream = th_login() + TH_REPORT + TH_INTERVAL_SET
    for at in range(len(stream) + 1):
        frames = binary.FrameStream([METER_CANDIDATE, TH_CANDIDATE])
        got = frames.feed(stream[:at]) + frames.feed(stream[at:])
        assert got == [th_login(), TH_REPORT, TH_INTERVAL_SET], at
        assert frames.chosen == TH_CANDIDATE


def test_a_binary_stream_byte_by_byte() -> None:
    frames = binary.FrameStream([TH_CANDIDATE])
    got = [f for byte in th_login() + TH_REPORT for f in frames.feed(bytes([byte]))]
    assert got == [th_login(), TH_REPORT]


def test_bytes_no_codec_reads_are_refused() -> None:
    frames = binary.FrameStream([TH_CANDIDATE])
    with pytest.raises(FrameError) as raised:
        frames.feed(b"\x01\x02\x03")
    assert raised.value.code == "bad_header"
    with pytest.raises(FrameError, match="no frame of any"):
        binary.FrameStream([]).feed(b"\x01")
    with pytest.raises(FrameError):
        binary.FrameStream([TH_CANDIDATE, METER_CANDIDATE]).feed(b"\x00" * 8)


def test_garbage_streams_end_in_a_frame_error_or_keep_waiting() -> None:
    rng = random.Random(7)
    for _ in range(300):
        frames = binary.FrameStream([TH_CANDIDATE, METER_CANDIDATE])
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
        try:
            frames.feed(data)
        except FrameError:
            continue
        assert frames.buffered <= 300


def test_a_datagram_finds_its_codec() -> None:
    assert binary.datagram_codec([TH_CANDIDATE, METER_CANDIDATE], METER_READING) == (
        METER_CANDIDATE,
        METER_READING,
    )
    with pytest.raises(FrameError, match="no frame of any"):
        binary.datagram_codec([TH_CANDIDATE, METER_CANDIDATE], b"\x68\x00")
    with pytest.raises(FrameError) as raised:
        binary.datagram_codec([METER_CANDIDATE], b"\x68\x00")
    assert raised.value.code == "truncated"


def test_decoded_frames_become_pipeline_messages() -> None:
    suffix, payload = binary.uplink(TH.decode(TH_REPORT), "th-001") or ("", b"")
    assert suffix == "datas"
    assert json.loads(payload)["devices"][0]["services"][0]["data"] == {
        "temperature": 25.3,
        "humidity": 45.0,
    }
    assert binary.uplink(TH.decode(th_login()), None) is None
    decoded = METER.decode(METER_READING, SECRET)
    assert binary.uplink(decoded, "000012345678") is not None


def command(service: str, cmd: str, params: object, mid: int = 7) -> bytes:
    body = {
        "deviceIdentification": "th-001",
        "productIdentification": "th",
        "msgType": "cloudReq",
        "serviceCode": service,
        "cmd": cmd,
        "params": params,
    }
    return json.dumps({"head": {"mid": mid, "cipherFlag": 0}, "dataBody": body}).encode()


def test_a_platform_command_becomes_the_codecs_frame() -> None:
    frame = binary.command_frame(
        TH, command("config", "setReportInterval", {"interval": 60}), "th-001", None
    )
    assert frame == TH.encode_command("config", "setReportInterval", {"interval": 60}, mid=7)
    meter = binary.command_frame(
        METER, command("meter", "setRelay", {"on": True}, 9), "000012345678", SECRET
    )
    assert METER.datagram(meter) == meter


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{oops", "not valid JSON"),
        (b"[1]", "not a JSON object"),
        (b'{"serviceCode": "config"}', "no serviceCode and cmd"),
        (command("config", "setReportInterval", [1]), "params are not an object"),
        (command("config", "reboot", {}), "no frame for config.reboot"),
        (command("config", "setReportInterval", {"interval": 70000}), "interval"),
    ],
)
def test_a_command_the_codec_cannot_encode_says_why(payload: bytes, reason: str) -> None:
    with pytest.raises(FrameError, match=reason):
        binary.command_frame(TH, payload, "th-001", None)


def test_the_login_answer_when_the_codec_declares_one() -> None:
    assert binary.login_answer(TH, True) == TH.encode("login_answer", {"result": "accepted"})
    assert binary.login_answer(METER, True) is None
