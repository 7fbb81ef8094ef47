"""The ThingLinks device protocol (docs/protocol.md): topics, the envelope, and the uplink
events a device message produces (docs/bus.md). Pure functions: the caller supplies the
registry data.

Processing one message is two steps: :func:`read` (or :func:`parse`, from a whole topic)
unwraps and parses the body and says which devices it names; the caller looks those up and
:func:`evaluate` validates and builds events. :mod:`edge.thinglinks.uplink` runs the steps.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from edge import fastjson
from edge.crypto import constant_time_equal
from edge.thingmodel import Problem, ThingModel

TOPIC_PREFIX = "/v1/devices/"
# Dynamic registration (README "Device authentication"): request and answer topic suffixes.
REGISTER = "register"
REGISTER_RESPONSE = "registerResponse"
# Device and product identifiers, as webapp validates them.
IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")

# suffix → (event type, op) for the uplink topics other than datas
SIMPLE_TOPICS: dict[str, tuple[str, str]] = {
    "topo/add": ("topo", "add"),
    "topo/delete": ("topo", "delete"),
    "topo/update": ("topo", "update"),
    "topo/query": ("topo", "query"),
    "topo/otaCommandResponse": ("ota", "otaCommandResponse"),
    "topo/otaPull": ("ota", "otaPull"),
    "topo/otaReport": ("ota", "otaReport"),
    "topo/otaReadResponse": ("ota", "otaReadResponse"),
    "shadow/get": ("shadow", "get"),
    "shadow/update": ("shadow", "update"),
}


def split_topic(topic: str) -> tuple[str, str] | None:
    """``(device identifier, suffix)`` for ``/v1/devices/{id}/{suffix}``, else ``None``."""
    if not topic.startswith(TOPIC_PREFIX):
        return None
    device, sep, suffix = topic[len(TOPIC_PREFIX) :].partition("/")
    if not sep or not device:
        return None
    return device, suffix


def response_topic(device: str, suffix: str = "datasResponse") -> str:
    return f"{TOPIC_PREFIX}{device}/{suffix}"


def valid_identifier(identifier: str) -> bool:
    return IDENTIFIER.fullmatch(identifier) is not None


@dataclass(frozen=True, slots=True)
class DataError:
    """One refused item, as reported to the device on ``datasResponse``."""

    code: str
    reason: str
    device: str | None = None
    service: str | None = None
    property: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "deviceId": self.device,
            "serviceCode": self.service,
            "property": self.property,
            "code": self.code,
            "reason": self.reason,
        }

    @classmethod
    def from_problem(cls, device: str, problem: Problem) -> DataError:
        return cls(problem.code, problem.reason, device, problem.service, problem.property)


class ServiceReport(NamedTuple):
    """One service entry of a ``datas`` body (a tuple: a million are built per second)."""

    device: str
    service: str
    data: dict[str, Any]
    event_time: int | None


@dataclass(frozen=True, slots=True)
class DeviceContext:
    """What the registry says about one device named in a message."""

    identifier: str
    product: str
    model: ThingModel | None
    model_error: str | None = None


class Keys(Protocol):
    """What the envelope needs of a device (a registry ``DeviceRecord`` has these)."""

    @property
    def sign_key(self) -> str | None: ...

    @property
    def encrypt_key(self) -> str | None: ...

    @property
    def encrypt_vector(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class EnvelopeKeys:
    """Envelope keys on their own (tools, tests); the edge passes the device record."""

    sign_key: str | None = None
    encrypt_key: str | None = None
    encrypt_vector: str | None = None


NO_KEYS = EnvelopeKeys()


@dataclass(slots=True)
class Parsed:
    """A device message after reading its topic and body, before validation."""

    device: str
    suffix: str
    kind: str  # data | cmdrsp | event | topo | ota | shadow | other
    body: Any = None
    mid: int | None = None
    errors: list[DataError] = field(default_factory=list)
    reports: list[ServiceReport] = field(default_factory=list)
    # The sub-device a gateway answers for (commandResponse ``deviceIdentification``).
    subject: str | None = None

    @property
    def devices(self) -> set[str]:
        """Every device whose registry record :func:`evaluate` needs."""
        found = {self.device} | {r.device for r in self.reports}
        if self.subject is not None:
            found.add(self.subject)
        return found


@dataclass(slots=True)
class Outcome:
    events: list[dict[str, Any]]
    errors: list[DataError]
    accepted: int
    response: bytes | None

    @property
    def rejected_entirely(self) -> bool:
        return bool(self.errors) and not self.accepted


class PayloadError(ValueError):
    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


CIPHER_SM4, CIPHER_AES = 1, 2


def data_sign(body_text: str, timestamp: Any, sign_key: str) -> str:
    """ThingLinks' ``dataSign``: md5 hex of ``{dataBody}:{timeStamp}:{signKey}``."""
    return hashlib.md5(f"{body_text}:{timestamp}:{sign_key}".encode()).hexdigest()  # noqa: S324


def body_text(body: Any) -> str:
    """``dataBody`` as signed: the string itself, or an object's compact JSON."""
    if isinstance(body, str):
        return body
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


def _cipher_for(flag: int, keys: Keys) -> Cipher[modes.CBC]:
    key = (keys.encrypt_key or "").encode()
    iv = (keys.encrypt_vector or "").encode()
    if flag == CIPHER_AES:
        if len(key) not in (16, 24, 32) or len(iv) != 16:
            raise ValueError("the AES key must be 16, 24 or 32 bytes and the IV 16 bytes")
        return Cipher(algorithms.AES(key), modes.CBC(iv))
    if len(key) != 16 or len(iv) != 16:
        raise ValueError("the SM4 key and IV must be 16 bytes")
    return Cipher(algorithms.SM4(key), modes.CBC(iv))


def encrypt_body(text: str, flag: int, keys: Keys) -> str:
    """The base64 ciphertext of ``text`` (CBC, PKCS#7), as a device sends ``dataBody``."""
    padder = padding.PKCS7(128).padder()
    plain = padder.update(text.encode()) + padder.finalize()
    encryptor = _cipher_for(flag, keys).encryptor()
    return base64.b64encode(encryptor.update(plain) + encryptor.finalize()).decode()


def decrypt_body(data: str, flag: int, keys: Keys) -> str:
    decryptor = _cipher_for(flag, keys).decryptor()
    raw = base64.b64decode(data, validate=True)
    plain = decryptor.update(raw) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    return (unpadder.update(plain) + unpadder.finalize()).decode()


def unwrap(payload: bytes, keys: Keys | None = None) -> tuple[Any, int | None]:
    """The body and the envelope ``mid`` of a message that may come bare or enveloped.

    An enveloped body is checked against its ``dataSign`` when that is not blank, and
    decrypted when ``cipherFlag`` is 1 (SM4) or 2 (AES), with the device's ``keys``.
    """
    try:
        obj = fastjson.loads(payload)
    except ValueError as exc:
        raise PayloadError("malformed_json", f"payload is not valid JSON: {exc}") from None
    if not (isinstance(obj, dict) and "dataBody" in obj and isinstance(obj.get("head"), dict)):
        return obj, None
    if keys is None:
        keys = NO_KEYS
    head = obj["head"]
    mid = head.get("mid")
    mid = mid if isinstance(mid, int) and not isinstance(mid, bool) else None
    cipher = head.get("cipherFlag", 0)
    if cipher not in (0, None, CIPHER_SM4, CIPHER_AES):
        raise PayloadError("unsupported_cipher", f"unknown cipherFlag {cipher!r} (0, 1 or 2)")
    body = obj["dataBody"]
    signature = obj.get("dataSign")
    if isinstance(signature, str) and signature.strip():
        if not keys.sign_key:
            raise PayloadError("bad_signature", "dataSign given but the device has no sign key")
        expected = data_sign(body_text(body), head.get("timeStamp"), keys.sign_key)
        if not constant_time_equal(signature.strip().lower(), expected):
            raise PayloadError(
                "bad_signature", "dataSign does not match md5(dataBody:timeStamp:signKey)"
            )
    if cipher in (CIPHER_SM4, CIPHER_AES):
        name = "SM4" if cipher == CIPHER_SM4 else "AES"
        if not isinstance(body, str):
            raise PayloadError("undecryptable", f"an {name} dataBody must be base64 text")
        if not keys.encrypt_key or not keys.encrypt_vector:
            raise PayloadError(
                "undecryptable", f"cipherFlag {cipher} but the device has no {name} key and IV"
            )
        try:
            body = decrypt_body(body, cipher, keys)
        except (ValueError, binascii.Error, UnicodeDecodeError):
            raise PayloadError(
                "undecryptable", f"dataBody cannot be decrypted with the device's {name} key"
            ) from None
    if isinstance(body, str):
        try:
            body = fastjson.loads(body)
        except ValueError as exc:
            raise PayloadError("malformed_json", f"dataBody is not valid JSON: {exc}") from None
    return body, mid


def _event_time(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return None


def _parse_datas(parsed: Parsed) -> None:
    body = parsed.body
    devices = body.get("devices") if isinstance(body, dict) else None
    if not isinstance(devices, list) or not devices:
        parsed.errors.append(DataError("invalid_body", 'the body needs a non-empty "devices" list'))
        return
    for entry in devices:
        device = entry.get("deviceId") if isinstance(entry, dict) else None
        if not isinstance(device, str) or not device:
            parsed.errors.append(DataError("invalid_body", 'a devices entry has no "deviceId"'))
            continue
        services = entry.get("services")
        if not isinstance(services, list):
            parsed.errors.append(
                DataError("invalid_body", 'the entry has no "services" list', device)
            )
            continue
        for service in services:
            if type(service) is dict:  # the common case, checked in one go
                code = service.get("serviceCode")
                data = service.get("data")
                if type(code) is str and code and type(data) is dict:
                    at = service.get("eventTime")
                    at = at if type(at) is int and at > 0 else None
                    parsed.reports.append(ServiceReport(device, code, data, at))
                    continue
            code = service.get("serviceCode") if isinstance(service, dict) else None
            if not isinstance(code, str) or not code:
                parsed.errors.append(
                    DataError("invalid_body", 'a service has no "serviceCode"', device)
                )
                continue
            data = service.get("data")
            if not isinstance(data, dict):
                parsed.errors.append(
                    DataError("invalid_body", '"data" must be an object', device, code)
                )
                continue
            parsed.reports.append(
                ServiceReport(device, code, data, _event_time(service.get("eventTime")))
            )


def parse(topic: str, payload: bytes, keys: Keys | None = None) -> Parsed | None:
    """Read a message on ``/v1/devices/{id}/…``; ``None`` for any other topic. ``keys`` are the
    topic device's envelope keys."""
    split = split_topic(topic)
    if split is None:
        return None
    return read(split[0], split[1], payload, keys)


def read(device: str, suffix: str, payload: bytes, keys: Keys | None = None) -> Parsed:
    """Read a message of ``device`` on the topic suffix ``suffix`` (``datas``, ``events``,
    ``shadow/update``…, what follows ``/v1/devices/{id}/``), whatever transport carried it:
    unwrap the envelope (signature, decryption with ``keys``, the device's envelope keys) and
    parse the body."""
    kind = {"datas": "data", "commandResponse": "cmdrsp", "events": "event"}.get(suffix)
    if kind is None:
        kind = SIMPLE_TOPICS[suffix][0] if suffix in SIMPLE_TOPICS else "other"
    parsed = Parsed(device, suffix, kind)
    if kind == "other":
        return parsed
    try:
        parsed.body, parsed.mid = unwrap(payload, keys)
    except PayloadError as exc:
        parsed.errors.append(DataError(exc.code, exc.reason, device))
        return parsed
    if kind == "data":
        _parse_datas(parsed)
    elif not isinstance(parsed.body, dict):
        parsed.errors.append(DataError("invalid_body", "the body must be a JSON object", device))
    elif kind == "cmdrsp":
        subject = parsed.body.get("deviceIdentification")
        if isinstance(subject, str) and subject and subject != device:
            parsed.subject = subject
    return parsed


def evaluate(parsed: Parsed, contexts: Mapping[str, DeviceContext | DataError], ts: int) -> Outcome:
    """Validate ``parsed`` against the thing models in ``contexts`` and build its events.

    ``contexts`` maps each of ``parsed.devices`` to its registry data, or to the error that
    refuses it (unknown device, not a sub-device of the sender…).
    """
    errors = list(parsed.errors)
    events: list[dict[str, Any]] = []
    accepted = 0
    own = contexts.get(parsed.device)
    product = own.product if isinstance(own, DeviceContext) else None
    if parsed.kind == "data":
        for report in parsed.reports:
            ctx = contexts.get(report.device)
            if isinstance(ctx, DataError) or ctx is None:
                errors.append(
                    ctx
                    or DataError("unknown_device", f"unknown device {report.device}", report.device)
                )
                continue
            if ctx.model is None:
                reason = ctx.model_error or "the product has no thing model"
                errors.append(DataError("no_model", reason, report.device, report.service))
                continue
            values, problems = ctx.model.validate_service_data(report.service, report.data)
            if problems:
                errors.extend(DataError.from_problem(report.device, p) for p in problems)
            if values:
                accepted += 1
                events.append(
                    {
                        "t": "data",
                        "dev": report.device,
                        "prod": ctx.product,
                        "svc": report.service,
                        "ts": ts,
                        "et": report.event_time,
                        "v": values,
                        "mid": parsed.mid,
                    }
                )
    elif parsed.kind == "event" and not parsed.errors:
        accepted, event_errors = _events(parsed, own, ts, events)
        errors.extend(event_errors)
    elif parsed.kind == "cmdrsp" and not parsed.errors:
        body = parsed.body
        subject = contexts.get(parsed.subject) if parsed.subject is not None else None
        if isinstance(subject, DataError):
            return Outcome([], [*errors, subject], 0, None)
        events.append(
            {
                "t": "cmdrsp",
                "dev": parsed.subject or parsed.device,
                "mid": parsed.mid if parsed.mid is not None else body.get("mid"),
                "svc": body.get("serviceCode"),
                "cmd": body.get("cmd"),
                "err": body.get("errCode", 0),
                "params": body.get("params") if isinstance(body.get("params"), dict) else {},
                "ts": ts,
            }
        )
        accepted = 1
    elif parsed.kind in ("topo", "ota", "shadow") and not parsed.errors:
        op = SIMPLE_TOPICS[parsed.suffix][1]
        events.append(
            {
                "t": parsed.kind,
                "dev": parsed.device,
                "prod": product,
                "op": op,
                "body": parsed.body,
                "ts": ts,
            }
        )
        accepted = 1
    response = None
    if parsed.kind == "data" and errors:
        response = datas_response(errors, parsed.mid)
    return Outcome(events, errors, accepted, response)


def _events(
    parsed: Parsed, own: DeviceContext | DataError | None, ts: int, events: list[dict[str, Any]]
) -> tuple[int, list[DataError]]:
    services = parsed.body.get("services")
    if not isinstance(services, list):
        return 0, [DataError("invalid_body", 'the body needs a "services" list', parsed.device)]
    if not isinstance(own, DeviceContext):
        return 0, [own or DataError("unknown_device", "unknown device", parsed.device)]
    errors: list[DataError] = []
    accepted = 0
    for item in services:
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("serviceCode"), str)
            or not isinstance(item.get("event"), str)
        ):
            errors.append(
                DataError("invalid_body", 'an event needs "serviceCode" and "event"', parsed.device)
            )
            continue
        params = item.get("params") if isinstance(item.get("params"), dict) else {}
        if own.model is not None:
            params, problems = own.model.validate_event(item["serviceCode"], item["event"], params)
            errors.extend(DataError.from_problem(parsed.device, p) for p in problems)
            if problems and not params:
                continue
        accepted += 1
        events.append(
            {
                "t": "event",
                "dev": parsed.device,
                "prod": own.product,
                "svc": item["serviceCode"],
                "event": item["event"],
                "params": params,
                "ts": ts,
                "et": _event_time(item.get("eventTime")),
            }
        )
    return accepted, errors


def summarize(errors: list[DataError]) -> str:
    first = errors[0].reason
    if len(errors) == 1:
        return first
    return f"{len(errors)} problems; first: {first}"


def datas_response(errors: list[DataError], mid: int | None) -> bytes:
    body = {
        "statusCode": 1,
        "statusDesc": summarize(errors),
        "errors": [e.as_dict() for e in errors],
        "mid": mid,
    }
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


# The message log's reason on the line of a message the edge kept for a device without a
# connection (a UDP device in queue mode) and handed to it when the device next asked: webapp
# waits for a command's response from then on.
DELIVERED_ON_REQUEST = "delivered when the device asked for it"

# The payload bytes a message-log event keeps (H9): the log is for reading what a device
# sent, and every byte goes to Redis and the SQL message log.
LOG_PAYLOAD_BYTES = 4096


def log_event(
    device: str, direction: str, topic: str, payload: bytes, ok: bool, reason: str | None, ts: int
) -> dict[str, Any]:
    """A ``log`` event; a payload above LOG_PAYLOAD_BYTES is cut there, the event then says
    how large it was (``trunc``) and a text payload ends with a note saying so."""
    event: dict[str, Any] = {"t": "log", "dev": device, "dir": direction, "topic": topic}
    size = len(payload)
    kept = payload[:LOG_PAYLOAD_BYTES] if size > LOG_PAYLOAD_BYTES else payload
    text = _utf8(kept, cut=kept is not payload)
    if text is None or "\x00" in text:  # binary, or a NUL no SQL text column can hold
        event["payload"] = base64.b64encode(kept).decode()
        event["enc"] = "b64"
    else:
        event["payload"] = text if kept is payload else f"{text} …[truncated: {size} bytes]"
    if kept is not payload:
        event["trunc"] = size
    event.update(ok=ok, reason=reason, ts=ts)
    return event


def _utf8(data: bytes, cut: bool) -> str | None:
    """``data`` as text, or None; when ``data`` was cut, a character it splits is dropped."""
    for end in range(len(data), max(len(data) - 4, -1) if cut else len(data) - 1, -1):
        try:
            return data[:end].decode("utf-8")
        except UnicodeDecodeError:
            continue
    return None


def register_event(
    device: str,
    product: str,
    body: dict[str, Any],
    mid: int | None,
    ts: int,
    node: str,
    addr: str,
    conn: str = "",
) -> dict[str, Any]:
    """A device asks to be created (dynamic registration): webapp answers on
    ``/v1/devices/{device}/registerResponse`` through ``tl:down:{node}``, with ``conn`` (the
    registering connection's token) in the downlink entry: the edge gives the answer to that
    connection only."""
    return {
        "t": "register",
        "dev": device,
        "prod": product,
        "body": body,
        "mid": mid,
        "ts": ts,
        "node": node,
        "addr": addr,
        "conn": conn,
    }


def redacted(topic: str, payload: bytes) -> bytes:
    """The payload as the message log keeps it: a registration answer without its secret."""
    if not topic.endswith("/" + REGISTER_RESPONSE):
        return payload
    try:
        body = json.loads(payload)
    except ValueError:
        return payload
    data = body.get("data") if isinstance(body, dict) else None
    if isinstance(data, dict) and data.get("secret"):
        data["secret"] = "***"  # noqa: S105 - a mask, not a password
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    return payload


def register_response(
    device: str, status: int, description: str, secret: str | None, mid: int | None
) -> bytes:
    """The answer to a registration (the edge sends it itself only for a malformed request;
    webapp sends the others with the same shape)."""
    body: dict[str, Any] = {
        "statusCode": status,
        "statusDesc": description,
        "mid": mid,
        "data": {"deviceIdentification": device, "secret": secret},
    }
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def status_event(
    device: str,
    online: bool,
    ts: int,
    node: str,
    addr: str,
    reason: str | None,
    transport: str = "mqtt",
) -> dict[str, Any]:
    """A connect/disconnect event; ``transport`` (``mqtt``, ``http``, ``coap``, ``tcp``,
    ``udp``) was added later, so a reader treats its absence as ``mqtt``."""
    return {
        "t": "status",
        "dev": device,
        "s": "online" if online else "offline",
        "ts": ts,
        "node": node,
        "addr": addr,
        "reason": reason,
        "transport": transport,
    }
