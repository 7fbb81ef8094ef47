"""Primitive MQTT data representations (section 1.5): integers, strings, binary data."""

from __future__ import annotations

from .errors import MalformedPacket

MAX_VARIABLE_BYTE_INTEGER = 268_435_455


class Reader:
    """Reads MQTT primitives from one packet body; any underrun is a malformed packet."""

    __slots__ = ("data", "end", "pos")

    def __init__(self, data: bytes, pos: int = 0, end: int | None = None) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end

    def remaining(self) -> int:
        return self.end - self.pos

    def _take(self, n: int) -> int:
        pos = self.pos
        if pos + n > self.end:
            raise MalformedPacket("packet shorter than its fields")
        self.pos = pos + n
        return pos

    def byte(self) -> int:
        return self.data[self._take(1)]

    def u16(self) -> int:
        pos = self._take(2)
        return (self.data[pos] << 8) | self.data[pos + 1]

    def u32(self) -> int:
        pos = self._take(4)
        return int.from_bytes(self.data[pos : pos + 4], "big")

    def vbi(self) -> int:
        value, self.pos = decode_vbi(self.data, self.pos, self.end)
        if value < 0:
            raise MalformedPacket("variable byte integer runs past the packet")
        return value

    def binary(self) -> bytes:
        n = self.u16()
        pos = self._take(n)
        return bytes(self.data[pos : pos + n])

    def utf8(self) -> str:
        return decode_utf8(self.binary())

    def rest(self) -> bytes:
        pos = self.pos
        self.pos = self.end
        return bytes(self.data[pos : self.end])


def decode_vbi(data: bytes | bytearray, pos: int, end: int) -> tuple[int, int]:
    """Decode a variable byte integer at ``pos``; return ``(value, new_pos)``.

    ``value`` is -1 when the data ends before the integer does (the caller decides whether that
    means "wait for more bytes" or "malformed"). More than four bytes is malformed (1.5.5).
    """
    value = 0
    shift = 0
    for i in range(4):
        if pos + i >= end:
            return -1, pos
        byte = data[pos + i]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if i and byte == 0:
                # A zero continuation byte means the value was not encoded in the fewest bytes.
                raise MalformedPacket("variable byte integer not minimally encoded")
            return value, pos + i + 1
        shift += 7
    raise MalformedPacket("variable byte integer longer than four bytes")


def encode_vbi(value: int) -> bytes:
    if not 0 <= value <= MAX_VARIABLE_BYTE_INTEGER:
        raise ValueError(f"variable byte integer out of range: {value}")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def decode_utf8(raw: bytes) -> str:
    """A UTF-8 Encoded String (1.5.4): well-formed, no surrogates, no U+0000."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedPacket("string is not well-formed UTF-8") from exc
    if "\x00" in text:
        raise MalformedPacket("string contains U+0000")
    return text


def encode_utf8(text: str) -> bytes:
    raw = text.encode("utf-8")
    return encode_binary(raw)


def encode_binary(raw: bytes) -> bytes:
    n = len(raw)
    if n > 0xFFFF:
        raise ValueError("string or binary data longer than 65535 bytes")
    return bytes((n >> 8, n & 0xFF)) + raw


def u16(value: int) -> bytes:
    return value.to_bytes(2, "big")


def u32(value: int) -> bytes:
    return value.to_bytes(4, "big")
