"""JSON on the message path: orjson where it can, the standard library where orjson can't.

orjson is several times faster than ``json`` for the uplink's small objects, but it differs at
the edges: it reads integers wider than 64 bits as floats (losing digits), refuses ``NaN`` and
``Infinity`` literals and cannot write non-string keys. Those cases go to ``json`` (a text with
a run of 19 digits anywhere, or one orjson refuses), so that what is accepted, its values, and
the error messages of what is not stay exactly the standard library's. Text holding a lone
UTF-16 surrogate (``"\\ud800"``) is refused by both: no UTF-8 encoder downstream could write it.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

# -(2**63) - 1 has 19 digits: a shorter run of digits is an integer orjson reads exactly. The
# run is found by mapping every digit to "9" and searching for 19 of them, which costs a
# fraction of orjson's own parse (a regular expression cost several times more).
_DIGITS_TO_NINES = bytes.maketrans(b"0123456789", b"9999999999")
_LONG_RUN = b"9" * 19


def _has_long_digit_run(data: bytes | str) -> bool:
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    return raw.translate(_DIGITS_TO_NINES).find(_LONG_RUN) >= 0


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE_ESCAPE_BYTES = re.compile(rb"\\u[dD][89a-fA-F]")


def _has_lone_surrogate(obj: Any) -> bool:
    if isinstance(obj, str):
        try:
            obj.encode()
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(obj, dict):
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in obj.items())
    if isinstance(obj, list):
        return any(_has_lone_surrogate(item) for item in obj)
    return False


def loads(data: bytes | str) -> Any:
    """Parse JSON; raises ``ValueError`` (with the standard library's message) when invalid."""
    if not _has_long_digit_run(data):
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            message = str(exc)
            if "surrogate in string" in message or "recursion depth" in message:
                raise ValueError(message) from None
    try:
        obj = json.loads(data)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    # The standard library reads bytes with "surrogatepass": a UTF-8-encoded surrogate
    # (ED A0..BF xx) comes through as well as an escaped one.
    if isinstance(data, str):
        suspect = _SURROGATE_ESCAPE.search(data) is not None
    else:
        suspect = b"\xed" in data or _SURROGATE_ESCAPE_BYTES.search(data) is not None
    if suspect and _has_lone_surrogate(obj):
        raise ValueError("a string holds a lone UTF-16 surrogate")
    return obj


def dumps(obj: Any) -> bytes:
    """Compact UTF-8 JSON; values JSON can't hold are written as their ``str()``."""
    return dumps_checked(obj)[0]


def dumps_checked(obj: Any) -> tuple[bytes, bool]:
    """:func:`dumps`, and whether orjson wrote it: then ``orjson.loads`` reads it back exactly
    (every integer within 64 bits), without :func:`loads`'s scan for long digit runs."""
    try:
        return orjson.dumps(obj, default=str), True
    except TypeError:
        text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, default=str)
        return text.encode(), False
