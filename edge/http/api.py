"""What the HTTP device API answers (docs/devices.md, "HTTP"), through the same ThingLinks
layer as MQTT: the authenticator (``transport="http"``), the uplink pipeline, the endpoints
(presence lease and mailbox) and the broker's per-device publish budget.

``POST /v1/devices/{id}/{suffix}`` is an MQTT publish on ``/v1/devices/{id}/{suffix}`` whose
answer comes in the response instead of on ``datasResponse``; ``GET
/v1/devices/{id}/command?wait=N`` takes the device's next downlink message from its mailbox,
waiting up to N seconds.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from edge.codecs import thinglinks as tl
from edge.deferreds import then
from edge.mqtt.errors import Reason
from edge.mqtt.policy import AuthResult
from edge.thinglinks.endpoints import Downlink, Mailbox
from edge.thinglinks.mqtt import EdgeHooks
from edge.thinglinks.uplink import Handled

from .config import HttpConfig
from .connection import Request, Response, problem

log = Logger(namespace="edge")

PREFIX = tl.TOPIC_PREFIX
# What a device may post: the uplink topic suffixes of MQTT.
UPLINK = frozenset({"datas", "events", "commandResponse", *tl.SIMPLE_TOPICS})
COMMAND = "command"
# The response header naming the suffix a polled message was sent on (``command``,
# ``shadow/getResponse``, ``topo/addResponse``…: its MQTT topic is /v1/devices/{id}/…).
TOPIC_HEADER = "X-ThingLinks-Topic"
CHALLENGE = ("WWW-Authenticate", 'Basic realm="thinglinks"')
# Authentication refusals (MQTT 5 reason codes) → HTTP status.
AUTH_STATUS: dict[int, int] = {
    Reason.BAD_USER_NAME_OR_PASSWORD: 401,
    Reason.CONNECTION_RATE_EXCEEDED: 429,
    Reason.SERVER_UNAVAILABLE: 503,
}
SUCCESS = {"statusCode": 0, "statusDesc": "successful", "errors": []}


@dataclass(frozen=True, slots=True)
class Route:
    device: str
    suffix: str
    method: str


def route(request: Request) -> Route | Response:
    """The API path a request names, or the answer when it names none (404) or uses the
    wrong method (405)."""
    path = urlsplit(request.target).path
    if not path.startswith(PREFIX):
        return problem(404, f"no such path: {path}")
    device, _, suffix = path[len(PREFIX) :].partition("/")
    if not tl.valid_identifier(device) or not (suffix in UPLINK or suffix == COMMAND):
        return problem(404, f"no such path: {path}")
    method = "GET" if suffix == COMMAND else "POST"
    if request.method != method:
        return problem(405, f"{path} takes {method}", ("Allow", method))
    return Route(device, suffix, method)


def basic_credentials(request: Request) -> tuple[str, bytes] | None:
    """``(user, password)`` of an ``Authorization: Basic`` header, or None."""
    scheme, _, encoded = request.headers.get("authorization", "").strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(b":")
    if not sep:
        return None
    try:
        return user.decode("utf-8"), password
    except UnicodeDecodeError:
        return None


def wait_seconds(request: Request, longest: float) -> float | None:
    """The ``wait`` query parameter (0 when absent), at most ``longest``; None: unreadable."""
    values = parse_qs(urlsplit(request.target).query).get("wait")
    if not values:
        return 0.0
    try:
        wait = float(values[-1])
    except ValueError:
        return None
    if wait != wait or wait < 0:  # NaN
        return None
    return min(wait, longest)


@dataclass(slots=True)
class Session:
    """One connection's state: where it comes from, whether it is still open, and the
    credentials it was last admitted with (a keep-alive connection is not authenticated
    again for each request: a signed password is accepted once per connection, as on
    MQTT). Those hold while the device's mailbox is still its endpoint (it was not locked,
    deleted or its product disabled) and its secret did not change."""

    peer: str
    open: bool = True
    authorization: str | None = None
    device: str | None = None
    secret: str | None = None
    mailbox: Mailbox | None = None


def json_response(status: int, body: dict[str, Any], *headers: tuple[str, str]) -> Response:
    text = json.dumps(body, separators=(",", ":"), ensure_ascii=False)  # as datasResponse
    return Response(status, text.encode(), headers)


class DeviceApi:
    """Answers the requests of every HTTP connection of a node."""

    def __init__(self, hooks: EdgeHooks, config: HttpConfig, clock: Any) -> None:
        self.hooks = hooks
        self.config = config
        self.clock = clock
        # Long-polls waiting now, per device.
        self.polls: dict[str, int] = {}

    @property
    def waiting(self) -> int:
        return sum(self.polls.values())

    def handle(self, request: Request, session: Session) -> Response | Deferred[Response]:
        found = route(request)
        if isinstance(found, Response):
            return found
        credentials = basic_credentials(request)
        if credentials is None:
            reason = "HTTP Basic credentials needed: the device identifier and its secret"
            return problem(401, reason, CHALLENGE)
        admitted = self._admitted(request, credentials, session)
        result: Any = then(
            admitted, lambda refused: refused or self._serve(found, request, session)
        )
        return result  # type: ignore[no-any-return]

    def _admitted(
        self, request: Request, credentials: tuple[str, bytes], session: Session
    ) -> Response | Deferred[Response | None] | None:
        """None when the credentials admit a device (``session.device``), else the refusal."""
        authorization = request.headers["authorization"]
        user, password = credentials
        directory = self.hooks.auth.directory

        def current(record: Any) -> Response | Deferred[Response | None] | None:
            if (
                record is not None
                and record.secret == session.secret
                and session.mailbox is not None
                and self.hooks.endpoints.get(user) is session.mailbox
            ):
                return None
            return self._check(user, password, authorization, session)

        if session.authorization == authorization and session.device == user:
            found: Any = then(directory.device(user), current)
            return found  # type: ignore[no-any-return]
        return self._check(user, password, authorization, session)

    def _check(
        self, user: str, password: bytes, authorization: str, session: Session
    ) -> Response | Deferred[Response | None] | None:
        session.authorization = session.device = session.secret = session.mailbox = None

        def checked(result: AuthResult) -> Any:
            identity = result.identity
            if not result.ok or identity is None:
                status = AUTH_STATUS.get(result.reason, 403)
                headers = (CHALLENGE,) if status == 401 else ()
                return problem(status, result.detail or "not authorized", *headers)
            return then(
                self.hooks.auth.directory.device(identity),
                lambda record: admit(identity, record),
            )

        def admit(identity: str, record: Any) -> None:
            session.authorization = authorization
            session.device = identity
            session.secret = record.secret if record is not None else None

        outcome: Any = then(
            self.hooks.auth.check(user, password, session.peer, None, "http"), checked
        )
        return outcome  # type: ignore[no-any-return]

    def _serve(
        self, found: Route, request: Request, session: Session
    ) -> Response | Deferred[Response]:
        device = session.device
        assert device is not None
        # Every request renews the device's presence lease.
        mailbox = session.mailbox = self.hooks.endpoints.touch(device, session.peer, "http")
        if found.device != device:
            reason = f"device {device} may not use the path of device {found.device}"
            return problem(403, reason)
        if found.method == "GET":
            return self._poll(device, request, mailbox, session)
        return self._post(device, found.suffix, request.body)

    def _post(self, device: str, suffix: str, body: bytes) -> Response | Deferred[Response]:
        """The body goes through the pipeline as an MQTT publish at QoS 1 would: answered
        once the bus stored what landed."""
        broker = self.hooks.broker
        if broker is not None and broker.metered:
            # The device's publish budget is the one its MQTT publishes spend.
            size = len(PREFIX) + len(device) + 1 + len(suffix) + len(body)
            over = broker.spend(device, size, self.clock.seconds())
            if over is not None:
                broker.refused(over)
                kind = "rate" if over == "publish_rate" else "byte"
                return problem(429, f"publish {kind} budget exceeded")
        handled = self.hooks.pipeline.handle(device, device, suffix, body, confirmed=True)
        result: Any = then(handled, self._answered)
        return result  # type: ignore[no-any-return]

    def _answered(self, handled: Handled) -> Response | Deferred[Response]:
        status = 400 if handled.rejected else 200
        if handled.answer is not None:
            response = Response(status, handled.answer)
        else:
            mid = next((e["mid"] for e in handled.events if e.get("mid") is not None), None)
            if handled.errors:
                response = Response(status, tl.datas_response(handled.errors, mid))
            else:
                response = json_response(status, {**SUCCESS, "mid": mid})
        if handled.stored is None:
            return response

        def unstored(failure: Failure) -> Response:
            log.warn("HTTP uplink not stored: {e}", e=failure.getErrorMessage())
            return problem(503, "not stored: the bus is unavailable; send it again")

        return handled.stored.addCallbacks(lambda _: response, unstored)

    def _poll(
        self, device: str, request: Request, mailbox: Mailbox, session: Session
    ) -> Response | Deferred[Response]:
        """The device's next downlink message, waiting for one up to ``wait`` seconds. A
        message is taken from the mailbox only when it can be written at once: a poll whose
        connection closed is cancelled first (the mailbox forgets it), and one that got a
        message after its connection closed puts it back."""
        wait = wait_seconds(request, self.config.max_wait)
        if wait is None:
            return problem(400, "wait must be a number of seconds")
        if wait > 0:
            if self.waiting >= self.config.max_polls:
                return problem(429, "too many long-polls waiting on this node")
            if self.polls.get(device, 0) >= self.config.device_polls:
                return problem(429, f"device {device} has {self.config.device_polls} polls waiting")
        self.polls[device] = self.polls.get(device, 0) + 1

        def done(result: Any) -> Any:
            left = self.polls.get(device, 1) - 1
            if left > 0:
                self.polls[device] = left
            else:
                self.polls.pop(device, None)
            return result

        def delivered(message: Downlink | None) -> Response:
            if message is None:
                return Response(204)
            if not session.open:
                mailbox.deliver(message)
                return Response(204, close=True)
            return Response(200, message.payload, ((TOPIC_HEADER, message.suffix),))

        waited = mailbox.wait(wait).addBoth(done)
        return waited.addCallback(delivered)
