"""The two ways the frame engine refuses something, each carrying the reason.

A device's bytes (or a value to encode) are refused with :class:`FrameError`; its ``code`` is a
short word a transport can log or answer with, its ``reason`` says what was wrong in words.
A codec description is refused with :class:`SpecError`, naming where in the document the
problem is (``messages[1].fields[0].type``), so the API and the admin can show it next to the
field.
"""

from __future__ import annotations


class FrameError(ValueError):
    """Bytes that are not a frame of the codec, or a value that cannot be encoded."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class SpecError(ValueError):
    """A codec description that is not valid; ``path`` is where (empty: the whole document)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}" if path else reason)
        self.path = path
        self.reason = reason
