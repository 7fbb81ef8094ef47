"""The default raw codec: JSON lines on a TCP connection, one JSON object per UDP datagram.

A TCP device first sends ``{"deviceId": "…", "password": "…"}`` and is answered
``{"statusCode": 0, "statusDesc": "successful"}`` (or 1 and the reason, and the connection
closes); then each line is ``{"topic": "<suffix>", "payload": {…}}`` with the suffix that
follows ``/v1/devices/{id}/`` on MQTT, answered ``{"topic": "datasResponse", "payload": {…}}``.
The platform writes ``{"topic": "command", "payload": {…}}`` lines. A UDP datagram is one
such message object with ``deviceId`` and ``password`` added.

A line that is not such an object is answered with an error line saying why and the
connection goes on; only broken framing (a line longer than the limit) ends it, since the
device and the edge no longer agree where a line starts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from edge import fastjson
from edge.codecs import thinglinks as tl

# The suffixes a device may send on (what follows /v1/devices/{id}/ on MQTT).
UPLINK_SUFFIXES = frozenset(
    {
        "datas",
        "events",
        "commandResponse",
        "shadow/get",
        "shadow/update",
        "topo/add",
        "topo/delete",
        "topo/update",
        "topo/query",
        "topo/otaCommandResponse",
        "topo/otaPull",
        "topo/otaReport",
        "topo/otaReadResponse",
    }
)
# Lines held while the login is being checked (a device that does not wait for the answer).
MAX_HELD_LINES = 16


class BadInput(ValueError):
    """A line or datagram that is not a message; ``reason`` is what the device is told."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Login:
    """The first line: who the connection says it is (not yet checked)."""

    device: str
    password: bytes


@dataclass(frozen=True, slots=True)
class Uplink:
    """One message for the pipeline: its topic suffix and payload (the JSON of ``payload``)."""

    suffix: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class Send:
    """Bytes to write to the device."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Close:
    """End the connection (after writing what came before), saying why in the log."""

    reason: str


Action = Login | Uplink | Send | Close


class LineSplitter:
    """Lines of a byte stream (``\\n`` or ``\\r\\n``), at most ``max_line`` bytes each."""

    def __init__(self, max_line: int) -> None:
        self.max_line = max_line
        self._buffer = b""

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """The lines ``data`` completes, without their ends (blank ones skipped); raises
        :class:`BadInput` for a line over the limit."""
        scanned = len(self._buffer)
        buffer = self._buffer + data if self._buffer else bytes(data)
        lines: list[bytes] = []
        start = 0
        search = scanned
        while True:
            end = buffer.find(b"\n", search)
            if end < 0:
                break
            line = buffer[start:end].rstrip(b"\r")
            if len(line) > self.max_line:
                raise BadInput(f"a line of {len(line)} bytes; the longest is {self.max_line}")
            if line.strip():
                lines.append(line)
            start = search = end + 1
        rest = buffer[start:]
        if len(rest) > self.max_line + 1:  # the limit and a "\r" may wait for their "\n"
            raise BadInput(f"no end of line within {self.max_line} bytes (the longest line)")
        self._buffer = rest
        return lines


class LineSession:
    """One JSON-lines TCP connection: login, then messages, as a state machine.

    ``receive`` turns bytes into actions; the transport checks a :class:`Login` and calls
    ``logged_in`` or ``refused``, hands each :class:`Uplink` to the pipeline and writes each
    :class:`Send`. Lines that arrive while the login is checked are held (a few) and released
    by ``logged_in``.
    """

    def __init__(self, max_line: int) -> None:
        self.splitter = LineSplitter(max_line)
        self.state = "login"  # login → checking → open, or closed
        self.device: str | None = None
        self._held: list[bytes] = []

    def receive(self, data: bytes) -> list[Action]:
        if self.state == "closed":
            return []
        try:
            lines = self.splitter.feed(data)
        except BadInput as exc:
            return self._close(exc.reason)
        actions: list[Action] = []
        for line in lines:
            actions.extend(self._line(line))
            if self.state == "closed":
                break
        return actions

    def logged_in(self, device: str) -> list[Action]:
        """The login was accepted: answer it, then the lines held meanwhile."""
        self.state, self.device = "open", device
        actions: list[Action] = [Send(status_line(0, "successful"))]
        held, self._held = self._held, []
        for line in held:
            actions.extend(self._line(line))
        return actions

    def refused(self, reason: str) -> list[Action]:
        """The login was refused: say why and close."""
        self.state = "closed"
        self._held = []
        return [Send(status_line(1, reason)), Close(reason)]

    def _line(self, line: bytes) -> list[Action]:
        if self.state == "checking":
            if len(self._held) >= MAX_HELD_LINES:
                return self._close(f"more than {MAX_HELD_LINES} lines before the login answer")
            self._held.append(line)
            return []
        try:
            obj = parse_object(line)
            if self.state == "login":
                device, password = credentials(obj)
                self.state = "checking"
                return [Login(device, password)]
            suffix, payload = message(obj)
        except BadInput as exc:
            if self.state == "login":
                return [*self.refused(exc.reason)]
            return [Send(error_line(exc.reason))]
        return [Uplink(suffix, payload)]

    def _close(self, reason: str) -> list[Action]:
        self.state = "closed"
        return [Send(error_line(reason)), Close(reason)]


def parse_object(data: bytes) -> dict[str, Any]:
    try:
        obj = fastjson.loads(data)
    except ValueError as exc:
        raise BadInput(f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise BadInput("a line is a JSON object")
    return obj


def credentials(obj: dict[str, Any]) -> tuple[str, bytes]:
    """``deviceId`` and ``password`` of a login line or a datagram."""
    device, password = obj.get("deviceId"), obj.get("password")
    if not isinstance(device, str) or not tl.valid_identifier(device):
        raise BadInput("deviceId must be a device identifier")
    if not isinstance(password, str) or not password:
        raise BadInput("password must be the device secret or a signed password")
    return device, password.encode()


def message(obj: dict[str, Any]) -> tuple[str, bytes]:
    """``topic`` (a suffix a device sends on) and ``payload`` (an object, or the envelope as
    a string) of a message line or datagram."""
    suffix = obj.get("topic")
    if not isinstance(suffix, str) or suffix not in UPLINK_SUFFIXES:
        raise BadInput(f"topic must be one of {', '.join(sorted(UPLINK_SUFFIXES))}")
    if "payload" not in obj:
        raise BadInput("the message has no payload")
    payload = obj["payload"]
    if isinstance(payload, str):
        return suffix, payload.encode()
    return suffix, fastjson.dumps(payload)


def datagram(data: bytes) -> tuple[str, bytes, str, bytes]:
    """A UDP datagram: ``(device, password, suffix, payload)``; raises :class:`BadInput`."""
    obj = parse_object(data)
    device, password = credentials(obj)
    suffix, payload = message(obj)
    return device, password, suffix, payload


def status_line(code: int, desc: str) -> bytes:
    """The login answer."""
    return _line({"statusCode": code, "statusDesc": desc})


def error_line(reason: str) -> bytes:
    """What a bad line is answered with."""
    return _line({"statusCode": 1, "statusDesc": reason})


def topic_line(topic: str, payload: bytes | None) -> bytes:
    """``{"topic": …, "payload": …}``: the payload as JSON when it is JSON (every answer
    and downlink message is), else as text."""
    body: Any
    try:
        body = fastjson.loads(payload) if payload is not None else None
    except ValueError:
        body = payload.decode("utf-8", "replace") if payload is not None else None
    return _line({"topic": topic, "payload": body})


def accepted_answer(mid: int | None = None) -> bytes:
    """The ``datasResponse`` payload of a message that landed whole (MQTT sends none; a line
    is always answered, so that a device knows it may send the next)."""
    return json.dumps({"statusCode": 0, "statusDesc": "successful", "mid": mid}).encode()


def _line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
