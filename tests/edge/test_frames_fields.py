"""Binary frames: every field type read and written byte by byte, against hand-computed bytes."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from edge.frames import fields as f
from edge.frames.errors import FrameError


def field(type_: str, size: int | None = None, **options: Any) -> f.Field:
    if size is None:
        size = f.INTEGER_TYPES[type_][0] if type_ in f.INTEGER_TYPES else f.FLOAT_TYPES[type_][0]
    for key in ("scale", "bias"):
        if key in options:
            options[key] = Decimal(str(options[key]))
    return f.Field("x", type_, 0, size, **options)


# (type, little endian, bytes, value)
NUMBERS = [
    ("u8", False, "ff", 255),
    ("i8", False, "ff", -1),
    ("i8", False, "80", -128),
    ("u16", False, "1234", 0x1234),
    ("u16", True, "1234", 0x3412),
    ("i16", False, "ff38", -200),
    ("i16", True, "38ff", -200),
    ("u32", False, "deadbeef", 3735928559),
    ("u32", True, "deadbeef", 4022250974),
    ("i32", False, "fffffffe", -2),
    ("i32", True, "feffffff", -2),
    ("u64", False, "0000000000000100", 256),
    ("u64", True, "0001000000000000", 256),
    ("i64", False, "ffffffffffffffff", -1),
    ("i64", True, "0000000000000080", -(2**63)),
    ("f32", False, "41c80000", 25.0),
    ("f32", True, "0000c841", 25.0),
    ("f32", False, "3fc00000", 1.5),
    ("f64", False, "4039000000000000", 25.0),
    ("f64", True, "0000000000003940", 25.0),
    ("f64", False, "c004000000000000", -2.5),
]


@pytest.mark.parametrize(("type_", "little", "hex_", "value"), NUMBERS)
def test_numbers_both_ways(type_: str, little: bool, hex_: str, value: Any) -> None:
    spec = field(type_, little=little)
    data = bytes.fromhex(hex_)
    decoded = f.decode(spec, data)
    assert decoded == value and type(decoded) is type(value)
    buffer = bytearray(len(data))
    f.encode(spec, value, buffer)
    assert buffer.hex() == hex_


def test_a_field_reads_at_its_offset_and_writes_only_its_bytes() -> None:
    spec = f.Field("x", "u16", 2, 2)
    assert f.decode(spec, bytes.fromhex("aaaa0102bbbb")) == 0x0102
    buffer = bytearray.fromhex("aaaa0000bbbb")
    f.encode(spec, 0x0304, buffer)
    assert buffer.hex() == "aaaa0304bbbb"


@pytest.mark.parametrize(
    ("little", "hex_", "value"),
    [(False, "1234", 1234), (True, "1234", 3412), (False, "000099", 99), (False, "00", 0)],
)
def test_bcd(little: bool, hex_: str, value: int) -> None:
    spec = field("bcd", len(hex_) // 2, little=little)
    assert f.decode(spec, bytes.fromhex(hex_)) == value
    buffer = bytearray(len(hex_) // 2)
    f.encode(spec, value, buffer)
    assert buffer.hex() == hex_


@pytest.mark.parametrize(
    ("hex_", "little", "bit", "width", "value"),
    [
        ("a5", False, 0, 1, 1),  # 1010 0101
        ("a5", False, 1, 2, 2),
        ("a5", False, 5, 3, 5),
        ("a5", False, 0, 8, 0xA5),
        ("0180", False, 7, 2, 3),  # 0x0180 = 1 1000 0000
        ("8001", True, 7, 2, 3),  # the same word, little endian
        ("0180", False, 0, 7, 0),
    ],
)
def test_bits(hex_: str, little: bool, bit: int, width: int, value: int) -> None:
    spec = field("bits", len(hex_) // 2, little=little, bit=bit, width=width)
    assert f.decode(spec, bytes.fromhex(hex_)) == value


def test_bits_fields_sharing_a_byte_write_only_their_bits() -> None:
    relay = field("bits", 1, bit=0, width=1)
    mode = field("bits", 1, bit=1, width=2)
    tamper = field("bits", 1, bit=7, width=1)
    buffer = bytearray(1)
    f.encode(relay, 1, buffer)
    f.encode(mode, 2, buffer)
    f.encode(tamper, 1, buffer)
    assert buffer.hex() == "85"  # 1000 0101
    f.encode(mode, 1, buffer)
    assert buffer.hex() == "83"


def test_ascii_and_hex() -> None:
    text = field("ascii", 8)
    assert f.decode(text, b"dev-1\0\0\0") == "dev-1"
    assert f.decode(text, b"12345678") == "12345678"
    buffer = bytearray(8)
    f.encode(text, "dev-1", buffer)
    assert bytes(buffer) == b"dev-1\0\0\0"
    hexed = field("hex", 3)
    assert f.decode(hexed, b"\x00\x12\xab") == "0012ab"
    buffer = bytearray(3)
    f.encode(hexed, "0012AB", buffer)
    assert buffer.hex() == "0012ab"


def test_scale_and_bias_are_exact_in_decimal() -> None:
    assert f.decode(field("i16", scale=0.1), bytes.fromhex("00fd")) == 25.3
    assert f.decode(field("i16", scale=0.1), bytes.fromhex("ff38")) == -20.0
    assert f.decode(field("u32", scale=0.01), bytes.fromhex("000186a0")) == 1000.0
    assert f.decode(field("u16", scale=0.001), bytes.fromhex("0003")) == 0.003
    assert f.decode(field("u8", scale=0.5, bias=-40), b"\x64") == 10.0
    whole = f.decode(field("u8", scale=2, bias=1), b"\x03")
    assert whole == 7 and type(whole) is int
    assert f.decode(field("f32", scale=2, bias=1), bytes.fromhex("3fc00000")) == 4.0


@pytest.mark.parametrize(
    ("options", "value", "hex_"),
    [
        ({"scale": 0.1}, 25.3, "00fd"),
        ({"scale": 0.1}, -20, "ff38"),
        ({"scale": 0.1}, 25.34, "00fd"),  # rounded to the field's resolution
        ({"scale": 0.5, "bias": -40}, 10, "0064"),
    ],
)
def test_scaled_values_encode_back(options: dict[str, Any], value: Any, hex_: str) -> None:
    buffer = bytearray(2)
    f.encode(field("i16", **options), value, buffer)
    assert buffer.hex() == hex_


def test_enum_maps_raw_integers_both_ways() -> None:
    spec = field("u8", enum={0: False, 1: True, 2: "boost"})
    assert f.decode(spec, b"\x00") is False
    assert f.decode(spec, b"\x01") is True
    assert f.decode(spec, b"\x02") == "boost"
    buffer = bytearray(1)
    f.encode(spec, True, buffer)
    assert buffer == b"\x01"
    f.encode(spec, "boost", buffer)
    assert buffer == b"\x02"
    with pytest.raises(FrameError, match="not one of") as caught:
        f.encode(spec, 1, buffer)  # the number 1 is not the boolean true
    assert caught.value.code == "bad_value"
    with pytest.raises(FrameError, match="not in its enum map"):
        f.decode(spec, b"\x07")


def test_const_is_checked_and_written() -> None:
    spec = field("u8", const=0x68)
    assert f.decode(spec, b"\x68") == 0x68
    with pytest.raises(FrameError, match="must be 104, not 105"):
        f.decode(spec, b"\x69")
    buffer = bytearray(1)
    f.encode(spec, None, buffer)
    assert buffer == b"\x68"


@pytest.mark.parametrize(
    ("spec", "data", "code", "reason"),
    [
        (field("bcd", 1), b"\x1a", "bad_value", "not BCD"),
        (field("bcd", 1), b"\xa1", "bad_value", "not BCD"),
        (field("ascii", 2), b"a\x01", "bad_value", "not printable ASCII"),
        (field("ascii", 2), b"\xc3\xa9", "bad_value", "not printable ASCII"),
        (field("ascii", 3), b"a\0b", "bad_value", "not printable ASCII"),
        (field("f32"), bytes.fromhex("7fc00000"), "bad_value", "not a finite number"),
        (field("f64"), bytes.fromhex("7ff0000000000000"), "bad_value", "not a finite number"),
        (field("u32"), b"\x01\x02\x03", "truncated", "needs bytes 0..3; the frame has 3"),
        (f.Field("x", "u8", 5, 1), b"\x00", "truncated", "needs bytes 5..5"),
    ],
)
def test_bytes_that_are_no_value_are_refused(
    spec: f.Field, data: bytes, code: str, reason: str
) -> None:
    with pytest.raises(FrameError, match=reason) as caught:
        f.decode(spec, data)
    assert caught.value.code == code


@pytest.mark.parametrize(
    ("spec", "value", "code", "reason"),
    [
        (field("u8"), 256, "out_of_range", "256 is outside 0..255"),
        (field("u8"), -1, "out_of_range", "outside 0..255"),
        (field("i8"), -129, "out_of_range", "outside -128..127"),
        (field("i16", scale=0.1), 3276.8, "out_of_range", "32768 is outside"),
        (field("u16"), True, "bad_value", "takes a number"),
        (field("u16"), "12", "bad_value", "takes a number"),
        (field("u16"), float("nan"), "bad_value", "finite"),
        (field("f32"), 1e39, "out_of_range", "does not fit f32"),
        (field("bcd", 1), 100, "out_of_range", "outside 0..99"),
        (field("bcd", 1), -1, "out_of_range", "outside 0..99"),
        (field("bits", 1, bit=1, width=2), 4, "out_of_range", "outside 0..3"),
        (field("ascii", 3), "abcd", "out_of_range", "at most 3 characters"),
        (field("ascii", 3), "é", "bad_value", "printable ASCII"),
        (field("ascii", 3), 12, "bad_value", "takes a string"),
        (field("hex", 2), "abc", "bad_value", "not hex"),
        (field("hex", 2), "abcdef", "bad_value", "takes 2 bytes of hex, not 3"),
    ],
)
def test_values_that_do_not_fit_are_refused(
    spec: f.Field, value: Any, code: str, reason: str
) -> None:
    with pytest.raises(FrameError, match=reason) as caught:
        f.encode(spec, value, bytearray(spec.size))
    assert caught.value.code == code
