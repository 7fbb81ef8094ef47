"""The codec description: a JSON document naming a product's frames, validated strictly.

Validation refuses anything it does not understand (an unknown key, a type, a field outside
its frame, a role naming no field…) with the path of the problem, and bounds every size, so a
codec can be built from a description an API client sent. The format (``"codec": 1``)::

    {"codec": 1, "name": "th-sensor", "transport": "tcp" | "udp", "byte_order": "big",
     "framing": {"type": "delimiter", "delimiter": "0d0a", "max_frame": 256, "header": "aa55"}
              | {"type": "fixed", "length": 9}        (no length: each message declares one,
                                                       the discriminator selects it)
              | {"type": "length", "offset": 1, "size": 2, "adjust": 0, "max_frame": 512}
              | {"type": "datagram", "max_frame": 512}                       (udp only),
     "discriminator": {"offset": 2, "type": "u8"},
     "checksum": {"type": "crc16-modbus", "start": 0, "at": -2, "byte_order": "little"},
     "auth": {"type": "login"}
           | {"type": "mac", "algorithm": "hmac-sha256", "size": 8, "start": 0, "at": -8},
     "messages": [{"name", "id", "kind": "login" | "datas" | "events" | "commandResponse",
                   "length"?, "service"?, "event"?, "command"?,
                   "device"?, "secret"?, "mid"?, "err_code"?, "fields": [...]}],
     "downlinks": [{"name", "service"?, "command"?, "id"?, "length"?, "device"?, "mid"?,
                    "fields": [...]}]}

A field: ``{"name", "type", "offset", "length"?, "byte_order"?, "bit"?, "width"?, "scale"?,
"bias"?, "enum"?, "const"?, "service"?}``. Types: ``u8 i8 u16 i16 u32 i32 u64 i64 f32 f64``
(``be`` or ``le`` appended names the byte order, else the field's or the codec's
``byte_order``, big by default), and ``bcd`` (packed decimal digits, an integer), ``bits``
(``width`` bits from ``bit``, 0 being the least significant, of a ``length``-byte integer),
``ascii`` (NUL padding removed) and ``hex``, each ``length`` bytes long. A number is
``raw * scale + bias``; an ``enum`` maps raw integers (keys in decimal) to strings, numbers
or booleans; a ``const`` field must hold its raw value and is no property. ``service`` lets a
datas field report into another service than the message's.

A length frame is ``offset + size + value + adjust`` bytes long. A checksum covers the bytes
from ``start`` up to ``at``, where it is stored; the MAC likewise (it is computed before the
checksum, which may cover it); negative positions count from the end of the frame. The roles
``device``, ``secret``, ``mid`` and ``err_code`` name fields that carry the device
identifier, the login secret, the command id and the command's result; the other fields (but
``const`` ones) are the message's properties, event parameters or response parameters.
Encoding a downlink writes the header, the discriminator (its ``id``), the length field, the
MAC and the checksum by itself. A field's ``expr`` (a value derived from the others in the
rule expression language) is reserved for a later version and refused for now.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from edge.frames import fields as f
from edge.frames.checksums import CHECKSUMS, MAC_ALGORITHMS, MAC_MAX_SIZE, MAC_MIN_SIZE
from edge.frames.errors import FrameError, SpecError

FORMAT_VERSION = 1
MAX_SPEC_BYTES = 64 * 1024
MAX_FRAME_LIMIT = 65535
MAX_MESSAGES = 64
MAX_FIELDS = 128
MAX_ENUM = 256
MAX_HEADER = 16
MAX_DELIMITER = 8
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")
KINDS = ("login", "datas", "events", "commandResponse")
FRAMINGS = ("delimiter", "fixed", "length", "datagram")
TYPE = re.compile(r"(u8|i8|u16|i16|u32|i32|u64|i64|f32|f64)(be|le)?|bcd|bits|ascii|hex")
ROLES = ("device", "secret", "mid", "err_code")


@dataclass(frozen=True, slots=True)
class Framing:
    """How a byte stream splits into frames (``edge.frames.framing`` does the splitting)."""

    type: str
    max_frame: int
    header: bytes = b""
    delimiter: bytes = b""
    length: int | None = None  # fixed framing: every frame's length
    lengths: Mapping[int, int] | None = None  # fixed framing by type: id → length
    selector: f.Field | None = None  # fixed framing by type: the discriminator
    field: f.Field | None = None  # length framing: the length field
    adjust: int = 0


@dataclass(frozen=True, slots=True)
class Check:
    """A checksum or a MAC: ``size`` bytes at ``at`` over the bytes from ``start`` to ``at``."""

    algorithm: str
    size: int
    start: int
    at: int
    little: bool = False


@dataclass(frozen=True, slots=True)
class Message:
    """One kind of uplink frame."""

    name: str
    id: int | None
    kind: str
    length: int | None
    service: str | None
    event: str | None
    command: str | None
    fields: tuple[f.Field, ...]
    device: str | None = None
    secret: str | None = None
    mid: str | None = None
    err_code: str | None = None

    @property
    def roles(self) -> frozenset[str]:
        named = (self.device, self.secret, self.mid, self.err_code)
        return frozenset(name for name in named if name is not None)


@dataclass(frozen=True, slots=True)
class Downlink:
    """One kind of frame the platform sends: a command, or a reply such as a login answer."""

    name: str
    service: str | None
    command: str | None
    id: int | None
    length: int | None
    fields: tuple[f.Field, ...]
    device: str | None = None
    mid: str | None = None

    @property
    def roles(self) -> frozenset[str]:
        return frozenset(name for name in (self.device, self.mid) if name is not None)


@dataclass(frozen=True, slots=True)
class CodecSpec:
    name: str
    transport: str
    framing: Framing
    discriminator: f.Field | None
    checksum: Check | None
    auth: str  # login | mac
    mac: Check | None
    messages: tuple[Message, ...]
    downlinks: tuple[Downlink, ...]


def loads(text: str | bytes) -> CodecSpec:
    """Validate a codec description given as JSON text."""
    if len(text) > MAX_SPEC_BYTES:
        raise SpecError("", f"a codec description has at most {MAX_SPEC_BYTES} bytes")
    try:
        document = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except ValueError as exc:
        raise SpecError("", f"not valid JSON: {exc}") from None
    return validate(document)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for key, value in pairs:
        if key in document:
            raise ValueError(f"the key {key!r} appears twice")
        document[key] = value
    return document


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def validate(document: Any) -> CodecSpec:
    """Validate a codec description given as parsed JSON; raises :class:`SpecError`."""
    top = _Object(
        document,
        "",
        required=("codec", "name", "transport", "framing", "auth", "messages"),
        optional=("byte_order", "discriminator", "checksum", "downlinks"),
    )
    if top.get("codec") != FORMAT_VERSION or isinstance(top.get("codec"), bool):
        raise SpecError("codec", f"the format version must be {FORMAT_VERSION}")
    name = top.name("name")
    transport = top.choice("transport", ("tcp", "udp"))
    little = top.choice("byte_order", ("big", "little"), "big") == "little"
    discriminator = None
    if top.has("discriminator"):
        discriminator = _discriminator(top.object("discriminator", ("offset", "type")), little)
    raw_messages = top.array("messages", MAX_MESSAGES, minimum=1)
    if discriminator is None and len(raw_messages) > 1:
        raise SpecError("discriminator", "several messages need a discriminator to tell them apart")
    framing = _framing(top, transport, little)
    checksum = (
        _checksum(top.object("checksum", ("type", "start", "at", "byte_order")), framing)
        if top.has("checksum")
        else None
    )
    auth, mac = _auth(top, framing)
    context = _Context(little, framing, discriminator)
    messages = tuple(
        _message(_Object(raw, f"messages[{i}]", *_MESSAGE_KEYS), context)
        for i, raw in enumerate(raw_messages)
    )
    downlinks = tuple(
        _downlink(_Object(raw, f"downlinks[{i}]", *_DOWNLINK_KEYS), context)
        for i, raw in enumerate(
            top.array("downlinks", MAX_MESSAGES) if top.has("downlinks") else []
        )
    )
    _unique(messages, "messages", lambda m: m.name, "name")
    _unique(downlinks, "downlinks", lambda d: d.name, "name")
    if discriminator is not None:
        _unique(messages, "messages", lambda m: m.id, "id")
    _unique(
        downlinks, "downlinks", lambda d: (d.service, d.command) if d.command else None, "command"
    )
    _check_auth_roles(auth, transport, messages)
    if framing.type == "fixed" and framing.length is None:
        framing = _fixed_by_type(framing, discriminator, messages, downlinks)
    return CodecSpec(
        name, transport, framing, discriminator, checksum, auth, mac, messages, downlinks
    )


_MESSAGE_KEYS = (
    ("name", "kind", "fields"),
    ("id", "length", "service", "event", "command", *ROLES),
)
_DOWNLINK_KEYS = (("name", "fields"), ("service", "command", "id", "length", "device", "mid"))


@dataclass(frozen=True, slots=True)
class _Context:
    """What validating a message or a downlink needs from the rest of the document."""

    little: bool
    framing: Framing
    discriminator: f.Field | None


class _Object:
    """A JSON object being validated: reads its keys by kind, each error naming its path."""

    def __init__(
        self, value: Any, path: str, required: Iterable[str], optional: Iterable[str] = ()
    ) -> None:
        if not isinstance(value, dict):
            raise SpecError(path, "must be an object")
        self.value = value
        self.path = path
        known = (*required, *optional)
        for key in value:
            if key not in known:
                raise SpecError(self.at(key), f"unknown key (expected: {', '.join(known)})")
        for key in required:
            if key not in value:
                raise SpecError(self.at(key), "is required")

    def at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def has(self, key: str) -> bool:
        return key in self.value

    def get(self, key: str) -> Any:
        return self.value.get(key)

    def integer(self, key: str, low: int, high: int, default: int | None = None) -> int:
        value = self.value.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpecError(self.at(key), f"must be an integer, not {value!r}")
        if not low <= value <= high:
            raise SpecError(self.at(key), f"must be within {low}..{high}, not {value}")
        return value

    def number(self, key: str) -> Decimal:
        value = self.value[key]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SpecError(self.at(key), f"must be a number, not {value!r}")
        if abs(value) > 1e15 or not math.isfinite(value):
            raise SpecError(self.at(key), "must be a finite number of at most 1e15")
        return Decimal(str(value))

    def text(self, key: str) -> str:
        value = self.value.get(key)
        if not isinstance(value, str) or not value:
            raise SpecError(self.at(key), "must be a non-empty string")
        return value

    def name(self, key: str) -> str:
        value = self.text(key)
        if not NAME.fullmatch(value):
            raise SpecError(
                self.at(key),
                f"{value!r} is not a name (a letter or _, then up to 63 letters, digits, _ or -)",
            )
        return value

    def choice(self, key: str, choices: tuple[str, ...], default: str | None = None) -> str:
        value = self.value.get(key, default)
        if value not in choices:
            raise SpecError(self.at(key), f"must be one of {', '.join(choices)}, not {value!r}")
        return str(value)

    def hex(self, key: str, low: int, high: int) -> bytes:
        value = self.text(key)
        try:
            data = bytes.fromhex(value)
        except ValueError:
            raise SpecError(self.at(key), f"{value!r} is not hex") from None
        if not low <= len(data) <= high:
            raise SpecError(self.at(key), f"must be {low} to {high} bytes, not {len(data)}")
        return data

    def array(self, key: str, maximum: int, minimum: int = 0) -> list[Any]:
        value = self.value.get(key)
        if not isinstance(value, list):
            raise SpecError(self.at(key), "must be a list")
        if not minimum <= len(value) <= maximum:
            raise SpecError(self.at(key), f"must have {minimum} to {maximum} entries")
        return value

    def object(self, key: str, optional: Iterable[str]) -> _Object:
        return _Object(self.value.get(key), self.at(key), (), optional)


def _discriminator(obj: _Object, little: bool) -> f.Field:
    field = _typed_field(obj, "discriminator", little, MAX_FRAME_LIMIT)
    if field.type not in f.INTEGER_TYPES:
        raise SpecError(obj.at("type"), "a discriminator is an integer type")
    return field


def _framing(top: _Object, transport: str, little: bool) -> Framing:
    obj = top.object(
        "framing",
        (
            "type",
            "delimiter",
            "max_frame",
            "length",
            "offset",
            "size",
            "byte_order",
            "adjust",
            "header",
        ),
    )
    kind = obj.choice("type", FRAMINGS)
    allowed = {
        "delimiter": ("type", "delimiter", "max_frame", "header"),
        "fixed": ("type", "length", "header"),
        "length": ("type", "offset", "size", "byte_order", "adjust", "max_frame", "header"),
        "datagram": ("type", "max_frame", "header"),
    }[kind]
    for key in obj.value:
        if key not in allowed:
            raise SpecError(obj.at(key), f"is not used by {kind} framing")
    if kind == "datagram" and transport != "udp":
        raise SpecError(obj.at("type"), "datagram framing is for the udp transport")
    header = obj.hex("header", 1, MAX_HEADER) if obj.has("header") else b""
    if kind == "fixed":
        if not obj.has("length"):
            return Framing("fixed", MAX_FRAME_LIMIT, header)
        length = obj.integer("length", max(1, len(header)), MAX_FRAME_LIMIT)
        return Framing("fixed", length, header, length=length)
    max_frame = obj.integer("max_frame", max(1, len(header)), MAX_FRAME_LIMIT)
    if kind == "delimiter":
        return Framing(
            "delimiter", max_frame, header, delimiter=obj.hex("delimiter", 1, MAX_DELIMITER)
        )
    if kind == "datagram":
        return Framing("datagram", max_frame, header)
    offset = obj.integer("offset", 0, max_frame - 1)
    size = obj.integer("size", 1, 4)
    if size == 3:
        raise SpecError(obj.at("size"), "must be 1, 2 or 4")
    order = obj.choice("byte_order", ("big", "little"), "little" if little else "big")
    field = f.Field("length", f"u{size * 8}", offset, size, little=order == "little")
    if field.end > max_frame:
        raise SpecError(obj.at("offset"), "the length field ends beyond max_frame")
    adjust = obj.integer("adjust", -MAX_FRAME_LIMIT, MAX_FRAME_LIMIT, 0)
    return Framing("length", max_frame, header, field=field, adjust=adjust)


def _position(obj: _Object, key: str, max_frame: int, default: int | None = None) -> int:
    return obj.integer(key, -max_frame, max_frame - 1, default)


def _checksum(obj: _Object, framing: Framing) -> Check:
    algorithm = obj.choice("type", tuple(CHECKSUMS))
    size = CHECKSUMS[algorithm][0]
    order = obj.choice("byte_order", ("big", "little"), "big")
    check = Check(
        algorithm,
        size,
        _position(obj, "start", framing.max_frame, 0),
        _position(obj, "at", framing.max_frame),
        little=order == "little",
    )
    _check_span(obj, check, framing)
    return check


def _auth(top: _Object, framing: Framing) -> tuple[str, Check | None]:
    obj = top.object("auth", ("type", "algorithm", "size", "start", "at"))
    kind = obj.choice("type", ("login", "mac"))
    if kind == "login":
        for key in obj.value:
            if key != "type":
                raise SpecError(obj.at(key), "is used by mac authentication only")
        return kind, None
    algorithm = obj.choice("algorithm", MAC_ALGORITHMS, MAC_ALGORITHMS[0])
    mac = Check(
        algorithm,
        obj.integer("size", MAC_MIN_SIZE, MAC_MAX_SIZE),
        _position(obj, "start", framing.max_frame, 0),
        _position(obj, "at", framing.max_frame),
    )
    _check_span(obj, mac, framing)
    return kind, mac


def _check_span(obj: _Object, check: Check, framing: Framing) -> None:
    """Refuse a range that cannot be right in any frame (the rest is checked per frame)."""
    if (check.at < 0) == (check.start < 0) and check.start > check.at:
        raise SpecError(obj.at("start"), "the covered range starts after the check")
    if check.at < 0 < check.at + check.size:
        raise SpecError(obj.at("at"), f"the {check.size} bytes at {check.at} pass the frame end")
    if check.at >= 0 and check.at + check.size > framing.max_frame:
        raise SpecError(obj.at("at"), "the check ends beyond the largest frame")


def _typed_field(obj: _Object, name: str, little: bool, max_frame: int) -> f.Field:
    """The position and type of a field (shared by fields and the discriminator)."""
    type_text = obj.text("type")
    match = TYPE.fullmatch(type_text)
    if match is None:
        raise SpecError(
            obj.at("type"),
            f"unknown type {type_text!r} (u8 i8 u16 i16 u32 i32 u64 i64 f32 f64, each with "
            "be or le for its byte order, or bcd bits ascii hex)",
        )
    base = match.group(1) or type_text
    order = obj.choice("byte_order", ("big", "little"), "little" if little else "big")
    if match.group(2):
        if obj.has("byte_order"):
            raise SpecError(obj.at("byte_order"), "the type already names the byte order")
        order = "big" if match.group(2) == "be" else "little"
    if base in f.SIZED_TYPES:
        high = f.MAX_BITS_LENGTH if base == "bits" else f.MAX_FIELD_LENGTH
        size = obj.integer("length", 1, high)
    elif obj.has("length"):
        raise SpecError(obj.at("length"), f"{base} has a fixed size")
    else:
        size = f.INTEGER_TYPES[base][0] if base in f.INTEGER_TYPES else f.FLOAT_TYPES[base][0]
    offset = obj.integer("offset", 0, max_frame - 1)
    if offset + size > max_frame:
        raise SpecError(
            obj.at("offset"),
            f"the field ends at byte {offset + size}, beyond the frame ({max_frame} bytes)",
        )
    bit = width = 0
    if base == "bits":
        bit = obj.integer("bit", 0, size * 8 - 1, 0)
        width = obj.integer("width", 1, size * 8 - bit, 1)
    else:
        for key in ("bit", "width"):
            if obj.has(key):
                raise SpecError(obj.at(key), "is used by bits fields only")
    return f.Field(name, base, offset, size, little=order == "little", bit=bit, width=width)


_FIELD_KEYS = (
    "length",
    "byte_order",
    "bit",
    "width",
    "scale",
    "bias",
    "enum",
    "const",
    "service",
    "expr",
)


def _field(obj: _Object, context: _Context, frame_length: int | None, kind: str) -> f.Field:
    name = obj.name("name")
    if obj.has("expr"):
        raise SpecError(
            obj.at("expr"),
            "derived values (expressions) are not supported yet: "
            "a field reads its value from the frame's bytes",
        )
    limit = frame_length if frame_length is not None else context.framing.max_frame
    field = _typed_field(obj, name, context.little, limit)
    numeric = field.type not in ("ascii", "hex")
    integer = numeric and field.type not in f.FLOAT_TYPES
    scale = bias = None
    for key in ("scale", "bias"):
        if obj.has(key) and not numeric:
            raise SpecError(obj.at(key), f"{field.type} fields hold text, not numbers")
    if obj.has("scale"):
        scale = obj.number("scale")
        if scale == 0:
            raise SpecError(obj.at("scale"), "must not be 0")
    if obj.has("bias"):
        bias = obj.number("bias")
    enum = _enum(obj) if obj.has("enum") else None
    if enum is not None and not integer:
        raise SpecError(obj.at("enum"), "maps integers: only integer, bcd and bits fields have one")
    for raw in enum or ():
        try:
            f.encode_raw(field, raw, bytes(field.size))
        except FrameError as exc:
            raise SpecError(f"{obj.at('enum')}.{raw}", exc.reason) from None
    if enum is not None and (scale is not None or bias is not None):
        raise SpecError(obj.at("enum"), "a field has an enum map or a scale and bias, not both")
    const = obj.get("const")
    if const is not None and (enum is not None or scale is not None or bias is not None):
        raise SpecError(obj.at("const"), "a const field has no enum map, scale or bias")
    if obj.has("service") and kind != "datas":
        raise SpecError(obj.at("service"), "only the fields of a datas message name a service")
    field = f.Field(
        name,
        field.type,
        field.offset,
        field.size,
        field.little,
        field.bit,
        field.width,
        scale,
        bias,
        enum,
        _const(obj, field, const) if obj.has("const") else None,
        obj.name("service") if obj.has("service") else None,
    )
    return field


def _enum(obj: _Object) -> dict[int, Any]:
    raw = obj.get("enum")
    path = obj.at("enum")
    if not isinstance(raw, dict) or not 1 <= len(raw) <= MAX_ENUM:
        raise SpecError(path, f"must be an object of 1 to {MAX_ENUM} entries")
    enum: dict[int, Any] = {}
    for key, value in raw.items():
        if not re.fullmatch(r"-?[0-9]{1,20}", key):
            raise SpecError(f"{path}.{key}", "a key is the raw integer in decimal")
        if not isinstance(value, str | int | float | bool) or (
            isinstance(value, float) and not math.isfinite(value)
        ):
            raise SpecError(f"{path}.{key}", "maps to a string, a number or a boolean")
        if any(f.same_value(value, seen) for seen in enum.values()):
            raise SpecError(f"{path}.{key}", f"{value!r} is mapped twice (encoding needs one key)")
        if int(key) in enum:
            raise SpecError(f"{path}.{key}", f"{int(key)} is a key twice")
        enum[int(key)] = value
    return enum


def _const(obj: _Object, field: f.Field, value: Any) -> int | str:
    path = obj.at("const")
    wanted = str if field.type in ("ascii", "hex") else int
    if isinstance(value, bool) or not isinstance(value, wanted) or field.type in f.FLOAT_TYPES:
        raise SpecError(
            path, f"a {field.type} field's const is {'a string' if wanted is str else 'an integer'}"
        )
    try:
        f.encode_raw(field, value, bytes(field.size))
    except FrameError as exc:
        raise SpecError(path, exc.reason) from None
    if field.type == "hex":
        return str(value).lower()
    return value


def _fields(obj: _Object, context: _Context, length: int | None, kind: str) -> tuple[f.Field, ...]:
    raws = obj.array("fields", MAX_FIELDS)
    result = tuple(
        _field(
            _Object(raw, f"{obj.at('fields')}[{i}]", ("name", "type", "offset"), _FIELD_KEYS),
            context,
            length,
            kind,
        )
        for i, raw in enumerate(raws)
    )
    _unique(result, obj.at("fields"), lambda field: field.name, "name")
    return result


def _frame_length(obj: _Object, context: _Context) -> int | None:
    framing = context.framing
    if obj.has("length"):
        length = obj.integer("length", max(1, len(framing.header)), framing.max_frame)
        if framing.length is not None and length != framing.length:
            raise SpecError(obj.at("length"), f"the framing's frames are {framing.length} bytes")
        return length
    return framing.length


def _id(obj: _Object, context: _Context, required: bool) -> int | None:
    selector = context.discriminator
    if selector is None:
        if obj.has("id"):
            raise SpecError(obj.at("id"), "an id needs a discriminator")
        return None
    if not obj.has("id"):
        if required:
            raise SpecError(obj.at("id"), "is required: the codec has a discriminator")
        return None
    bits = selector.size * 8
    signed = f.INTEGER_TYPES[selector.type][1]
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    return obj.integer("id", low, high)


def _role(
    obj: _Object, key: str, fields: tuple[f.Field, ...], types: tuple[str, ...]
) -> str | None:
    if not obj.has(key):
        return None
    name = obj.name(key)
    field = next((field for field in fields if field.name == name), None)
    if field is None:
        raise SpecError(obj.at(key), f"names no field of the message ({name!r})")
    if field.type not in types:
        raise SpecError(obj.at(key), f"the {key} field cannot be {field.type}")
    if field.const is not None:
        raise SpecError(obj.at(key), f"the {key} field cannot be const")
    return name


_INTEGERS = tuple(f.INTEGER_TYPES)
_DEVICE_TYPES = ("ascii", "hex", "bcd", *_INTEGERS)


def _message(obj: _Object, context: _Context) -> Message:
    name = obj.name("name")
    kind = obj.choice("kind", KINDS)
    message_id = _id(obj, context, required=True)
    length = _frame_length(obj, context)
    fields = _fields(obj, context, length, kind)
    needs = {
        "login": (),
        "datas": (),
        "events": ("service", "event"),
        "commandResponse": ("service", "command"),
    }[kind]
    for key in ("service", "event", "command"):
        if key in needs and not obj.has(key):
            raise SpecError(obj.at(key), f"is required for a {kind} message")
        if key not in needs and obj.has(key) and not (key == "service" and kind == "datas"):
            raise SpecError(obj.at(key), f"is not used by a {kind} message")
    service = obj.name("service") if obj.has("service") else None
    if kind == "datas" and service is None:
        for i, field in enumerate(fields):
            if field.service is None and field.name not in _role_names(obj) and field.const is None:
                raise SpecError(
                    f"{obj.at('fields')}[{i}].service",
                    "is required: the message names no service",
                )
    roles = _role_names(obj)
    if kind == "datas" and all(field.name in roles or field.const is not None for field in fields):
        raise SpecError(obj.at("fields"), "a datas message reports at least one property")
    if obj.has("secret") and kind != "login":
        raise SpecError(obj.at("secret"), "only a login message carries the secret")
    if obj.has("err_code") and kind != "commandResponse":
        raise SpecError(obj.at("err_code"), "only a commandResponse message has a result")
    return Message(
        name,
        message_id,
        kind,
        length,
        service,
        obj.name("event") if obj.has("event") else None,
        obj.name("command") if obj.has("command") else None,
        fields,
        device=_role(obj, "device", fields, _DEVICE_TYPES),
        secret=_role(obj, "secret", fields, ("ascii", "hex")),
        mid=_role(obj, "mid", fields, (*_INTEGERS, "bcd")),
        err_code=_role(obj, "err_code", fields, (*_INTEGERS, "bits", "bcd")),
    )


def _role_names(obj: _Object) -> set[str]:
    """The field names the message's roles give (as written: _role checks them)."""
    return {name for key in ROLES if isinstance(name := obj.get(key), str)}


def _downlink(obj: _Object, context: _Context) -> Downlink:
    name = obj.name("name")
    if obj.has("service") != obj.has("command"):
        raise SpecError(obj.path, "a command downlink names both its service and its command")
    length = _frame_length(obj, context)
    fields = _fields(obj, context, length, "downlink")
    return Downlink(
        name,
        obj.name("service") if obj.has("service") else None,
        obj.name("command") if obj.has("command") else None,
        _id(obj, context, required=False),
        length,
        fields,
        device=_role(obj, "device", fields, _DEVICE_TYPES),
        mid=_role(obj, "mid", fields, (*_INTEGERS, "bcd")),
    )


def _unique(items: Iterable[Any], path: str, key: Any, what: str) -> None:
    """Refuse two items with the same ``key`` (None: the item has none)."""
    seen: set[Any] = set()
    for i, item in enumerate(items):
        value = key(item)
        if value is None:
            continue
        if value in seen:
            raise SpecError(f"{path}[{i}].{what}", f"{value!r} is used twice")
        seen.add(value)


def _check_auth_roles(auth: str, transport: str, messages: tuple[Message, ...]) -> None:
    logins = [i for i, m in enumerate(messages) if m.kind == "login"]
    if auth == "login":
        if transport != "tcp":
            raise SpecError("auth.type", "a login frame needs a connection: use mac over udp")
        if len(logins) != 1:
            raise SpecError("messages", "login authentication needs exactly one login message")
        login = messages[logins[0]]
        for role in ("device", "secret"):
            if getattr(login, role) is None:
                raise SpecError(f"messages[{logins[0]}].{role}", "is required for a login message")
        return
    if logins:
        raise SpecError(f"messages[{logins[0]}].kind", "mac authentication has no login message")
    for i, message in enumerate(messages):
        if message.device is None:
            raise SpecError(
                f"messages[{i}].device", "is required: with a MAC each frame names its device"
            )


def _fixed_by_type(
    framing: Framing,
    discriminator: f.Field | None,
    messages: tuple[Message, ...],
    downlinks: tuple[Downlink, ...],
) -> Framing:
    """Fixed framing without one length: the discriminator selects each frame's length."""
    if discriminator is None:
        raise SpecError("framing.length", "is required without a discriminator")
    lengths: dict[int, int] = {}
    for i, message in enumerate(messages):
        if message.length is None:
            raise SpecError(f"messages[{i}].length", "is required: fixed framing has no length")
        assert message.id is not None
        lengths[message.id] = message.length
    for i, downlink in enumerate(downlinks):
        if downlink.length is None:
            raise SpecError(f"downlinks[{i}].length", "is required: fixed framing has no length")
    shortest = min(lengths.values())
    if discriminator.end > shortest:
        raise SpecError(
            "discriminator.offset", f"ends beyond the shortest frame ({shortest} bytes)"
        )
    return Framing(
        "fixed",
        max(lengths.values()),
        framing.header,
        lengths=lengths,
        selector=discriminator,
    )
