"""Binary frames: codec descriptions are validated strictly, each refusal naming where and why."""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edge.frames import Codec, SpecError
from edge.frames.spec import MAX_SPEC_BYTES, loads, validate

EXAMPLES = Path(__file__).resolve().parents[2] / "edge" / "frames" / "examples"
TH: dict[str, Any] = json.loads((EXAMPLES / "th-sensor-tcp.json").read_text())
METER: dict[str, Any] = json.loads((EXAMPLES / "meter-udp.json").read_text())

Edit = Callable[[dict[str, Any]], Any]


def edit_field(message: int, field: int, **changes: Any) -> Edit:
    return lambda doc: doc["messages"][message]["fields"][field].update(changes)


def edit_message(message: int, **changes: Any) -> Edit:
    return lambda doc: doc["messages"][message].update(changes)


def drop(*keys: str | int) -> Edit:
    def edit(doc: dict[str, Any]) -> None:
        target: Any = doc
        for key in keys[:-1]:
            target = target[key]
        del target[keys[-1]]

    return edit


def top(**changes: Any) -> Edit:
    return lambda doc: doc.update(changes)


# (document, edit, path, reason)
CASES: list[tuple[dict[str, Any], Edit, str, str]] = [
    (TH, top(codec=2), "codec", "the format version must be 1"),
    (TH, top(codec=True), "codec", "the format version must be 1"),
    (TH, top(colour="red"), "colour", "unknown key"),
    (TH, drop("framing"), "framing", "is required"),
    (TH, top(name="9 lives"), "name", "is not a name"),
    (TH, top(transport="serial"), "transport", "must be one of tcp, udp"),
    (TH, top(byte_order="middle"), "byte_order", "must be one of big, little"),
    (TH, top(framing={"type": "slip"}), "framing.type", "must be one of"),
    (
        TH,
        top(framing={"type": "fixed", "max_frame": 5}),
        "framing.max_frame",
        "is not used by fixed",
    ),
    (
        TH,
        top(framing={"type": "datagram", "max_frame": 9}),
        "framing.type",
        "for the udp transport",
    ),
    (TH, top(framing={"type": "fixed", "header": "zz"}), "framing.header", "is not hex"),
    (TH, top(framing={"type": "fixed", "header": "00" * 17}), "framing.header", "1 to 16 bytes"),
    (
        TH,
        top(framing={"type": "delimiter", "delimiter": "0a", "max_frame": 70000}),
        "framing.max_frame",
        "must be within 1..65535, not 70000",
    ),
    (
        METER,
        lambda d: d["framing"].update(size=3),
        "framing.size",
        "must be 1, 2 or 4",
    ),
    (METER, lambda d: d["framing"].update(offset=127), "framing.offset", "ends beyond max_frame"),
    (TH, edit_field(1, 0, type="u7"), "messages[1].fields[0].type", "unknown type 'u7'"),
    (
        TH,
        edit_field(1, 0, type="i16be", byte_order="little"),
        "messages[1].fields[0].byte_order",
        "already names",
    ),
    (TH, edit_field(1, 0, length=2), "messages[1].fields[0].length", "i16 has a fixed size"),
    (TH, edit_field(1, 0, offset=8), "messages[1].fields[0].offset", "beyond the frame (9 bytes)"),
    (TH, edit_field(1, 0, offset=-1), "messages[1].fields[0].offset", "must be within 0..8"),
    (TH, edit_field(1, 0, bit=1), "messages[1].fields[0].bit", "bits fields only"),
    (TH, edit_field(1, 0, scale=0), "messages[1].fields[0].scale", "must not be 0"),
    (TH, edit_field(1, 0, scale="0.1"), "messages[1].fields[0].scale", "must be a number"),
    (
        TH,
        edit_field(1, 0, bias=1e300),
        "messages[1].fields[0].bias",
        "finite number of at most 1e15",
    ),
    (TH, edit_field(1, 0, expr="humidity * 2"), "messages[1].fields[0].expr", "not supported yet"),
    (
        TH,
        edit_field(2, 2, service="env"),
        "messages[2].fields[2].service",
        "only the fields of a datas",
    ),
    (TH, edit_field(0, 0, scale=2), "messages[0].fields[0].scale", "hold text, not numbers"),
    (TH, edit_field(0, 0, length=300), "messages[0].fields[0].length", "within 1..255"),
    (TH, edit_field(1, 0, enum={"1": "on"}), "messages[1].fields[0].enum", "not both"),
    (
        TH,
        edit_field(2, 1, enum={"x": "on"}),
        "messages[2].fields[1].enum.x",
        "raw integer in decimal",
    ),
    (
        TH,
        edit_field(2, 1, enum={"0": "on", "1": "on"}),
        "messages[2].fields[1].enum.1",
        "mapped twice",
    ),
    (
        TH,
        edit_field(2, 1, enum={"0": [1]}),
        "messages[2].fields[1].enum.0",
        "a string, a number or",
    ),
    (
        TH,
        edit_field(2, 1, enum={"256": "x"}),
        "messages[2].fields[1].enum.256",
        "256 is outside 0..255",
    ),
    (
        TH,
        edit_field(2, 1, enum={"1": "a", "01": "b"}),
        "messages[2].fields[1].enum.01",
        "1 is a key twice",
    ),
    (TH, edit_field(1, 0, bias=10**400), "messages[1].fields[0].bias", "finite number"),
    (TH, edit_field(2, 1, enum={}), "messages[2].fields[1].enum", "1 to 256 entries"),
    (TH, edit_field(2, 1, const=300), "messages[2].fields[1].const", "300 is outside 0..255"),
    (TH, edit_field(2, 1, const="1"), "messages[2].fields[1].const", "is an integer"),
    (TH, edit_field(2, 1, const=1, scale=2), "messages[2].fields[1].const", "no enum map, scale"),
    (TH, edit_field(0, 0, const="x" * 33), "messages[0].fields[0].const", "at most 32 characters"),
    (TH, edit_field(2, 0, name="interval"), "messages[2].fields.[2].name", "used twice"),
    (TH, edit_field(2, 0, name="9seq"), "messages[2].fields[0].name", "is not a name"),
    (TH, edit_message(1, name="login"), "messages[1].name", "'login' is used twice"),
    (
        TH,
        lambda d: d["messages"][1].update(
            fields=[{"name": "t", "type": "u8", "offset": 3, "const": 1}]
        ),
        "messages[1].fields",
        "a datas message reports at least one property",
    ),
    (TH, edit_message(1, id=1), "messages[1].id", "1 is used twice"),
    (TH, edit_message(1, id=256), "messages[1].id", "within 0..255"),
    (TH, drop("messages", 1, "id"), "messages[1].id", "is required: the codec has a discriminator"),
    (TH, drop("messages", 1, "length"), "messages[1].length", "is required: fixed framing"),
    (TH, edit_message(1, length=1), "messages[1].length", "within 2..65535"),
    (TH, edit_message(1, kind="telemetry"), "messages[1].kind", "must be one of login, datas"),
    (TH, edit_message(1, secret="humidity"), "messages[1].secret", "only a login message"),
    (TH, edit_message(1, err_code="humidity"), "messages[1].err_code", "only a commandResponse"),
    (TH, edit_message(1, event="x"), "messages[1].event", "not used by a datas message"),
    (TH, drop("messages", 1, "service"), "messages[1].fields[0].service", "names no service"),
    (TH, drop("messages", 2, "command"), "messages[2].command", "required for a commandResponse"),
    (TH, edit_message(2, mid="nothing"), "messages[2].mid", "names no field of the message"),
    (TH, edit_message(0, secret="missing"), "messages[0].secret", "names no field"),
    (TH, drop("messages", 0, "secret"), "messages[0].secret", "is required for a login message"),
    (TH, lambda d: d["messages"].pop(0), "messages", "exactly one login message"),
    (TH, top(transport="udp"), "auth.type", "a login frame needs a connection"),
    (TH, top(auth={"type": "login", "size": 8}), "auth.size", "mac authentication only"),
    (TH, drop("discriminator"), "discriminator", "several messages need a discriminator"),
    (TH, top(discriminator={"offset": 2, "type": "f32"}), "discriminator.type", "an integer type"),
    (
        TH,
        top(discriminator={"offset": 200, "type": "u8"}),
        "discriminator.offset",
        "ends beyond the shortest",
    ),
    (TH, top(checksum={"type": "md5", "at": -2}), "checksum.type", "must be one of crc16-modbus"),
    (TH, top(checksum={"type": "crc32", "start": -2, "at": -4}), "checksum.start", "starts after"),
    (TH, top(checksum={"type": "crc32", "at": -2}), "checksum.at", "pass the frame end"),
    (TH, top(checksum={"type": "crc32", "start": 0}), "checksum.at", "must be an integer"),
    (TH, top(messages=[]), "messages", "must have 1 to 64 entries"),
    (TH, top(messages=[1]), "messages[0]", "must be an object"),
    (TH, lambda d: d["downlinks"][1].pop("command"), "downlinks[1]", "both its service and"),
    (
        TH,
        lambda d: d["downlinks"][0].update(name="set_interval"),
        "downlinks[1].name",
        "used twice",
    ),
    (TH, lambda d: d["downlinks"][0].pop("length"), "downlinks[0].length", "fixed framing"),
    (
        TH,
        lambda d: d["downlinks"].append(copy.deepcopy(d["downlinks"][1]) | {"name": "again"}),
        "downlinks[2].command",
        "used twice",
    ),
    (METER, top(auth={"type": "mac", "size": 2, "at": -2}), "auth.size", "within 4..32"),
    (METER, top(auth={"type": "mac", "size": 8, "at": -4}), "auth.at", "the 8 bytes at -4 pass"),
    (
        METER,
        top(auth={"type": "mac", "algorithm": "md5", "size": 8, "at": -8}),
        "auth.algorithm",
        "hmac-sha256",
    ),
    (METER, top(auth={"type": "mac", "size": 8, "at": 127}), "auth.at", "beyond the largest frame"),
    (METER, drop("messages", 1, "device"), "messages[1].device", "with a MAC each frame names"),
    (
        METER,
        lambda d: (
            [d["messages"][1].update(kind="login")]
            + [d["messages"][1].pop(k) for k in ("service", "event")]
        ),
        "messages[1].kind",
        "mac authentication has no login message",
    ),
    (METER, drop("messages", 1, "event"), "messages[1].event", "required for a events message"),
    (METER, edit_field(0, 4, width=9), "messages[0].fields[4].width", "within 1..8"),
    (METER, edit_field(0, 4, length=9), "messages[0].fields[4].length", "within 1..8"),
    (METER, edit_field(0, 1, enum={"1": 1.5}, type="f32"), "messages[0].fields[1].enum", None),
    (METER, edit_field(0, 0, type="f64", length=None), "messages[0].fields[0].length", None),
]


@pytest.mark.parametrize(("document", "edit", "path", "reason"), CASES)
def test_invalid_descriptions_are_refused_with_where_and_why(
    document: dict[str, Any], edit: Edit, path: str, reason: str | None
) -> None:
    doc = copy.deepcopy(document)
    edit(doc)
    with pytest.raises(SpecError) as caught:
        validate(doc)
    assert caught.value.path == path.replace(".[", "["), str(caught.value)
    if reason is not None:
        assert reason in caught.value.reason, str(caught.value)


def test_the_examples_validate() -> None:
    assert validate(copy.deepcopy(TH)).name == "th-sensor-tcp"
    assert validate(copy.deepcopy(METER)).name == "meter-udp"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("{", "not valid JSON"),
        ('{"codec": 1, "codec": 1}', "the key 'codec' appears twice"),
        ("[]", "must be an object"),
        ('{"codec": NaN}', "NaN is not a JSON number"),
        (" " * (MAX_SPEC_BYTES + 1), f"at most {MAX_SPEC_BYTES} bytes"),
    ],
)
def test_json_text_is_read_strictly(text: str, reason: str) -> None:
    with pytest.raises(SpecError, match=reason):
        loads(text)


def test_a_description_round_trips_through_json_text() -> None:
    codec = Codec.loads(json.dumps(METER))
    assert codec.spec == validate(copy.deepcopy(METER))


def _random_json(rng: random.Random) -> Any:
    return rng.choice(
        [None, True, -1, 0, 1, 7, 2**70, 0.5, -1e300, "", "x", "u16", "0d0a", [], {}, [1], {"a": 1}]
    )


def _poke(node: Any, rng: random.Random) -> None:
    """Replace, drop or add one value somewhere in a JSON document."""
    while True:
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        if not keys:
            return
        key = rng.choice(keys)
        child = node[key]
        if isinstance(child, dict | list) and child and rng.random() < 0.7:
            node = child
            continue
        action = rng.randrange(3)
        if action == 0:
            node[key] = _random_json(rng)
        elif action == 1 and isinstance(node, dict):
            del node[key]
        elif isinstance(node, dict):
            node[rng.choice(["offset", "length", "type", "scale", "enum", "at", "id"])] = (
                _random_json(rng)
            )
        return


def test_mangled_descriptions_are_refused_with_a_reason_never_an_exception() -> None:
    rng = random.Random(16)
    refused = 0
    for _ in range(3000):
        doc = copy.deepcopy(rng.choice([TH, METER]))
        for _ in range(rng.randint(1, 3)):
            _poke(doc, rng)
        try:
            validate(doc)
        except SpecError as exc:
            assert exc.reason
            refused += 1
    assert refused > 2000
