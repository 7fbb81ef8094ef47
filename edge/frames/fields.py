"""One field of a frame: where it sits, how its bytes read as a value, and back.

A field's bytes become a *raw* value (an integer, a float or a string), which must equal the
field's ``const`` when it has one; an ``enum`` map then turns a raw integer into the value
the thing model expects (a string, a number, a boolean), or ``scale`` and ``bias`` turn it
into a number: ``value = raw * scale + bias``, computed in decimal so that 253 * 0.1 is 25.3.
Encoding runs the same steps backwards.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any, Literal

from edge.frames.errors import FrameError

# base type → (size in bytes, signed)
INTEGER_TYPES: dict[str, tuple[int, bool]] = {
    "u8": (1, False),
    "i8": (1, True),
    "u16": (2, False),
    "i16": (2, True),
    "u32": (4, False),
    "i32": (4, True),
    "u64": (8, False),
    "i64": (8, True),
}
# base type → (size in bytes, struct code)
FLOAT_TYPES: dict[str, tuple[int, str]] = {"f32": (4, "f"), "f64": (8, "d")}
# Types whose size is the field's ``length`` (in bytes).
SIZED_TYPES = ("bcd", "bits", "ascii", "hex")
# The longest string or digit run a field may hold (a thing-model string's default maximum).
MAX_FIELD_LENGTH = 255
MAX_BITS_LENGTH = 8


@dataclass(frozen=True, slots=True)
class Field:
    """A field as the codec description declares it (``edge.frames.spec`` validates it)."""

    name: str
    type: str  # a base type: u8 … i64, f32, f64, bcd, bits, ascii, hex
    offset: int
    size: int
    little: bool = False
    bit: int = 0
    width: int = 0
    scale: Decimal | None = None
    bias: Decimal | None = None
    enum: Mapping[int, Any] | None = None
    const: int | str | None = None
    service: str | None = None
    integral: bool = field(default=True, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        fractional = any(
            number is not None and number != number.to_integral_value()
            for number in (self.scale, self.bias)
        )
        object.__setattr__(self, "integral", not fractional)

    @property
    def end(self) -> int:
        return self.offset + self.size

    @property
    def order(self) -> Literal["little", "big"]:
        return "little" if self.little else "big"


def decode(spec: Field, frame: bytes) -> Any:
    """The value of ``spec`` in ``frame``; raises :class:`FrameError` when the bytes are not one."""
    raw = decode_raw(spec, frame)
    if spec.const is not None and raw != spec.const:
        raise FrameError("bad_value", f"{spec.name} must be {spec.const!r}, not {raw!r}")
    if spec.enum is not None:
        if not isinstance(raw, int) or raw not in spec.enum:
            raise FrameError("bad_value", f"{spec.name}: {raw!r} is not in its enum map")
        return spec.enum[raw]
    if (spec.scale is None and spec.bias is None) or isinstance(raw, str):
        return raw
    return _scaled(spec, raw)


def decode_raw(spec: Field, frame: bytes) -> int | float | str:
    """The raw value of ``spec``: an integer, a float or a string, before const/enum/scale."""
    if spec.end > len(frame):
        raise FrameError(
            "truncated",
            f"{spec.name} needs bytes {spec.offset}..{spec.end - 1}; the frame has {len(frame)}",
        )
    data = frame[spec.offset : spec.end]
    kind = spec.type
    if kind in INTEGER_TYPES:
        return int.from_bytes(data, spec.order, signed=INTEGER_TYPES[kind][1])
    if kind in FLOAT_TYPES:
        (number,) = struct.unpack(_float_format(spec), data)
        if not math.isfinite(number):
            raise FrameError("bad_value", f"{spec.name} is not a finite number ({number})")
        return float(number)
    if kind == "bits":
        return (int.from_bytes(data, spec.order) >> spec.bit) & ((1 << spec.width) - 1)
    if kind == "bcd":
        return _bcd(spec, data)
    if kind == "ascii":
        text = data.rstrip(b"\0")
        if any(byte < 0x20 or byte > 0x7E for byte in text):
            raise FrameError("bad_value", f"{spec.name} is not printable ASCII: {data.hex()}")
        return text.decode("ascii")
    return data.hex()  # hex


def encode(spec: Field, value: Any, buffer: bytearray) -> None:
    """Write ``value`` (ignored for a ``const`` field) into ``buffer`` at the field's place."""
    if spec.const is not None:
        raw: int | float | str = spec.const
    elif spec.enum is not None:
        raw = _enum_key(spec, value)
    elif spec.type in ("ascii", "hex"):
        if not isinstance(value, str):
            raise FrameError("bad_value", f"{spec.name} takes a string, not {value!r}")
        raw = value
    else:
        raw = _unscaled(spec, value)
    buffer[spec.offset : spec.end] = encode_raw(spec, raw, bytes(buffer[spec.offset : spec.end]))


def encode_raw(spec: Field, raw: int | float | str, current: bytes) -> bytes:
    """The bytes of ``raw``; ``current`` (the bytes there now) keeps the other bits of a bits
    field's range."""
    kind = spec.type
    if kind in FLOAT_TYPES:
        try:
            return struct.pack(_float_format(spec), raw)
        except (OverflowError, struct.error):
            raise FrameError("out_of_range", f"{spec.name}: {raw!r} does not fit {kind}") from None
    if isinstance(raw, str):
        return _encode_text(spec, raw)
    if isinstance(raw, float):
        raise FrameError("bad_value", f"{spec.name} takes an integer, not {raw!r}")
    if kind in INTEGER_TYPES:
        signed = INTEGER_TYPES[kind][1]
        bits = spec.size * 8
        low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
        _in_range(spec, raw, low, high)
        return raw.to_bytes(spec.size, spec.order, signed=signed)
    if kind == "bits":
        _in_range(spec, raw, 0, (1 << spec.width) - 1)
        mask = ((1 << spec.width) - 1) << spec.bit
        word = int.from_bytes(current, spec.order) & ~mask | raw << spec.bit
        return word.to_bytes(spec.size, spec.order)
    # bcd
    _in_range(spec, raw, 0, 10 ** (spec.size * 2) - 1)
    digits = str(raw).rjust(spec.size * 2, "0")
    data = bytes(int(digits[i]) << 4 | int(digits[i + 1]) for i in range(0, len(digits), 2))
    return data[::-1] if spec.little else data


def _float_format(spec: Field) -> str:
    return ("<" if spec.little else ">") + FLOAT_TYPES[spec.type][1]


def _bcd(spec: Field, data: bytes) -> int:
    digits = 0
    for byte in data[::-1] if spec.little else data:
        high, low = byte >> 4, byte & 0x0F
        if high > 9 or low > 9:
            raise FrameError("bad_value", f"{spec.name} is not BCD: {data.hex()}")
        digits = digits * 100 + high * 10 + low
    return digits


def _encode_text(spec: Field, text: str) -> bytes:
    if spec.type == "hex":
        try:
            data = bytes.fromhex(text)
        except ValueError:
            raise FrameError("bad_value", f"{spec.name}: {text!r} is not hex") from None
        if len(data) != spec.size:
            raise FrameError(
                "bad_value", f"{spec.name} takes {spec.size} bytes of hex, not {len(data)}"
            )
        return data
    if not text.isascii() or not text.isprintable():
        raise FrameError("bad_value", f"{spec.name} takes printable ASCII, not {text!r}")
    if len(text) > spec.size:
        raise FrameError(
            "out_of_range", f"{spec.name} holds at most {spec.size} characters, not {len(text)}"
        )
    return text.encode("ascii").ljust(spec.size, b"\0")


def _in_range(spec: Field, raw: int, low: int, high: int) -> None:
    if not low <= raw <= high:
        raise FrameError("out_of_range", f"{spec.name}: {raw} is outside {low}..{high}")


def _scaled(spec: Field, raw: int | float) -> int | float:
    scale = spec.scale if spec.scale is not None else Decimal(1)
    bias = spec.bias if spec.bias is not None else Decimal(0)
    if isinstance(raw, float):
        return raw * float(scale) + float(bias)
    value = Decimal(raw) * scale + bias
    return int(value) if spec.integral else float(value)


def _unscaled(spec: Field, value: Any) -> int | float:
    """The raw number of ``value`` (rounded to the field's resolution for an integer type)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FrameError("bad_value", f"{spec.name} takes a number, not {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise FrameError("bad_value", f"{spec.name} takes a finite number, not {value!r}")
    scale = spec.scale if spec.scale is not None else Decimal(1)
    bias = spec.bias if spec.bias is not None else Decimal(0)
    if spec.type in FLOAT_TYPES:
        return (float(value) - float(bias)) / float(scale)
    try:
        raw = ((Decimal(str(value)) - bias) / scale).to_integral_value(ROUND_HALF_EVEN)
    except InvalidOperation:
        raise FrameError("bad_value", f"{spec.name}: {value!r} cannot be encoded") from None
    return int(raw)


def _enum_key(spec: Field, value: Any) -> int:
    assert spec.enum is not None
    for raw, mapped in spec.enum.items():
        if same_value(mapped, value):
            return raw
    choices = ", ".join(repr(v) for v in spec.enum.values())
    raise FrameError("bad_value", f"{spec.name}: {value!r} is not one of {choices}")


def same_value(a: Any, b: Any) -> bool:
    """Equality that keeps booleans apart from the numbers 0 and 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return bool(a == b)
