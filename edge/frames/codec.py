"""A codec built from a validated description: frames to uplink messages, commands to frames.

Decoding a frame gives the same JSON-able body a device would have published over MQTT, and
the topic suffix it would have used (``datas``, ``events``, ``commandResponse``), so the edge
handles a binary device's message exactly like an MQTT device's. Identity works in one of two
ways: a login frame names the device and carries its secret (or a signed password), which the
transport checks and then holds for the connection; or every frame names its device and
carries a MAC keyed with that device's secret, which :meth:`Codec.decode` verifies before any
field is read. Nothing of the description is executed: it only names offsets, types and maps.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

from edge.frames import fields
from edge.frames.checksums import CHECKSUMS, frame_mac, mac_matches
from edge.frames.errors import FrameError
from edge.frames.framing import StreamFramer, check_header, frame_of_datagram
from edge.frames.spec import Check, CodecSpec, Downlink, Message, loads, validate


@dataclass(frozen=True, slots=True)
class Uplink:
    """A decoded frame as an MQTT message: the suffix after ``/v1/devices/{id}/`` and the
    body (bare, as a device may publish it)."""

    suffix: str
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Decoded:
    """What one frame says. ``values`` holds every field but the const ones and the secret,
    by field name (what a decode test shows); ``password`` is a login frame's secret."""

    message: Message
    device: str | None
    values: dict[str, Any]
    password: str | None = None

    def uplink(self, device: str | None = None) -> Uplink | None:
        """The message the frame stands for (None for a login frame). ``device`` is the one
        the connection logged in as, when frames do not name theirs."""
        message = self.message
        if message.kind == "login":
            return None
        if self.device is not None and device is not None and self.device != device:
            raise FrameError(
                "wrong_device", f"the frame names {self.device}; the connection is {device}"
            )
        subject = self.device or device
        if subject is None:
            raise FrameError("no_device", "the frame names no device and nobody logged in")
        reported = {k: v for k, v in self.values.items() if k not in message.roles}
        if message.kind == "datas":
            services: dict[str, dict[str, Any]] = {}
            for field in message.fields:
                if field.name in reported:
                    service = field.service or message.service
                    assert service is not None, "validation gives each datas field a service"
                    services.setdefault(service, {})[field.name] = reported[field.name]
            entries = [{"serviceCode": code, "data": data} for code, data in services.items()]
            return Uplink("datas", {"devices": [{"deviceId": subject, "services": entries}]})
        if message.kind == "events":
            event = {"serviceCode": message.service, "event": message.event, "params": reported}
            return Uplink("events", {"services": [event]})
        body: dict[str, Any] = {
            "msgType": "deviceRsp",
            "serviceCode": message.service,
            "cmd": message.command,
            "errCode": self.values[message.err_code] if message.err_code else 0,
            "params": reported,
        }
        if message.mid is not None:
            body["mid"] = self.values[message.mid]
        return Uplink("commandResponse", body)


class Codec:
    """One product's frames (a codec is immutable: share it between connections)."""

    def __init__(self, spec: CodecSpec) -> None:
        self.spec = spec
        self._messages = {message.id: message for message in spec.messages}
        self._downlinks = {downlink.name: downlink for downlink in spec.downlinks}
        self._commands = {
            (downlink.service, downlink.command): downlink
            for downlink in spec.downlinks
            if downlink.command is not None
        }

    @classmethod
    def from_json(cls, document: Any) -> Codec:
        """A codec from its parsed JSON description (raises ``SpecError``)."""
        return cls(validate(document))

    @classmethod
    def loads(cls, text: str | bytes) -> Codec:
        """A codec from its JSON text (raises ``SpecError``)."""
        return cls(loads(text))

    @staticmethod
    def published(text: bytes) -> Codec:
        """The codec of a product hash's ``codec`` field: parsed once per distinct text and
        shared (a codec is immutable), since the registry and the raw transports' catalog
        read the same text again on every reload (raises ``SpecError``)."""
        return _published(text)

    def framer(self) -> StreamFramer:
        """A framer for one connection's stream."""
        return StreamFramer(self.spec.framing)

    def datagram(self, data: bytes) -> bytes:
        """The frame one datagram holds."""
        return frame_of_datagram(self.spec.framing, data)

    def identify(self, frame: bytes) -> str | None:
        """The device the frame names (not yet proven: look up its secret, then
        :meth:`decode`), or None when the frame relies on the connection's login."""
        message = self._message(frame)
        return _device(message, frame)

    def decode(self, frame: bytes, secret: str | None = None) -> Decoded:
        """Read one frame. With MAC authentication ``secret`` is the secret of the device the
        frame names, and a frame whose MAC does not match is refused."""
        message = self._message(frame)
        device = _device(message, frame)
        mac = self.spec.mac
        if mac is not None:
            if secret is None:
                raise FrameError("unauthenticated", "the frame's MAC needs its device's secret")
            start, at = self._span(mac, len(frame))
            if not mac_matches(secret, frame[start:at], frame[at : at + mac.size], mac.size):
                raise FrameError("bad_mac", f"the MAC does not match the secret of {device}")
        values: dict[str, Any] = {}
        password = None
        for field in message.fields:
            value = fields.decode(field, frame)
            if field.name == message.secret:
                password = value
            elif field.const is None:
                values[field.name] = value
        return Decoded(message, device, values, password)

    def encode_command(
        self,
        service: str,
        command: str,
        params: Mapping[str, Any] | None,
        *,
        mid: int | None = None,
        secret: str | None = None,
        device: str | None = None,
    ) -> bytes:
        """The frame of a command (with its delimiter): ``params`` as validated against the
        thing model, ``mid`` the command id and ``device`` the device identifier (for a frame
        that carries them), ``secret`` the device's (for a codec with a MAC)."""
        downlink = self._commands.get((service, command))
        if downlink is None:
            raise FrameError("unknown_command", f"the codec has no frame for {service}.{command}")
        return self._encode(downlink, params or {}, mid, secret, device)

    def encode(
        self,
        name: str,
        values: Mapping[str, Any] | None = None,
        *,
        mid: int | None = None,
        secret: str | None = None,
        device: str | None = None,
    ) -> bytes:
        """The frame of the downlink called ``name`` (a command or a reply such as a login
        answer)."""
        downlink = self._downlinks.get(name)
        if downlink is None:
            raise FrameError("unknown_downlink", f"the codec has no downlink {name!r}")
        return self._encode(downlink, values or {}, mid, secret, device)

    def _message(self, frame: bytes) -> Message:
        """The message type of a whole frame, after its header, size and checksum."""
        spec = self.spec
        if not frame:
            raise FrameError("truncated", "the frame is empty")
        if len(frame) > spec.framing.max_frame:
            raise FrameError(
                "oversize",
                f"a frame of {len(frame)} bytes; the largest is {spec.framing.max_frame}",
            )
        check_header(spec.framing, frame)
        if len(frame) < len(spec.framing.header):
            raise FrameError("truncated", f"the frame has {len(frame)} bytes, less than a header")
        if spec.checksum is not None:
            self._verify_checksum(spec.checksum, frame)
        if spec.discriminator is None:
            message = spec.messages[0]
        else:
            kind = fields.decode_raw(spec.discriminator, frame)
            found = self._messages.get(kind) if isinstance(kind, int) else None
            if found is None:
                raise FrameError("unknown_type", f"no message has the type {kind}")
            message = found
        if message.length is not None and len(frame) != message.length:
            raise FrameError(
                "bad_length",
                f"a {message.name} frame has {message.length} bytes, not {len(frame)}",
            )
        return message

    def _span(self, check: Check, length: int) -> tuple[int, int]:
        """The absolute ``(start, at)`` of a check in a frame of ``length`` bytes."""
        start = check.start if check.start >= 0 else length + check.start
        at = check.at if check.at >= 0 else length + check.at
        if not 0 <= start <= at or at + check.size > length:
            raise FrameError(
                "truncated", f"a frame of {length} bytes is too short for its {check.algorithm}"
            )
        mac, checksum = self.spec.mac, self.spec.checksum
        if check is mac and checksum is not None:
            crc_at = checksum.at if checksum.at >= 0 else length + checksum.at
            if crc_at < at + mac.size and start < crc_at + checksum.size:
                raise FrameError(
                    "bad_length", f"in a frame of {length} bytes the MAC would cover the checksum"
                )
        return start, at

    def _verify_checksum(self, check: Check, frame: bytes) -> None:
        start, at = self._span(check, len(frame))
        order: Literal["little", "big"] = "little" if check.little else "big"
        expected = CHECKSUMS[check.algorithm][1](frame[start:at]).to_bytes(check.size, order)
        found = frame[at : at + check.size]
        if found != expected:
            raise FrameError(
                "bad_checksum",
                f"{check.algorithm} is {found.hex()}; the bytes before it give {expected.hex()}",
            )

    def _encode(
        self,
        downlink: Downlink,
        values: Mapping[str, Any],
        mid: int | None,
        secret: str | None,
        device: str | None,
    ) -> bytes:
        spec = self.spec
        framing = spec.framing
        carried = {f.name for f in downlink.fields if f.const is None} - downlink.roles
        unknown = sorted(set(values) - carried)
        if unknown:
            raise FrameError(
                "unknown_param", f"{downlink.name} has no field for {', '.join(unknown)}"
            )
        length = self._length(downlink)
        buffer = bytearray(length)
        buffer[: len(framing.header)] = framing.header
        if downlink.id is not None and spec.discriminator is not None:
            fields.encode(spec.discriminator, downlink.id, buffer)
        for field in downlink.fields:
            # a const field writes its own value
            value = (
                None if field.const is not None else _value(downlink, field, values, mid, device)
            )
            fields.encode(field, value, buffer)
        if framing.field is not None:
            fields.encode(framing.field, length - framing.field.end - framing.adjust, buffer)
        if spec.mac is not None:
            if secret is None:
                raise FrameError("unauthenticated", "the frame's MAC needs the device's secret")
            start, at = self._span(spec.mac, length)
            buffer[at : at + spec.mac.size] = frame_mac(
                secret, bytes(buffer[start:at]), spec.mac.size
            )
        if spec.checksum is not None:
            check = spec.checksum
            start, at = self._span(check, length)
            digest = CHECKSUMS[check.algorithm][1](bytes(buffer[start:at]))
            buffer[at : at + check.size] = digest.to_bytes(
                check.size, "little" if check.little else "big"
            )
        if framing.delimiter and framing.delimiter in buffer:
            raise FrameError(
                "bad_value",
                f"{downlink.name} would contain its delimiter {framing.delimiter.hex()}: "
                "the device could not tell where it ends",
            )
        return bytes(buffer) + framing.delimiter

    def _length(self, downlink: Downlink) -> int:
        """A downlink frame's length: declared, or what its fields and checks need."""
        framing = self.spec.framing
        if downlink.length is not None:
            return downlink.length
        if framing.length is not None:
            return framing.length
        ends = [len(framing.header), *(field.end for field in downlink.fields)]
        if downlink.id is not None and self.spec.discriminator is not None:
            ends.append(self.spec.discriminator.end)
        if framing.field is not None:
            ends.append(framing.field.end)
        trailer = 0
        for check in (self.spec.checksum, self.spec.mac):
            if check is not None and check.at < 0:
                trailer = max(trailer, -check.at)
            elif check is not None:
                ends.append(check.at + check.size)
        length = max(ends) + trailer
        if length > framing.max_frame:
            raise FrameError(
                "oversize",
                f"{downlink.name} needs {length} bytes; the largest is {framing.max_frame}",
            )
        return length


def _device(message: Message, frame: bytes) -> str | None:
    if message.device is None:
        return None
    field = next(field for field in message.fields if field.name == message.device)
    value = fields.decode(field, frame)
    if field.type == "bcd":  # an address in BCD keeps its leading zeros
        device = str(value).rjust(field.size * 2, "0")
    else:
        device = value if isinstance(value, str) else str(value)
    if not device:
        raise FrameError("no_device", f"the {field.name} field names no device")
    return device


def _value(
    downlink: Downlink,
    field: fields.Field,
    values: Mapping[str, Any],
    mid: int | None,
    device: str | None,
) -> Any:
    """What a downlink field carries: the command id, the device, or a parameter."""
    if field.name == downlink.mid:
        if mid is None:
            raise FrameError("missing_param", f"{downlink.name} carries the command id")
        return mid
    if field.name == downlink.device:
        if device is None:
            raise FrameError("missing_param", f"{downlink.name} names its device")
        return _device_value(field, device)
    if field.name not in values:
        raise FrameError("missing_param", f"{downlink.name} needs {field.name}")
    return values[field.name]


def _device_value(field: fields.Field, device: str) -> str | int:
    """A device identifier as the field holds it (a number for a numeric field)."""
    if field.type in ("ascii", "hex"):
        return device
    if not device.isdigit():
        raise FrameError("bad_value", f"the {field.type} field {field.name} holds a number")
    return int(device)


@lru_cache(maxsize=1024)
def _published(text: bytes) -> Codec:
    return Codec.loads(text)
