"""The device resources of the CoAP transport: which request names what, and what each outcome
answers, as plain values (no I/O; ``edge.transports.coap`` does the asking and the sending).

A device's resources are its MQTT topics as paths, ``/v1/devices/{id}/{suffix}``:

* ``POST`` on an uplink suffix (``datas``, ``events``, ``commandResponse``, ``shadow/get``,
  ``shadow/update``, ``topo/…``) carries the payload the device would publish on MQTT;
* ``GET`` on a downlink suffix (``command``, ``shadow/getResponse``, ``topo/addResponse``…)
  reads what the platform sends the device there, once or, with Observe 0, as notifications.

Credentials travel in Uri-Query options: ``p=`` the device secret or a signed password
(``hmac-sha256:{ts}:{sig}``), and optionally ``u=`` the device identifier when it differs from
the path's (a request for another device's path is then refused with 4.03, not 4.01).
"""

from __future__ import annotations

from dataclasses import dataclass

from edge.codecs import thinglinks as tl
from edge.mqtt.errors import Reason

from .exchange import Response
from .message import Code, Message, OptionNumber, option

CONTENT_FORMAT_TEXT = 0
CONTENT_FORMAT_JSON = 50

UPLINK = frozenset(("datas", "events", "commandResponse", *tl.SIMPLE_TOPICS))
DOWNLINK = frozenset(
    (
        "command",
        "shadow/getResponse",
        "shadow/updateResponse",
        "topo/addResponse",
        "topo/deleteResponse",
        "topo/updateResponse",
        "topo/queryResponse",
        "topo/otaCommand",
        "topo/otaRead",
        "topo/otaPullResponse",
        "topo/otaReportResponse",
    )
)

CREDENTIALS_MISSING = "credentials required: add the Uri-Query p=<secret or signed password>"


@dataclass(frozen=True, slots=True)
class Route:
    """A request for one of a device's resources, with the credentials it carried."""

    device: str
    suffix: str
    method: int
    user: str  # who the credentials are of: ``u=``, else the path's device
    password: str | None


def text(code: int, reason: str) -> Response:
    """An answer whose payload is a diagnostic in plain words (RFC 7252 section 5.5.2)."""
    return Response(code, reason.encode(), (option(OptionNumber.CONTENT_FORMAT, 0),))


def json_content(code: int, payload: bytes) -> Response:
    if not payload:
        return Response(code)
    return Response(code, payload, (option(OptionNumber.CONTENT_FORMAT, CONTENT_FORMAT_JSON),))


def route(message: Message) -> Route | Response:
    """The resource ``message`` asks for, or the answer that refuses it (4.04, 4.05)."""
    path = message.strings(OptionNumber.URI_PATH)
    if len(path) < 4 or path[0] != "v1" or path[1] != "devices":
        return text(Code.NOT_FOUND, "resources are /v1/devices/{id}/{suffix}")
    device, suffix = path[2], "/".join(path[3:])
    if not tl.valid_identifier(device):
        return text(Code.NOT_FOUND, f"invalid device identifier {device!r}")
    if suffix in UPLINK:
        allowed = Code.POST
    elif suffix in DOWNLINK:
        allowed = Code.GET
    else:
        return text(Code.NOT_FOUND, f"no resource {suffix!r} under /v1/devices/{device}/")
    if message.code != allowed:
        method = "POST" if allowed == Code.POST else "GET"
        return text(Code.METHOD_NOT_ALLOWED, f"{suffix} takes {method}")
    query: dict[str, str] = {}
    for item in message.uri_query:
        key, _, value = item.partition("=")
        query.setdefault(key, value)
    return Route(device, suffix, allowed, query.get("u") or device, query.get("p"))


def refused(reason: int, detail: str) -> Response:
    """The answer to credentials the authenticator refused (an MQTT 5 reason code)."""
    if reason == Reason.CONNECTION_RATE_EXCEEDED:
        return text(Code.TOO_MANY_REQUESTS, detail)
    if reason in (Reason.SERVER_UNAVAILABLE, Reason.SERVER_BUSY):
        return text(Code.SERVICE_UNAVAILABLE, detail)
    return text(Code.UNAUTHORIZED, detail)


def another_device(identity: str, device: str) -> Response:
    return text(Code.FORBIDDEN, f"device {identity} may not use the resources of {device}")


def uplink_answer(answer: bytes | None, rejected: bool, reason: str | None) -> Response:
    """2.04 Changed when anything landed or nothing was refused (its payload the
    ``datasResponse`` JSON listing what was refused, else empty), 4.00 Bad Request with that
    JSON when nothing landed and something was refused."""
    if rejected:
        if answer is not None:
            return json_content(Code.BAD_REQUEST, answer)
        return text(Code.BAD_REQUEST, reason or "refused")
    return json_content(Code.CHANGED, answer or b"")


def content(payload: bytes | None) -> Response:
    """2.05 Content with a downlink message's payload; empty when none waits."""
    return json_content(Code.CONTENT, payload or b"")


def ended(reason: str) -> Response:
    """The last notification of an observation the server ends (RFC 7641 section 3.2: a
    non-2.xx notification removes the client from the observers)."""
    return text(Code.SERVICE_UNAVAILABLE, reason)
