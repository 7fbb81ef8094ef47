"""The platform's clock reading: whole milliseconds since the Unix epoch (UTC).

Every timestamp on the Redis bus, in the ThingLinks envelope (``head.timeStamp``) and in the
SQL time-series tables is in this unit (docs/bus.md). A leaf module of the standard library
only, so the edge (which imports no Django) and every webapp app read the time the same way.
"""

from __future__ import annotations

import time
from collections.abc import Callable


def now_ms(seconds: Callable[[], float] | None = None) -> int:
    """Now, in epoch milliseconds; ``seconds`` reads another clock (a Twisted reactor's or a
    test's ``task.Clock().seconds``) instead of the system's."""
    return int((seconds or time.time)() * 1000)
