"""Splitting bytes into frames: incrementally for a stream, whole for a datagram.

Sans-I/O: a transport feeds what it received and gets the complete frames back. A stream
framer holds at most one incomplete frame (``max_frame`` bytes, plus a delimiter's), checks
a frame's header and length as soon as their bytes are in, and refuses a stream that cannot
be a sequence of frames with a :class:`FrameError`; it is then out of step with the device
and refuses everything after (the transport closes the connection). A datagram is exactly
one frame.
"""

from __future__ import annotations

from edge.frames.errors import FrameError
from edge.frames.fields import decode_raw
from edge.frames.spec import Framing


class StreamFramer:
    """The frames of one connection's byte stream."""

    def __init__(self, framing: Framing) -> None:
        if framing.type == "datagram":
            raise ValueError("datagram framing has no stream framer")
        self.framing = framing
        self._buffer = b""
        self._scanned = 0  # bytes of the buffer already searched for a delimiter
        self._failed: FrameError | None = None
        # the bytes that say whether a frame starts right and how long it is
        self._prefix = max(
            len(framing.header),
            framing.selector.end if framing.selector is not None else 0,
            framing.field.end if framing.field is not None else 0,
            1,
        )

    @property
    def buffered(self) -> int:
        """Bytes held of an incomplete frame."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """The frames ``data`` completes (without their delimiters; empty ones are skipped)."""
        if self._failed is not None:
            raise self._failed
        buffer = self._buffer + bytes(data) if self._buffer else bytes(data)
        try:
            if self.framing.type == "delimiter":
                frames, rest = self._delimited(buffer)
            else:
                frames, rest = self._counted(buffer)
        except FrameError as exc:
            self._failed = exc
            self._buffer = b""
            raise
        self._buffer = rest
        return frames

    def _delimited(self, buffer: bytes) -> tuple[list[bytes], bytes]:
        framing = self.framing
        delimiter = framing.delimiter
        frames: list[bytes] = []
        pos = 0
        search = max(0, self._scanned - len(delimiter) + 1)
        while True:
            end = buffer.find(delimiter, search)
            if end < 0:
                break
            frame = buffer[pos:end]
            if len(frame) > framing.max_frame:
                raise _oversize(len(frame), framing.max_frame)
            if frame:
                check_header(framing, frame)
                frames.append(frame)
            pos = search = end + len(delimiter)
        rest = buffer[pos:]
        # what lies past max_frame bytes can only be the start of the delimiter
        if len(rest) > framing.max_frame and not delimiter.startswith(rest[framing.max_frame :]):
            raise FrameError(
                "oversize", f"no delimiter within {framing.max_frame} bytes (the largest frame)"
            )
        check_header(framing, rest)
        self._scanned = len(rest)
        return frames, rest

    def _counted(self, buffer: bytes) -> tuple[list[bytes], bytes]:
        frames: list[bytes] = []
        pos = 0
        while pos < len(buffer):
            head = buffer[pos : pos + self._prefix]  # not the rest: a chunk holds many frames
            check_header(self.framing, head)
            length = expected_length(self.framing, head)
            if length is None or pos + length > len(buffer):
                break
            frames.append(buffer[pos : pos + length])
            pos += length
        return frames, buffer[pos:]


def frame_of_datagram(framing: Framing, data: bytes) -> bytes:
    """The frame a datagram holds (a trailing delimiter removed); refused unless it is exactly
    one frame."""
    frame = bytes(data)
    if framing.delimiter and frame.endswith(framing.delimiter):
        frame = frame[: -len(framing.delimiter)]
    if not frame:
        raise FrameError("truncated", "the datagram is empty")
    if len(frame) > framing.max_frame:
        raise _oversize(len(frame), framing.max_frame)
    check_header(framing, frame)
    if framing.type in ("fixed", "length"):
        length = expected_length(framing, frame)
        if length is None or length > len(frame):
            raise FrameError("truncated", f"the datagram has {len(frame)} bytes of a longer frame")
        if length < len(frame):
            raise FrameError(
                "bad_length",
                f"the datagram has {len(frame)} bytes; its frame is {length} (one frame each)",
            )
    return frame


def check_header(framing: Framing, data: bytes) -> None:
    """Refuse ``data`` unless it starts with the framing's header (or a beginning of it)."""
    header = framing.header
    if header and not header.startswith(data[: len(header)]):
        raise FrameError(
            "bad_header",
            f"a frame starts with {header.hex()}, not {data[: len(header)].hex()}",
        )


def expected_length(framing: Framing, data: bytes) -> int | None:
    """The length of the frame ``data`` starts with (fixed or length framing), or None while
    the bytes that say it have not all arrived."""
    if framing.length is not None:
        return framing.length
    if framing.selector is not None and framing.lengths is not None:
        if len(data) < framing.selector.end:
            return None
        kind = decode_raw(framing.selector, data)
        if not isinstance(kind, int) or kind not in framing.lengths:
            raise FrameError("unknown_type", f"no message has the type {kind}")
        return framing.lengths[kind]
    field = framing.field
    assert field is not None, "length framing has a length field"
    if len(data) < field.end:
        return None
    value = decode_raw(field, data)
    assert isinstance(value, int)
    length = field.end + value + framing.adjust
    if length < max(field.end, len(framing.header), 1):
        raise FrameError("bad_length", f"the length field says {value}: a frame of {length} bytes")
    if length > framing.max_frame:
        raise _oversize(length, framing.max_frame)
    return length


def _oversize(length: int, max_frame: int) -> FrameError:
    return FrameError("oversize", f"a frame of {length} bytes; the largest is {max_frame}")
