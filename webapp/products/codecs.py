"""A product's binary codec seen from the platform: checking a codec and its sample frames,
decoding frames and encoding commands for the API's decode test (docs/devices.md "Codecs").

The frames themselves are `edge.frames`' job, the same code the TCP and UDP transports run, so
what the decode test shows is what the edge would make of the bytes; the values are then
checked against the thing model with `edge.thingmodel`, as the edge checks an uplink.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edge.frames import Codec, FrameError, SpecError
from edge.frames.spec import MAX_SPEC_BYTES
from edge.thingmodel import Problem, ThingModel

CODEC_PROTOCOLS = ("tcp", "udp")
MAX_SAMPLES = 32
# The largest frame (or stream of frames) the decode test reads: a codec's frames are at most
# 65535 bytes, and a test needs far fewer.
MAX_INPUT_BYTES = 8192
NAME = re.compile(r"[^\x00-\x1f\x7f]{1,64}")  # a sample's name: printable text
# A device named in a preview when neither the frame nor the request names one.
PREVIEW_DEVICE = "device"


class CodecInvalid(ValueError):
    """A codec or its samples refused: ``field`` is the product field it concerns (``codec``,
    ``codec_samples``, ``protocol``), ``reason`` says what (with the path inside the codec)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason


def load(document: Any) -> Codec:
    """The codec of a stored or submitted codec document (raises CodecInvalid)."""
    if not isinstance(document, dict):
        raise CodecInvalid("codec", "a codec is a JSON object")
    text = json.dumps(document)
    if len(text.encode()) > MAX_SPEC_BYTES:
        raise CodecInvalid("codec", f"a codec has at most {MAX_SPEC_BYTES} bytes of JSON")
    try:
        return Codec.loads(text)
    except SpecError as exc:
        raise CodecInvalid("codec", str(exc)) from None


def check(protocol: str, document: Any, samples: Any) -> Codec | None:
    """Check a product's codec against its protocol and the shape of its samples; returns the
    codec (None: the product has none). Whether the samples decode as they expect needs the
    thing model: :func:`failing_samples`."""
    if not isinstance(samples, list):
        raise CodecInvalid("codec_samples", "must be a list")
    if document in (None, "", {}):
        if samples:
            raise CodecInvalid("codec_samples", "sample frames need a codec")
        return None
    if protocol not in CODEC_PROTOCOLS:
        raise CodecInvalid(
            "codec",
            f"only tcp and udp products have a binary codec; this product's protocol is "
            f"{protocol}",
        )
    codec = load(document)
    if codec.spec.transport != protocol:
        raise CodecInvalid(
            "codec",
            f"transport: the codec is for {codec.spec.transport}; the product's protocol is "
            f"{protocol}",
        )
    _check_samples(samples)
    return codec


def _check_samples(samples: list[Any]) -> None:
    if len(samples) > MAX_SAMPLES:
        raise CodecInvalid("codec_samples", f"at most {MAX_SAMPLES} sample frames")
    names: set[str] = set()
    for i, sample in enumerate(samples):
        where = f"[{i}]"
        if not isinstance(sample, dict):
            raise CodecInvalid("codec_samples", f"{where}: must be an object")
        unknown = set(sample) - {"name", "hex", "expect", "secret", "device"}
        if unknown:
            raise CodecInvalid("codec_samples", f"{where}: unknown key {sorted(unknown)[0]!r} "
                               "(expected: name, hex, expect, secret, device)")
        name = sample.get("name")
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise CodecInvalid("codec_samples", f"{where}.name: 1-64 printable characters")
        if name in names:
            raise CodecInvalid("codec_samples", f"{where}.name: {name!r} is used twice")
        names.add(name)
        try:
            frame_bytes(sample.get("hex"), None)
        except FrameError as exc:
            raise CodecInvalid("codec_samples", f"{where}.hex: {exc.reason}") from None
        if not isinstance(sample.get("expect"), dict):
            raise CodecInvalid("codec_samples",
                               f"{where}.expect: an object of field names and values")
        for key in ("secret", "device"):
            if key in sample and (not isinstance(sample[key], str) or not sample[key]
                                  or len(sample[key]) > 256):
                raise CodecInvalid("codec_samples", f"{where}.{key}: a string of 1-256 "
                                   "characters")


def frame_bytes(hex_text: Any, base64_text: Any) -> bytes:
    """The bytes a request gives as hex (spaces allowed) or base64, within the input bound."""
    if isinstance(hex_text, str) and hex_text.strip():
        try:
            data = bytes.fromhex(hex_text)
        except ValueError:
            raise FrameError("bad_input", "not hex") from None
    elif isinstance(base64_text, str) and base64_text.strip():
        try:
            data = base64.b64decode(base64_text, validate=True)
        except (binascii.Error, ValueError):
            raise FrameError("bad_input", "not base64") from None
    else:
        raise FrameError("bad_input", "give the frame as hex or base64")
    if len(data) > MAX_INPUT_BYTES:
        raise FrameError("oversize", f"at most {MAX_INPUT_BYTES} bytes")
    return data


# decoding ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """What the thing model says of one decoded value."""

    service: str | None
    name: str
    value: Any
    problem: Problem | None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"service": self.service, "name": self.name, "value": self.value,
                               "valid": self.problem is None}
        if self.problem is not None:
            out["code"] = self.problem.code
            out["reason"] = self.problem.reason
        return out


def split(codec: Codec, data: bytes) -> list[bytes]:
    """The frames in ``data``: one datagram for udp, the frames of a stream for tcp."""
    if codec.spec.transport == "udp":
        return [codec.datagram(data)]
    framer = codec.framer()
    frames = framer.feed(data)
    if framer.buffered:
        raise FrameError("truncated", f"{framer.buffered} bytes at the end are an incomplete "
                         "frame")
    if not frames:
        raise FrameError("truncated", "no whole frame")
    return frames


def decode(codec: Codec, model: ThingModel | None, data: bytes, *, secret: str | None = None,
           device: str | None = None) -> list[dict[str, Any]]:
    """Each frame of ``data``: its message, the values read, the MQTT message it stands for
    (``topic`` suffix and ``body``) and what the thing model says of each value. Frames
    after a login frame are its device's, as on a connection; ``device`` is the one logged
    in before. Raises FrameError for bytes that are not frames of the codec."""
    out = []
    for frame in split(codec, data):
        decoded = codec.decode(frame, secret)
        message = decoded.message
        entry: dict[str, Any] = {"message": message.name, "kind": message.kind,
                                 "device": decoded.device, "values": decoded.values}
        if message.kind == "login":
            device = decoded.device
        uplink = decoded.uplink(device or (None if decoded.device else PREVIEW_DEVICE))
        if uplink is None:
            entry.update(topic=None, body=None, model=[])
        else:
            entry.update(topic=uplink.suffix, body=uplink.body,
                         model=[v.as_dict() for v in verdicts(model, uplink.suffix,
                                                               uplink.body)])
        out.append(entry)
    return out


def verdicts(model: ThingModel | None, suffix: str, body: Mapping[str, Any]) -> list[Verdict]:
    """Each value of an uplink body checked as the edge checks it (``edge.thingmodel``)."""
    checks: list[tuple[str | None, dict[str, Any], Any]] = []
    if suffix == "datas":
        for entry in body["devices"][0]["services"]:
            service, data = entry["serviceCode"], entry["data"]
            checks.append((service, data, lambda m, s=service, d=data:
                           m.validate_service_data(s, d)))
    elif suffix == "events":
        event = body["services"][0]
        checks.append((event["serviceCode"], event["params"], lambda m, e=event:
                       m.validate_event(e["serviceCode"], e["event"], e["params"])))
    else:
        checks.append((body["serviceCode"], body["params"], lambda m:
                       m.validate_command_params(body["serviceCode"], body["cmd"],
                                                 body["params"], response=True)))
    out: list[Verdict] = []
    for service, values, run in checks:
        if model is None:
            none = Problem("no_model", service, None, "the product has no thing model")
            out.extend(Verdict(service, k, v, none) for k, v in values.items())
            continue
        _accepted, problems = run(model)
        by_name = {p.property: p for p in problems if p.property is not None}
        general = next((p for p in problems if p.property is None), None)
        out.extend(Verdict(service, name, value, by_name.get(name) or general)
                   for name, value in values.items())
        # A required parameter the frame does not carry refuses the message.
        out.extend(Verdict(service, p.property, None, p) for p in problems
                   if p.property is not None and p.property not in values)
    return out


def failing_samples(codec: Codec, model: ThingModel | None,
                    samples: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The samples that no longer decode to what they expect, or whose values the thing
    model refuses, each with the reason."""
    failures = []
    for sample in samples:
        reason = _sample_failure(codec, model, sample)
        if reason is not None:
            failures.append({"sample": sample["name"], "reason": reason})
    return failures


def _sample_failure(codec: Codec, model: ThingModel | None,
                    sample: Mapping[str, Any]) -> str | None:
    try:
        messages = decode(codec, model, frame_bytes(sample["hex"], None),
                          secret=sample.get("secret"), device=sample.get("device"))
    except FrameError as exc:
        return f"does not decode: {exc.reason}"
    values: dict[str, Any] = {}
    for message in messages:
        values.update(message["values"])
    for name, expected in sample["expect"].items():
        if name not in values:
            return f"decodes no field {name!r}"
        if not _same(values[name], expected):
            return f"{name} decodes to {values[name]!r}, not {expected!r}"
    for message in messages:
        for verdict in message["model"]:
            if not verdict["valid"]:
                return f"the thing model refuses {verdict['name']}: {verdict['reason']}"
    return None


def _same(found: Any, expected: Any) -> bool:
    if isinstance(found, bool) or isinstance(expected, bool):
        return found is expected
    if isinstance(found, int | float) and isinstance(expected, int | float):
        return math.isclose(found, expected, rel_tol=1e-9, abs_tol=1e-9)
    return bool(found == expected)


# encoding ---------------------------------------------------------------------------------


def encode(codec: Codec, model: ThingModel | None, service: str, command: str,
           params: Mapping[str, Any], *, mid: int, device: str | None = None,
           secret: str | None = None) -> bytes:
    """The frame of a command, its parameters first checked against the thing model as a
    command sent through the API is (raises FrameError with the reason)."""
    if model is not None:
        accepted, problems = model.validate_command_params(service, command, params)
        if problems:
            raise FrameError(problems[0].code, problems[0].reason)
        params = accepted
    return codec.encode_command(service, command, params, mid=mid, secret=secret,
                                device=device)
