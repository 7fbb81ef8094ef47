"""Binary frames: stream framers fed at every split of their input, datagrams, and refusals."""

from __future__ import annotations

from typing import Any

import pytest

from edge.frames.errors import FrameError
from edge.frames.framing import StreamFramer, frame_of_datagram
from edge.frames.spec import Framing, validate


def framing(spec: dict[str, Any], transport: str = "tcp") -> Framing:
    """The framing of a minimal codec (one message naming its device, with a MAC); fixed
    framing without a length reads each frame's length from a type byte at offset 0."""
    by_type = spec["type"] == "fixed" and "length" not in spec
    message: dict[str, Any] = {
        "name": "m",
        "kind": "datas",
        "service": "s",
        "device": "dev",
        "fields": [
            {"name": "dev", "type": "u8", "offset": 1 if by_type else 0},
            {"name": "v", "type": "u8", "offset": 2 if by_type else 1},
        ],
    }
    document: dict[str, Any] = {
        "codec": 1,
        "name": "t",
        "transport": transport,
        "framing": spec,
        "auth": {"type": "mac", "size": 4, "at": -4},
        "messages": [message],
    }
    if by_type:
        document["discriminator"] = {"offset": 0, "type": "u8"}
        message.update(id=7, length=6)
    return validate(document).framing


DELIMITED = framing({"type": "delimiter", "delimiter": "0d0a", "max_frame": 8})
FIXED = framing({"type": "fixed", "length": 4, "header": "aa"})
BY_TYPE = framing({"type": "fixed"})
# 68 | length (u16 big endian) = bytes after the length field | …
COUNTED = framing(
    {"type": "length", "offset": 1, "size": 2, "adjust": 0, "max_frame": 16, "header": "68"}
)
# a little-endian length byte counting the whole frame: adjust -2 (the header and itself)
WHOLE = framing(
    {"type": "length", "offset": 1, "size": 1, "byte_order": "little", "adjust": -2, "max_frame": 8}
)

STREAMS = [
    (DELIMITED, b"abc\r\n\r\nxy\r\n12345678\r\n", [b"abc", b"xy", b"12345678"]),
    (
        FIXED,
        bytes.fromhex("aa010203aa040506aa070809"),
        [b"\xaa\x01\x02\x03", b"\xaa\x04\x05\x06", b"\xaa\x07\x08\x09"],
    ),
    (
        BY_TYPE,
        bytes.fromhex("07010203040507aabbccddee"),
        [bytes.fromhex("070102030405"), bytes.fromhex("07aabbccddee")],
    ),
    (
        COUNTED,
        bytes.fromhex("680002aabb6800006800050102030405"),
        [bytes.fromhex("680002aabb"), bytes.fromhex("680000"), bytes.fromhex("6800050102030405")],
    ),
    (
        WHOLE,
        bytes.fromhex("0004aabbff020103cc"),
        [bytes.fromhex("0004aabb"), bytes.fromhex("ff02"), bytes.fromhex("0103cc")],
    ),
]


@pytest.mark.parametrize(("spec", "stream", "frames"), STREAMS)
def test_every_split_gives_the_same_frames(
    spec: Framing, stream: bytes, frames: list[bytes]
) -> None:
    for cut in range(len(stream) + 1):
        framer = StreamFramer(spec)
        got = framer.feed(stream[:cut]) + framer.feed(stream[cut:])
        assert got == frames, cut
        assert framer.buffered == 0
    for first in range(len(stream) + 1):
        for second in range(first, len(stream) + 1):
            framer = StreamFramer(spec)
            parts = (stream[:first], stream[first:second], stream[second:])
            assert [frame for part in parts for frame in framer.feed(part)] == frames


@pytest.mark.parametrize(("spec", "stream", "frames"), STREAMS)
def test_byte_by_byte_keeps_at_most_one_frame(
    spec: Framing, stream: bytes, frames: list[bytes]
) -> None:
    framer = StreamFramer(spec)
    got: list[bytes] = []
    for byte in stream:
        got += framer.feed(bytes([byte]))
        assert framer.buffered <= spec.max_frame + len(spec.delimiter) - 1
    assert got == frames


@pytest.mark.parametrize(
    ("spec", "stream", "code", "reason"),
    [
        (DELIMITED, b"123456789", "oversize", "no delimiter within 8 bytes"),
        (FIXED, b"\xab", "bad_header", "starts with aa, not ab"),
        (FIXED, bytes.fromhex("aa010203ff"), "bad_header", "starts with aa, not ff"),
        (BY_TYPE, b"\x08", "unknown_type", "no message has the type 8"),
        (COUNTED, b"\x69", "bad_header", "starts with 68, not 69"),
        (COUNTED, bytes.fromhex("68ffff"), "oversize", "a frame of 65538 bytes; the largest is 16"),
        (COUNTED, bytes.fromhex("68000e"), "oversize", "a frame of 17 bytes"),
        (WHOLE, bytes.fromhex("0001"), "bad_length", "the length field says 1: a frame of 1 bytes"),
    ],
)
def test_garbage_is_refused_as_soon_as_it_shows(
    spec: Framing, stream: bytes, code: str, reason: str
) -> None:
    framer = StreamFramer(spec)
    with pytest.raises(FrameError, match=reason) as caught:
        for byte in stream:  # byte by byte: the framer refuses without waiting for more
            framer.feed(bytes([byte]))
    assert caught.value.code == code
    assert framer.buffered == 0
    with pytest.raises(FrameError, match=reason):  # out of step for good
        framer.feed(stream)


def test_an_oversize_frame_arriving_whole_is_refused() -> None:
    with pytest.raises(FrameError, match="a frame of 9 bytes; the largest is 8") as caught:
        StreamFramer(DELIMITED).feed(b"ok\r\n123456789\r\n")
    assert caught.value.code == "oversize"


def test_a_chunk_of_many_frames_is_split_in_linear_time() -> None:
    frames = StreamFramer(COUNTED).feed(bytes.fromhex("680000") * 50000)
    assert len(frames) == 50000 and frames[-1] == bytes.fromhex("680000")


def test_a_delimiter_split_after_max_frame_bytes_is_still_awaited() -> None:
    framer = StreamFramer(DELIMITED)
    assert framer.feed(b"12345678\r") == []
    assert framer.buffered == 9
    assert framer.feed(b"\n") == [b"12345678"]


def test_a_delimited_stream_is_searched_once() -> None:
    """Byte-by-byte input does not make the framer search its buffer again each time."""
    spec = framing({"type": "delimiter", "delimiter": "00", "max_frame": 60000})
    framer = StreamFramer(spec)
    for _ in range(59999):
        framer.feed(b"\x01")
    assert framer.feed(b"\x01\x00") == [b"\x01" * 60000]


def test_datagram_framing_has_no_stream_framer() -> None:
    spec = framing({"type": "datagram", "max_frame": 8}, transport="udp")
    with pytest.raises(ValueError, match="no stream framer"):
        StreamFramer(spec)
    assert frame_of_datagram(spec, b"\x01\x02") == b"\x01\x02"


@pytest.mark.parametrize(
    ("spec", "datagram", "frame"),
    [
        (COUNTED, bytes.fromhex("680002aabb"), bytes.fromhex("680002aabb")),
        (FIXED, bytes.fromhex("aa010203"), bytes.fromhex("aa010203")),
        (DELIMITED, b"abc\r\n", b"abc"),
        (DELIMITED, b"abc", b"abc"),
        (BY_TYPE, bytes.fromhex("070102030405"), bytes.fromhex("070102030405")),
    ],
)
def test_a_datagram_is_one_frame(spec: Framing, datagram: bytes, frame: bytes) -> None:
    assert frame_of_datagram(spec, datagram) == frame


@pytest.mark.parametrize(
    ("spec", "datagram", "code", "reason"),
    [
        (COUNTED, b"", "truncated", "empty"),
        (COUNTED, bytes.fromhex("680002aa"), "truncated", "4 bytes of a longer frame"),
        (COUNTED, bytes.fromhex("6800"), "truncated", "2 bytes of a longer frame"),
        (COUNTED, bytes.fromhex("680002aabb68"), "bad_length", "6 bytes; its frame is 5"),
        (COUNTED, bytes.fromhex("69") + bytes(4), "bad_header", "not 69"),
        (COUNTED, bytes(17), "oversize", "a frame of 17 bytes"),
        (FIXED, bytes.fromhex("aa0102"), "truncated", "3 bytes"),
        (FIXED, bytes.fromhex("aa01020304"), "oversize", "a frame of 5 bytes"),
        (DELIMITED, b"\r\n", "truncated", "empty"),
        (DELIMITED, b"123456789", "oversize", "a frame of 9 bytes"),
        (BY_TYPE, bytes.fromhex("0801"), "unknown_type", "type 8"),
    ],
)
def test_a_bad_datagram_is_refused(spec: Framing, datagram: bytes, code: str, reason: str) -> None:
    with pytest.raises(FrameError, match=reason) as caught:
        frame_of_datagram(spec, datagram)
    assert caught.value.code == code
