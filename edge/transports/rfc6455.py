"""Sans-I/O WebSocket server side (RFC 6455): the opening handshake and frames, no sockets.

Only what MQTT over WebSocket needs (MQTT 5.0 section 6, MQTT 3.1.1 section 6): binary data
frames from the client (masked, possibly fragmented), ping/pong and the close handshake; no
extensions. Data frames are delivered as soon as each frame is complete: MQTT is a byte
stream, so packets may span frames and a fragmented message needs no reassembly.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from dataclasses import dataclass

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONTINUATION, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA
DATA_OPCODES = frozenset({OP_CONTINUATION, OP_TEXT, OP_BINARY})
CONTROL_OPCODES = frozenset({OP_CLOSE, OP_PING, OP_PONG})

# Close status codes (RFC 6455 section 7.4.1).
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_NO_STATUS = 1005
CLOSE_INVALID_PAYLOAD = 1007
CLOSE_TOO_BIG = 1009

MAX_HANDSHAKE = 8192
# MQTT subprotocol names a server accepts, best first (3.1 clients still send ``mqttv3.1``).
MQTT_SUBPROTOCOLS = ("mqtt", "mqttv3.1")


class HandshakeError(Exception):
    """The opening handshake is refused; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class FrameError(Exception):
    """The peer broke the framing rules; ``code`` is the close status to send."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Handshake:
    """An accepted opening handshake: what to answer, and how many input bytes it used."""

    response: bytes
    consumed: int
    path: str
    subprotocol: str | None
    headers: dict[str, str]


def accept_key(key: str) -> str:
    """``Sec-WebSocket-Accept`` for a ``Sec-WebSocket-Key`` (RFC 6455 section 4.2.2)."""
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + GUID).digest()).decode()  # noqa: S324 - the RFC mandates SHA-1 here


def _tokens(value: str) -> list[str]:
    return [token.strip().lower() for token in value.split(",") if token.strip()]


def parse_handshake(data: bytes, path: str = "/mqtt") -> Handshake | None:
    """Parse a client's opening handshake; ``None`` while the request head is incomplete.

    Raises :class:`HandshakeError` for a request that is not a valid upgrade to WebSocket on
    ``path`` (the caller answers with :func:`refusal` and closes).
    """
    end = data.find(b"\r\n\r\n")
    if end < 0:
        if len(data) > MAX_HANDSHAKE:
            raise HandshakeError(431, "request head too large")
        return None
    if end > MAX_HANDSHAKE:
        raise HandshakeError(431, "request head too large")
    try:
        head = data[:end].decode("ascii")
    except UnicodeDecodeError:
        raise HandshakeError(400, "request head is not ASCII") from None
    request_line, *header_lines = head.split("\r\n")
    parts = request_line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        raise HandshakeError(400, "malformed request line")
    method, target, version = parts
    if method != "GET":
        raise HandshakeError(405, "only GET may open a WebSocket")
    if version != "HTTP/1.1":
        raise HandshakeError(505, "HTTP/1.1 required")
    headers: dict[str, str] = {}
    for line in header_lines:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise HandshakeError(400, "malformed header line")
        key = name.lower()
        value = value.strip()
        # Repeated headers are combined as HTTP allows for comma-separated lists.
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    request_path = target.split("?", 1)[0]
    if request_path != path:
        raise HandshakeError(404, f"no WebSocket endpoint at {request_path}")
    if "websocket" not in _tokens(headers.get("upgrade", "")):
        raise HandshakeError(426, "Upgrade: websocket required")
    if "upgrade" not in _tokens(headers.get("connection", "")):
        raise HandshakeError(400, "Connection: Upgrade required")
    if headers.get("sec-websocket-version") != "13":
        raise HandshakeError(426, "Sec-WebSocket-Version 13 required")
    key = headers.get("sec-websocket-key", "")
    try:
        raw_key = base64.b64decode(key, validate=True)
    except ValueError:
        raw_key = b""
    if len(raw_key) != 16:
        raise HandshakeError(400, "invalid Sec-WebSocket-Key")
    offered = _tokens(headers.get("sec-websocket-protocol", ""))
    subprotocol = next((p for p in MQTT_SUBPROTOCOLS if p in offered), None)
    if offered and subprotocol is None:
        raise HandshakeError(400, "the WebSocket subprotocol must be mqtt")
    lines = [
        "HTTP/1.1 101 Switching Protocols",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Accept: {accept_key(key)}",
    ]
    if subprotocol is not None:
        lines.append(f"Sec-WebSocket-Protocol: {subprotocol}")
    response = ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")
    return Handshake(response, end + 4, request_path, subprotocol, headers)


REASON_PHRASES = {
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    426: "Upgrade Required",
    431: "Request Header Fields Too Large",
    505: "HTTP Version Not Supported",
}


def refusal(error: HandshakeError) -> bytes:
    """The HTTP response refusing a handshake."""
    body = f"{error}\n".encode()
    phrase = REASON_PHRASES.get(error.status, "Error")
    extra = "Sec-WebSocket-Version: 13\r\n" if error.status == 426 else ""
    return (
        f"HTTP/1.1 {error.status} {phrase}\r\n{extra}Content-Type: text/plain\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode("ascii") + body


def unmask(payload: bytes | bytearray, mask: bytes) -> bytes:
    """XOR ``payload`` with the 4-byte ``mask`` repeated (done on one big integer, in C)."""
    n = len(payload)
    if not n:
        return b""
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")


def encode_frame(opcode: int, payload: bytes = b"", fin: bool = True) -> bytes:
    """A server frame (servers never mask, RFC 6455 section 5.1)."""
    first = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        return struct.pack("!BB", first, n) + payload
    if n < 65536:
        return struct.pack("!BBH", first, 126, n) + payload
    return struct.pack("!BBQ", first, 127, n) + payload


def encode_close(code: int = CLOSE_NORMAL, reason: str = "") -> bytes:
    body = b"" if code == CLOSE_NO_STATUS else struct.pack("!H", code) + reason.encode()[:123]
    return encode_frame(OP_CLOSE, body)


class FrameDecoder:
    """Client frames in, events out: ``("data", bytes)``, ``("ping", bytes)``,
    ``("pong", bytes)`` and ``("close", code, reason)``.

    ``binary_only`` refuses text frames (MQTT-6.0.0-1); ``max_frame`` bounds a frame's
    payload (the caller may change it between reads, e.g. raise it once the client has
    authenticated). Any violation raises :class:`FrameError`; the decoder is then unusable.

    Input is appended to one buffer and a frame is cut out once, when it is complete: its
    head is checked as soon as it arrives, and the bytes of an incomplete frame are not
    looked at again until enough have come (a large frame sent in small reads costs time in
    proportion to its size, not to its square).
    """

    __slots__ = ("_buffer", "_fragmented", "_needed", "binary_only", "max_frame")

    def __init__(self, max_frame: int = 1 << 20, binary_only: bool = True) -> None:
        self.max_frame = max_frame
        self.binary_only = binary_only
        self._buffer = bytearray()
        self._fragmented = False
        # Bytes the buffer must hold before the frame at its start can be complete.
        self._needed = 0

    def feed(self, data: bytes) -> list[tuple]:
        buffer = self._buffer
        if buffer:
            buffer += data
            if len(buffer) < self._needed:
                return []
            view: bytes | bytearray = buffer
        else:
            view = data
        events: list[tuple] = []
        offset = 0
        size = len(view)
        needed = 0
        while size - offset >= 2:
            first = view[offset]
            second = view[offset + 1]
            if first & 0x70:
                raise FrameError(CLOSE_PROTOCOL_ERROR, "reserved bits set without an extension")
            if not second & 0x80:
                raise FrameError(CLOSE_PROTOCOL_ERROR, "client frames must be masked")
            fin = first & 0x80
            opcode = first & 0x0F
            length = second & 0x7F
            head = 2
            if length == 126:
                if size - offset < 4:
                    break
                length = struct.unpack_from("!H", view, offset + 2)[0]
                if length < 126:
                    raise FrameError(CLOSE_PROTOCOL_ERROR, "length not minimally encoded")
                head = 4
            elif length == 127:
                if size - offset < 10:
                    break
                length = struct.unpack_from("!Q", view, offset + 2)[0]
                if length < 65536 or length >> 63:
                    raise FrameError(CLOSE_PROTOCOL_ERROR, "length not minimally encoded")
                head = 10
            if opcode in CONTROL_OPCODES:
                if not fin:
                    raise FrameError(CLOSE_PROTOCOL_ERROR, "fragmented control frame")
                if length > 125:
                    raise FrameError(CLOSE_PROTOCOL_ERROR, "control frame longer than 125 bytes")
            elif opcode in DATA_OPCODES:
                if length > self.max_frame:
                    raise FrameError(CLOSE_TOO_BIG, f"frame of {length} bytes is too large")
                if opcode == OP_CONTINUATION and not self._fragmented:
                    raise FrameError(CLOSE_PROTOCOL_ERROR, "continuation without a message")
                if opcode != OP_CONTINUATION and self._fragmented:
                    raise FrameError(CLOSE_PROTOCOL_ERROR, "new message inside a fragmented one")
                if opcode == OP_TEXT and self.binary_only:
                    raise FrameError(CLOSE_UNSUPPORTED_DATA, "MQTT needs binary frames")
            else:
                raise FrameError(CLOSE_PROTOCOL_ERROR, f"unknown opcode {opcode:#x}")
            end = offset + head + 4 + length
            if end > size:
                needed = end - offset
                break
            mask = bytes(view[offset + head : offset + head + 4])
            payload = unmask(view[offset + head + 4 : end], mask)
            offset = end
            if opcode in DATA_OPCODES:
                self._fragmented = not fin
                if payload:
                    events.append(("data", payload))
            elif opcode == OP_PING:
                events.append(("ping", payload))
            elif opcode == OP_PONG:
                events.append(("pong", payload))
            else:
                events.append(("close", *parse_close(payload)))
                self._buffer = bytearray()
                self._needed = 0
                return events
        self._needed = needed
        if view is buffer:
            del buffer[:offset]
        elif offset < size:
            buffer += memoryview(data)[offset:]
        return events


def parse_close(payload: bytes) -> tuple[int, str]:
    """The status code and reason of a close frame's payload."""
    if not payload:
        return CLOSE_NO_STATUS, ""
    if len(payload) == 1:
        raise FrameError(CLOSE_PROTOCOL_ERROR, "close payload of one byte")
    code = struct.unpack_from("!H", payload)[0]
    if code < 1000 or code in (1004, 1005, 1006, 1015) or 1016 <= code < 3000 or code >= 5000:
        raise FrameError(CLOSE_PROTOCOL_ERROR, f"invalid close code {code}")
    try:
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise FrameError(CLOSE_INVALID_PAYLOAD, "close reason is not UTF-8") from None
    return code, reason
