"""The CoAP message codec (RFC 7252 section 3), its option registry and option value formats.

``decode`` turns one datagram into a ``Message`` or raises ``MessageFormatError`` with the
reason; ``encode`` is its exact inverse: for every datagram ``decode`` accepts,
``encode(decode(d)) == d`` (the option header encoding is unique and option values are kept as
the bytes that came in, so a uint with leading zeros survives a round trip).

Two levels of checking, because the RFC answers them differently:

* A *message format error* (section 3: a truncated header, token or option, a reserved token
  length or option nibble, a payload marker with no payload, an Empty message with bytes after
  its header, a code or type combination the RFC forbids) makes the message unusable.
  ``MessageFormatError.reply()`` says what goes back: a Confirmable message is rejected with a
  Reset carrying its message id (section 4.2); anything else is silently dropped (section 4.3:
  a Reset for a Non-confirmable message is optional, and Acknowledgements and Resets are never
  answered). 4.00 is not the answer to a format error: a response needs a parsed request.
* An *option problem* (``bad_option``: an unrecognised critical option, a value whose length or
  format is outside the registry's range, a non-repeatable critical option repeated) leaves a
  well-formed message. Section 5.4 makes such a critical option in a request a 4.02 Bad Option
  response, and in a response a rejection; the same problem in an elective option is ignored.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import NamedTuple

VERSION = 1
PAYLOAD_MARKER = 0xFF
MAX_OPTION_NUMBER = 0xFFFF


class Type(IntEnum):
    """Message types (section 3)."""

    CON = 0
    NON = 1
    ACK = 2
    RST = 3


class Code(IntEnum):
    """The method and response codes this platform names: class << 5 | detail."""

    EMPTY = 0
    GET = 1
    POST = 2
    PUT = 3
    DELETE = 4
    FETCH = 5
    PATCH = 6
    IPATCH = 7
    CREATED = 2 << 5 | 1
    DELETED = 2 << 5 | 2
    VALID = 2 << 5 | 3
    CHANGED = 2 << 5 | 4
    CONTENT = 2 << 5 | 5
    CONTINUE = 2 << 5 | 31
    BAD_REQUEST = 4 << 5 | 0
    UNAUTHORIZED = 4 << 5 | 1
    BAD_OPTION = 4 << 5 | 2
    FORBIDDEN = 4 << 5 | 3
    NOT_FOUND = 4 << 5 | 4
    METHOD_NOT_ALLOWED = 4 << 5 | 5
    NOT_ACCEPTABLE = 4 << 5 | 6
    REQUEST_ENTITY_INCOMPLETE = 4 << 5 | 8
    PRECONDITION_FAILED = 4 << 5 | 12
    REQUEST_ENTITY_TOO_LARGE = 4 << 5 | 13
    UNSUPPORTED_CONTENT_FORMAT = 4 << 5 | 15
    TOO_MANY_REQUESTS = 4 << 5 | 29
    INTERNAL_SERVER_ERROR = 5 << 5 | 0
    NOT_IMPLEMENTED = 5 << 5 | 1
    BAD_GATEWAY = 5 << 5 | 2
    SERVICE_UNAVAILABLE = 5 << 5 | 3
    GATEWAY_TIMEOUT = 5 << 5 | 4
    PROXYING_NOT_SUPPORTED = 5 << 5 | 5


def code_text(code: int) -> str:
    """The dotted form the RFCs use: 69 -> "2.05"."""
    return f"{code >> 5}.{code & 0x1F:02d}"


def is_request(code: int) -> bool:
    return 1 <= code <= 31


def is_response(code: int) -> bool:
    return (code >> 5) in (2, 4, 5)


def is_success(code: int) -> bool:
    return code >> 5 == 2


class OptionNumber(IntEnum):
    """Registered option numbers (RFC 7252 section 5.10, RFC 7641, RFC 7959)."""

    IF_MATCH = 1
    URI_HOST = 3
    ETAG = 4
    IF_NONE_MATCH = 5
    OBSERVE = 6
    URI_PORT = 7
    LOCATION_PATH = 8
    URI_PATH = 11
    CONTENT_FORMAT = 12
    MAX_AGE = 14
    URI_QUERY = 15
    ACCEPT = 17
    LOCATION_QUERY = 20
    BLOCK2 = 23
    BLOCK1 = 27
    SIZE2 = 28
    PROXY_URI = 35
    PROXY_SCHEME = 39
    SIZE1 = 60


class Format(Enum):
    """Option value formats (section 3.2)."""

    EMPTY = "empty"
    OPAQUE = "opaque"
    UINT = "uint"
    STRING = "string"


@dataclass(frozen=True, slots=True)
class OptionSpec:
    number: int
    name: str
    format: Format
    min_length: int
    max_length: int
    repeatable: bool


def _spec(number: OptionNumber, fmt: Format, low: int, high: int, repeat: bool) -> OptionSpec:
    name = "-".join(part.capitalize() for part in number.name.split("_"))
    return OptionSpec(int(number), name, fmt, low, high, repeat)


_O = OptionNumber
REGISTRY: dict[int, OptionSpec] = {
    spec.number: spec
    for spec in (
        _spec(_O.IF_MATCH, Format.OPAQUE, 0, 8, True),
        _spec(_O.URI_HOST, Format.STRING, 1, 255, False),
        _spec(_O.ETAG, Format.OPAQUE, 1, 8, True),
        _spec(_O.IF_NONE_MATCH, Format.EMPTY, 0, 0, False),
        _spec(_O.OBSERVE, Format.UINT, 0, 3, False),
        _spec(_O.URI_PORT, Format.UINT, 0, 2, False),
        _spec(_O.LOCATION_PATH, Format.STRING, 0, 255, True),
        _spec(_O.URI_PATH, Format.STRING, 0, 255, True),
        _spec(_O.CONTENT_FORMAT, Format.UINT, 0, 2, False),
        _spec(_O.MAX_AGE, Format.UINT, 0, 4, False),
        _spec(_O.URI_QUERY, Format.STRING, 0, 255, True),
        _spec(_O.ACCEPT, Format.UINT, 0, 2, False),
        _spec(_O.LOCATION_QUERY, Format.STRING, 0, 255, True),
        _spec(_O.BLOCK2, Format.UINT, 0, 3, False),
        _spec(_O.BLOCK1, Format.UINT, 0, 3, False),
        _spec(_O.SIZE2, Format.UINT, 0, 4, False),
        _spec(_O.PROXY_URI, Format.STRING, 1, 1034, False),
        _spec(_O.PROXY_SCHEME, Format.STRING, 1, 255, False),
        _spec(_O.SIZE1, Format.UINT, 0, 4, False),
    )
}


def is_critical(number: int) -> bool:
    """Odd option numbers are critical: a recipient that does not know one must refuse."""
    return bool(number & 1)


def is_unsafe(number: int) -> bool:
    """Bit 1 marks options a proxy that does not know them must not forward."""
    return bool(number & 2)


def is_no_cache_key(number: int) -> bool:
    return number & 0x1E == 0x1C


# --- option value formats ---------------------------------------------------------------------


def encode_uint(value: int) -> bytes:
    """A uint option value in as few bytes as possible (0 is the empty value)."""
    if value < 0:
        raise ValueError("a uint option value is not negative")
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


def decode_uint(data: bytes) -> int:
    """Leading zero bytes are accepted, as section 3.2 requires of a recipient."""
    return int.from_bytes(data, "big")


class Block(NamedTuple):
    """A Block1/Block2 value (RFC 7959 section 2.2): block number, more flag, size exponent."""

    num: int
    more: bool
    szx: int

    @property
    def size(self) -> int:
        return 1 << (self.szx + 4)

    @property
    def offset(self) -> int:
        return self.num * self.size


MAX_SZX = 6  # 1024 bytes; 7 is reserved (BERT on reliable transports only)
MAX_BLOCK_NUM = (1 << 20) - 1


def encode_block(block: Block) -> bytes:
    if not 0 <= block.szx <= MAX_SZX:
        raise ValueError(f"block SZX {block.szx} is outside 0..6")
    if not 0 <= block.num <= MAX_BLOCK_NUM:
        raise ValueError(f"block number {block.num} does not fit in 20 bits")
    return encode_uint(block.num << 4 | int(block.more) << 3 | block.szx)


def decode_block(data: bytes) -> Block:
    """Raises ValueError for the reserved SZX 7 (RFC 7959 section 2.2: a 4.00 in a request)."""
    if len(data) > 3:
        raise ValueError("a block option has at most 3 bytes")
    value = decode_uint(data)
    szx = value & 0x7
    if szx == 7:
        raise ValueError("block SZX 7 is reserved")
    return Block(value >> 4, bool(value & 0x8), szx)


OptionValue = int | str | bytes | Block | None


def option(number: int, value: OptionValue = None) -> tuple[int, bytes]:
    """One option, its value encoded by the registry's format (unknown numbers take bytes)."""
    if isinstance(value, Block):
        return number, encode_block(value)
    if isinstance(value, bool):
        raise TypeError("an option value is not a bool")
    if isinstance(value, int):
        return number, encode_uint(value)
    if isinstance(value, str):
        return number, value.encode("utf-8")
    return number, value or b""


# --- messages ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Message:
    """One CoAP message. ``options`` hold (number, raw value) pairs, in the order of the wire."""

    type: Type
    code: int
    mid: int
    token: bytes = b""
    options: tuple[tuple[int, bytes], ...] = ()
    payload: bytes = b""

    def values(self, number: int) -> list[bytes]:
        return [value for n, value in self.options if n == number]

    def first(self, number: int) -> bytes | None:
        for n, value in self.options:
            if n == number:
                return value
        return None

    def uint(self, number: int) -> int | None:
        value = self.first(number)
        return None if value is None else decode_uint(value)

    def strings(self, number: int) -> list[str]:
        return [value.decode("utf-8", "replace") for value in self.values(number)]

    @property
    def uri_path(self) -> str:
        return "/" + "/".join(self.strings(OptionNumber.URI_PATH))

    @property
    def uri_query(self) -> list[str]:
        return self.strings(OptionNumber.URI_QUERY)

    @property
    def observe(self) -> int | None:
        return self.uint(OptionNumber.OBSERVE)

    @property
    def content_format(self) -> int | None:
        return self.uint(OptionNumber.CONTENT_FORMAT)

    @property
    def block1(self) -> Block | None:
        return _block(self.first(OptionNumber.BLOCK1))

    @property
    def block2(self) -> Block | None:
        return _block(self.first(OptionNumber.BLOCK2))

    def with_options(self, *extra: tuple[int, bytes], drop: Iterable[int] = ()) -> Message:
        """A copy with the numbers in ``drop`` removed and ``extra`` added (kept sorted)."""
        dropped = set(drop)
        kept = [item for item in self.options if item[0] not in dropped]
        return Message(
            self.type,
            self.code,
            self.mid,
            self.token,
            _sorted_options([*kept, *extra]),
            self.payload,
        )


def _block(data: bytes | None) -> Block | None:
    """Raises ValueError for SZX 7, which RFC 7959 answers with 4.00 rather than ignores."""
    return None if data is None else decode_block(data)


def _sorted_options(options: Sequence[tuple[int, bytes]]) -> tuple[tuple[int, bytes], ...]:
    """Stable: repeated options keep their relative order, which carries meaning (Uri-Path)."""
    return tuple(sorted(options, key=lambda item: item[0]))


def build(
    type_: Type,
    code: int,
    mid: int,
    token: bytes = b"",
    options: Iterable[tuple[int, bytes]] = (),
    payload: bytes = b"",
) -> Message:
    return Message(type_, code, mid, token, _sorted_options(list(options)), payload)


def empty(type_: Type, mid: int) -> Message:
    """An Empty ACK or RST (or a CON ping)."""
    return Message(type_, Code.EMPTY, mid)


# --- errors -----------------------------------------------------------------------------------


class MessageFormatError(ValueError):
    """A datagram the codec refuses; ``reason`` says why in plain words."""

    def __init__(self, reason: str, type_: Type | None = None, mid: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.type = type_
        self.mid = mid

    def reply(self) -> Message | None:
        """The Reset that rejects a Confirmable message (RFC 7252 section 4.2), else nothing."""
        if self.type is Type.CON and self.mid is not None:
            return empty(Type.RST, self.mid)
        return None


class UnsupportedVersion(MessageFormatError):
    """Section 3: messages with an unknown version are silently ignored, never answered."""

    def reply(self) -> Message | None:
        return None


# --- encoding ---------------------------------------------------------------------------------


def _nibble(value: int) -> tuple[int, bytes]:
    if value < 13:
        return value, b""
    if value < 269:
        return 13, bytes((value - 13,))
    if value < 65805:
        return 14, (value - 269).to_bytes(2, "big")
    raise ValueError(f"option delta or length {value} is too large")


def encode(message: Message) -> bytes:
    """The datagram for ``message``; options are written in number order (stable)."""
    token = message.token
    if len(token) > 8:
        raise ValueError("a token has at most 8 bytes")
    if not 0 <= message.mid <= 0xFFFF:
        raise ValueError("a message id has 16 bits")
    if not 0 <= message.code <= 0xFF:
        raise ValueError("a code has 8 bits")
    out = bytearray(
        (VERSION << 6 | int(message.type) << 4 | len(token), message.code, *message.mid.to_bytes(2))
    )
    out += token
    previous = 0
    for number, value in _sorted_options(message.options):
        if not 0 <= number <= MAX_OPTION_NUMBER:
            raise ValueError(f"option number {number} is outside 0..65535")
        delta, delta_ext = _nibble(number - previous)
        length, length_ext = _nibble(len(value))
        out.append(delta << 4 | length)
        out += delta_ext
        out += length_ext
        out += value
        previous = number
    if message.payload:
        out.append(PAYLOAD_MARKER)
        out += message.payload
    return bytes(out)


# --- decoding ---------------------------------------------------------------------------------


def _extended(
    nibble: int, data: bytes, pos: int, what: str, error: MessageFormatError
) -> tuple[int, int]:
    if nibble < 13:
        return nibble, pos
    if nibble == 13:
        if pos + 1 > len(data):
            raise _again(error, f"the 1-byte extended option {what} is cut off")
        return data[pos] + 13, pos + 1
    if nibble == 14:
        if pos + 2 > len(data):
            raise _again(error, f"the 2-byte extended option {what} is cut off")
        return int.from_bytes(data[pos : pos + 2], "big") + 269, pos + 2
    raise _again(error, f"option {what} nibble 15 is reserved")


def _again(template: MessageFormatError, reason: str) -> MessageFormatError:
    return MessageFormatError(reason, template.type, template.mid)


def decode(data: bytes) -> Message:
    """Parse one datagram strictly; raises ``MessageFormatError`` (never anything else)."""
    if len(data) < 4:
        raise MessageFormatError(f"a datagram of {len(data)} bytes is shorter than the header")
    first = data[0]
    version, type_, tkl = first >> 6, Type((first >> 4) & 0x3), first & 0xF
    code, mid = data[1], int.from_bytes(data[2:4], "big")
    if version != VERSION:
        raise UnsupportedVersion(f"version {version} is not CoAP version 1", type_, mid)
    context = MessageFormatError("", type_, mid)
    if tkl > 8:
        raise _again(context, f"token length {tkl} is reserved (9-15)")
    if code == Code.EMPTY:
        if len(data) != 4 or tkl:
            raise _again(context, "an Empty message has nothing after its 4-byte header")
        if type_ is Type.NON:
            raise _again(context, "a Non-confirmable message is never Empty")
        return Message(type_, code, mid)
    code_class = code >> 5
    if code_class in (1, 6, 7):
        raise _again(context, f"code {code_text(code)} is in a reserved class")
    if type_ is Type.RST:
        raise _again(context, f"a Reset is Empty, not {code_text(code)}")
    if type_ is Type.ACK and is_request(code):
        raise _again(context, "an Acknowledgement carries no request")
    end = 4 + tkl
    if len(data) < end:
        raise _again(context, f"the {tkl}-byte token is cut off")
    token = bytes(data[4:end])
    options: list[tuple[int, bytes]] = []
    pos, number, size = end, 0, len(data)
    while pos < size:
        byte = data[pos]
        if byte == PAYLOAD_MARKER:
            if pos + 1 == size:
                raise _again(context, "a payload marker is followed by no payload")
            return Message(type_, code, mid, token, tuple(options), bytes(data[pos + 1 :]))
        pos += 1
        delta, pos = _extended(byte >> 4, data, pos, "delta", context)
        length, pos = _extended(byte & 0xF, data, pos, "length", context)
        number += delta
        if number > MAX_OPTION_NUMBER:
            raise _again(context, f"option number {number} is above 65535")
        if pos + length > size:
            raise _again(context, f"the {length}-byte value of option {number} is cut off")
        options.append((number, bytes(data[pos : pos + length])))
        pos += length
    return Message(type_, code, mid, token, tuple(options), b"")


# --- option checks (section 5.4) --------------------------------------------------------------


def value_problem(number: int, value: bytes) -> str | None:
    """Why a registered option's value is out of its format, or None when it is fine."""
    spec = REGISTRY.get(number)
    if spec is None:
        return f"option {number} is not recognised"
    if not spec.min_length <= len(value) <= spec.max_length:
        return f"{spec.name} has {len(value)} bytes, outside {spec.min_length}..{spec.max_length}"
    if spec.format is Format.STRING:
        try:
            value.decode("utf-8")
        except UnicodeDecodeError:
            return f"{spec.name} is not UTF-8"
    return None


def bad_option(message: Message) -> str | None:
    """The first problem with a critical option (the 4.02 diagnostic), or None.

    Problems with elective options are not reported: section 5.4.1 has them ignored, and
    ``Message`` accessors read the first occurrence only.
    """
    seen: set[int] = set()
    for number, value in message.options:
        repeated = number in seen
        seen.add(number)
        if not is_critical(number):
            continue
        problem = value_problem(number, value)
        if problem:
            return problem
        if repeated and not REGISTRY[number].repeatable:
            return f"{REGISTRY[number].name} is not repeatable"
    return None
