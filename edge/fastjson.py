"""JSON on the message path: orjson where it can, the standard library where orjson can't.

orjson is several times faster than ``json`` for the uplink's small objects, but it differs at
the edges: it reads integers wider than 64 bits as floats (losing digits), refuses ``NaN`` and
``Infinity`` literals and cannot write non-string keys. Those cases go to ``json`` (a text with
a run of 19 digits anywhere, or one orjson refuses), so that what is accepted, its values, and
the error messages of what is not stay exactly the standard library's.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

# -(2**63) - 1 has 19 digits: a shorter run of digits is an integer orjson reads exactly.
_LONG_DIGITS = re.compile(rb"[0-9]{19}")
_LONG_DIGITS_TEXT = re.compile(r"[0-9]{19}")


def loads(data: bytes | str) -> Any:
    """Parse JSON; raises ``ValueError`` (with the standard library's message) when invalid."""
    pattern = _LONG_DIGITS if isinstance(data, bytes) else _LONG_DIGITS_TEXT
    if pattern.search(data) is None:  # type: ignore[arg-type]
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
    return json.loads(data)


def dumps(obj: Any) -> bytes:
    """Compact UTF-8 JSON; values JSON can't hold are written as their ``str()``."""
    try:
        return orjson.dumps(obj, default=str)
    except TypeError:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, default=str).encode()
