"""edge.fastjson: orjson's speed with the standard library's behaviour at the edges."""

import json

import pytest

from edge import fastjson


@pytest.mark.parametrize("text", [
    b'{"a":1,"b":[1.5,"x",null,true]}',
    b'{"big":123456789012345678901234567890}',  # wider than 64 bits: orjson refuses
    b'{"t":NaN,"u":Infinity}',                   # literals orjson refuses
    '{"\u00e9":"\u4e2d"}'.encode(),
])
def test_loads_accepts_what_the_standard_library_accepts(text):
    got = fastjson.loads(text)
    expected = json.loads(text)
    assert json.dumps(got) == json.dumps(expected)


@pytest.mark.parametrize("text", [b"{", b'{"a":}', b"\xff\xfe", b""])
def test_loads_refuses_with_the_standard_library_message(text):
    with pytest.raises(ValueError) as got:
        fastjson.loads(text)
    with pytest.raises(ValueError) as expected:
        json.loads(text)
    assert str(got.value) == str(expected.value)


def test_dumps_is_compact_utf8_and_falls_back():
    assert fastjson.dumps({"a": [1, "\u4e2d"]}) == '{"a":[1,"\u4e2d"]}'.encode()
    wide = {"n": 2**70, 1: "non-string key"}
    assert json.loads(fastjson.dumps(wide)) == {"n": 2**70, "1": "non-string key"}
    assert fastjson.dumps({"when": object}) == json.dumps(
        {"when": str(object)}, separators=(",", ":")).encode()


def test_integers_wider_than_64_bits_keep_every_digit():
    """orjson alone reads them as floats; the value must be the integer the device sent."""
    for value in (2**64, -(2**63) - 1, 10**30):
        assert fastjson.loads(f'{{"n":{value}}}'.encode()) == {"n": value}
        assert type(fastjson.loads(f"[{value}]")[0]) is int


class _RecordingRedis:
    def __init__(self):
        self.commands = []

    def execute(self, *args):
        from twisted.internet.defer import succeed

        self.commands.append(args)
        return succeed(b"1-0")


@pytest.mark.parametrize(("value", "flagged"), [(21.5, True), (2**70, False)])
def test_uplink_entries_say_whether_orjson_may_read_them(value, flagged):
    """The edge marks an entry `o`=1 when orjson wrote it; an entry with a wider integer is
    written by the standard library, unmarked, and the ingest worker parses it exactly."""
    from twisted.internet.task import Clock

    from edge.bus.keys import Keys
    from edge.bus.uplink import Uplink
    from webapp.telemetry.ingest import decode_entries

    redis = _RecordingRedis()
    uplink = Uplink(redis, Keys("t:"), Clock())
    event = {"t": "data", "dev": "d1", "prod": "p", "svc": "env", "ts": 5, "et": None,
             "v": {"x": value}, "mid": None}
    uplink.emit(event)
    uplink.flush()
    (command,) = redis.commands
    fields = command[command.index("*") + 1:]
    assert ("o" in fields) is flagged
    entry = (b"1-0", {k.encode() if isinstance(k, str) else k:
                      v.encode() if isinstance(v, str) else v
                      for k, v in zip(fields[::2], fields[1::2])})
    batch, ids = decode_entries([entry])
    assert ids == [b"1-0"]
    assert batch.points[0].values == {"x": value}
    assert type(batch.points[0].values["x"]) is type(value)


@pytest.mark.parametrize("text", [
    b'{"a":"\\ud800"}',                                  # orjson refuses
    b'{"a":"\\udc00","b":1234567890123456789012}',       # the standard library's path
    b'{"a":NaN,"\\ud800":1}',                            # orjson refuses for another reason
])
def test_loads_refuses_lone_surrogates(text):
    """A lone surrogate reaches no encoder downstream (orjson, UTF-8, PostgreSQL): the fuzzer
    found one crashing the envelope's signature check and the uplink writer."""
    with pytest.raises(ValueError, match="surrogate"):
        fastjson.loads(text)


def test_loads_keeps_surrogate_pairs():
    assert fastjson.loads(b'{"a":"\\ud83d\\ude00","b":1234567890123456789012}')["a"] == "\U0001f600"


def test_loads_refuses_utf8_encoded_surrogates():
    """json.loads reads bytes with "surrogatepass": ED A0 80 must not become "\\ud800"."""
    with pytest.raises(ValueError, match="surrogate"):
        fastjson.loads(b'{"a":"x\xed\xa0\x80","t":1234567890123456789012}')


@pytest.mark.parametrize("text", [b"[" * 5000, b'{"t":1234567890123456789012,"a":' + b"[" * 5000])
def test_loads_refuses_deep_nesting_with_a_value_error(text):
    """Found by the fuzzer: the standard library's fallback raised RecursionError."""
    with pytest.raises(ValueError, match=r"deep|recursion"):
        fastjson.loads(text)
