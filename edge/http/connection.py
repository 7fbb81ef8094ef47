"""One HTTP/1.1 server connection as a state machine: bytes in, whole requests out, answers
in, bytes out (h11 does the parsing and framing).

Requests are answered one at a time and in order: while one is being answered, what follows
it (pipelined requests) is held unread, at most ``read_ahead`` bytes (:attr:`wants_pause`
tells the transport to stop reading). A body is collected only up to ``max_body`` bytes: a
larger Content-Length is refused before any of the body is read, a larger chunked body as
soon as it passes the limit; either way the answer is 413 and the connection closes (the
rest of the body is never read). Malformed requests get 400, oversized headers 431, each
followed by closing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import h11

from .config import HttpConfig

REASONS = {
    200: b"OK",
    204: b"No Content",
    400: b"Bad Request",
    401: b"Unauthorized",
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed",
    413: b"Content Too Large",
    429: b"Too Many Requests",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    503: b"Service Unavailable",
}


@dataclass(frozen=True, slots=True)
class Request:
    """A whole request: header names in lower case (the last value of a repeated one)."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    content_type: str = "application/json"
    # Close the connection once this answer is written.
    close: bool = False


def problem(status: int, reason: str, *headers: tuple[str, str], close: bool = False) -> Response:
    """An error answer: ``{"statusCode": 1, "statusDesc": reason}``."""
    body = json.dumps({"statusCode": 1, "statusDesc": reason}, ensure_ascii=False).encode()
    return Response(status, body, headers, close=close)


@dataclass(slots=True)
class _Incoming:
    head: h11.Request
    body: bytearray = field(default_factory=bytearray)


class HttpConnection:
    """The server side of one connection (no I/O: the caller moves the bytes)."""

    def __init__(self, config: HttpConfig) -> None:
        self.config = config
        # h11 refuses a head once its bytes so far, short of the last, pass this; a head that
        # came whole is measured in ``_started``: either way a head of more than
        # ``max_header`` bytes is refused, however the reads split it.
        self.h11 = h11.Connection(
            h11.SERVER, max_incomplete_event_size=max(config.max_header - 1, 0)
        )
        self._incoming: _Incoming | None = None
        # A request was handed out and is not answered yet.
        self.busy = False
        # Bytes received while busy, given to h11 once the answer is written.
        self._held = bytearray()
        self._out = bytearray()
        # The connection is to close once what is written has gone (an answer with
        # ``close``, a refused request, or the client closed its side).
        self.closing = False
        # The client closed its side while a request was being answered.
        self._held_eof = False

    def receive(self, data: bytes) -> None:
        """Bytes from the client (``b""``: it closed its side)."""
        if self.busy or self._held:
            self._held += data
            if not data:
                self._held_eof = True
            return
        self.h11.receive_data(data)

    @property
    def wants_pause(self) -> bool:
        """Whether the transport should stop reading until the current answer is written."""
        return len(self._held) > self.config.read_ahead

    def next_request(self) -> Request | Response | None:
        """The next whole request; or an answer to write before closing (the request was
        refused: malformed, too large); or None: more bytes are needed, a request is being
        answered, or the connection is closing."""
        if self.busy or self.closing:
            return None
        while True:
            # the bytes buffered before a request head is read, to measure the head
            waiting = len(self.h11.trailing_data[0]) if self._incoming is None else 0
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as exc:
                return self._refuse(exc.error_status_hint, str(exc) or "malformed request")
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return None
            if isinstance(event, h11.ConnectionClosed):
                self.closing = True
                return None
            if isinstance(event, h11.Request):
                refused = self._started(event, waiting - len(self.h11.trailing_data[0]))
                if refused is not None:
                    return refused
            elif isinstance(event, h11.Data):
                incoming = self._incoming
                assert incoming is not None
                if len(incoming.body) + len(event.data) > self.config.max_body:
                    return self._too_large()
                incoming.body += event.data
            elif isinstance(event, h11.EndOfMessage):
                return self._complete()

    def _started(self, head: h11.Request, size: int) -> Response | None:
        """``size``: the bytes of the head as they came (its request line and fields)."""
        self._incoming = _Incoming(head)
        if size > self.config.max_header:
            return self._refuse(
                431, f"the request head is larger than {self.config.max_header} bytes"
            )
        length = _content_length(head)
        if length is not None and length > self.config.max_body:
            return self._too_large()
        if self.h11.they_are_waiting_for_100_continue:
            self._out += self.h11.send(h11.InformationalResponse(status_code=100, headers=[]))
        return None

    def _complete(self) -> Request:
        incoming = self._incoming
        assert incoming is not None
        self._incoming = None
        self.busy = True
        head = incoming.head
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in head.headers}
        return Request(
            head.method.decode("ascii", "replace"),
            head.target.decode("latin-1"),
            headers,
            bytes(incoming.body),
        )

    def _too_large(self) -> Response:
        self.busy = True
        return problem(413, f"the body is larger than {self.config.max_body} bytes", close=True)

    def _refuse(self, status: int, reason: str) -> Response:
        self.busy = True
        if status not in REASONS:
            status = 400
        return problem(status, reason, close=True)

    def send(self, response: Response) -> None:
        """Write the answer to the request handed out last (or to a refused one)."""
        self.busy = False
        close = response.close or self.h11.their_state is not h11.DONE
        headers = list(response.headers)
        if response.status != 204:  # a 204 has no body, hence no length or type
            headers[:0] = [
                ("Content-Type", response.content_type),
                ("Content-Length", str(len(response.body))),
            ]
        if close:
            headers.append(("Connection", "close"))
        try:
            self._out += self.h11.send(
                h11.Response(
                    status_code=response.status,
                    headers=headers,
                    reason=REASONS.get(response.status, b""),
                )
            )
        except h11.LocalProtocolError:
            # The request line itself was unreadable: h11 has no request to answer.
            self._out += _raw(response, headers)
            self.closing = True
            return
        if response.body:
            self._out += self.h11.send(h11.Data(data=response.body))
        self._out += self.h11.send(h11.EndOfMessage())
        if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
            self.h11.start_next_cycle()
            held, self._held = bytes(self._held), bytearray()
            if held:
                self.h11.receive_data(held)
            if self._held_eof:
                self.h11.receive_data(b"")
        else:
            self.closing = True

    def data_to_send(self) -> bytes:
        out, self._out = bytes(self._out), bytearray()
        return out


def _content_length(head: h11.Request) -> int | None:
    for name, value in head.headers:
        if name == b"content-length":
            return int(value)  # h11 checked that it is a number
    return None


def _raw(response: Response, headers: list[tuple[str, str]]) -> bytes:
    reason = REASONS.get(response.status, b"").decode()
    lines = [f"HTTP/1.1 {response.status} {reason}", *(f"{n}: {v}" for n, v in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + response.body
