"""A product's binary codec over raw TCP and UDP: which codec a device speaks, its frames as
uplink messages, and commands as frames.

A connection does not say its product before its first frame, so a stream is tried against
every binary codec the edge knows (products of protocol ``tcp``): each candidate's framer
reads the same bytes, a candidate whose framer refuses them drops out, and the first one
that completes a frame it can read wins. Which device the frame names (its login frame, or
the device field of a MAC-checked frame) decides the product; the transport then makes sure
that product's codec is the one that read the frame. A datagram is tried the same way,
whole.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edge import fastjson
from edge.codecs import thinglinks as tl
from edge.frames import Codec, Decoded, FrameError
from edge.frames.framing import StreamFramer

# The downlink a codec may declare to answer a login frame (its ``result`` field is
# ``accepted`` or ``refused``); a codec without it sends no login answer.
LOGIN_ANSWER = "login_answer"


@dataclass(frozen=True, slots=True)
class Candidate:
    """A product's codec as a candidate for an unknown device's bytes."""

    product: str
    codec: Codec


class FrameStream:
    """The frames of one connection, its codec found from its first frame."""

    def __init__(self, candidates: list[Candidate]) -> None:
        self._trying = [(candidate, candidate.codec.framer()) for candidate in candidates]
        self.chosen: Candidate | None = None
        self._framer: StreamFramer | None = None

    @property
    def buffered(self) -> int:
        if self._framer is not None:
            return self._framer.buffered
        return max((framer.buffered for _, framer in self._trying), default=0)

    def feed(self, data: bytes) -> list[bytes]:
        """The complete frames in ``data``; raises :class:`FrameError` when the bytes are
        not frames of the chosen codec (or of any candidate)."""
        if self._framer is not None:
            return self._framer.feed(data)
        last: FrameError | None = None
        still: list[tuple[Candidate, StreamFramer]] = []
        for candidate, framer in self._trying:
            try:
                frames = framer.feed(data)
            except FrameError as exc:
                last = exc
                continue
            if frames and _readable(candidate.codec, frames[0]):
                self.chosen, self._framer, self._trying = candidate, framer, []
                return frames
            if not frames:
                still.append((candidate, framer))
        self._trying = still
        if not still:
            if last is not None:
                raise last
            raise FrameError("unknown_codec", "the bytes are no frame of any product's codec")
        return []


def datagram_codec(candidates: list[Candidate], data: bytes) -> tuple[Candidate, bytes]:
    """The first candidate that reads ``data`` as one of its frames, and the frame."""
    last: FrameError | None = None
    for candidate in candidates:
        try:
            frame = candidate.codec.datagram(data)
            candidate.codec.identify(frame)
        except FrameError as exc:
            last = exc
            continue
        return candidate, frame
    if last is not None and len(candidates) == 1:
        raise last
    raise FrameError("unknown_codec", "the datagram is no frame of any product's codec")


def _readable(codec: Codec, frame: bytes) -> bool:
    try:
        codec.identify(frame)
    except FrameError:
        return False
    return True


def uplink(decoded: Decoded, device: str | None) -> tuple[str, bytes] | None:
    """A decoded frame as ``(suffix, payload)`` for the pipeline (None: a login frame)."""
    message = decoded.uplink(device)
    if message is None:
        return None
    return message.suffix, fastjson.dumps(message.body)


def login_answer(codec: Codec, accepted: bool) -> bytes | None:
    """The frame answering a login, when the codec declares one."""
    if not any(downlink.name == LOGIN_ANSWER for downlink in codec.spec.downlinks):
        return None
    return codec.encode(LOGIN_ANSWER, {"result": "accepted" if accepted else "refused"})


def command_frame(codec: Codec, payload: bytes, device: str, secret: str | None) -> bytes:
    """The frame of a command as the platform sends it on MQTT (the enveloped
    ``{"serviceCode", "cmd", "params"}`` with the command id as ``head.mid``); raises
    :class:`FrameError` with the reason when it is not a command the codec can encode."""
    try:
        body, mid = tl.unwrap(payload)
    except tl.PayloadError as exc:
        raise FrameError("bad_command", exc.reason) from None
    if not isinstance(body, Mapping):
        raise FrameError("bad_command", "the command is not a JSON object")
    service, command = body.get("serviceCode"), body.get("cmd")
    if not isinstance(service, str) or not isinstance(command, str):
        raise FrameError("bad_command", "the command has no serviceCode and cmd")
    params: Any = body.get("params") or {}
    if not isinstance(params, Mapping):
        raise FrameError("bad_command", "the command's params are not an object")
    return codec.encode_command(service, command, params, mid=mid, secret=secret, device=device)
