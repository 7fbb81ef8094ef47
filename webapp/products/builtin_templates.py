"""The built-in product templates, created after every `migrate` (and after a test flush)
when missing; a user's edits of them are kept. Two of them ship the example binary codecs of
`edge/frames/examples/` with a matching thing model and sample frames (docs/devices.md
"Codecs")."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import edge.frames

EXAMPLES = Path(edge.frames.__file__).resolve().parent / "examples"


def example_codec(name: str) -> dict[str, Any]:
    """An example codec document of `edge/frames/examples/` (``name`` without ``.json``)."""
    document: dict[str, Any] = json.loads((EXAMPLES / f"{name}.json").read_text())
    return document


TEMPLATES: list[dict[str, Any]] = [
    {
        "identifier": "thermometer",
        "name": "Thermometer",
        "description": "Temperature and humidity sensor with a reporting interval.",
        "product_type": "common",
        "services": [{
            "code": "env", "name": "Environment",
            "properties": [
                {"code": "temperature", "name": "Temperature", "datatype": "decimal",
                 "unit": "C", "min": -40, "max": 125, "step": 0.1, "access": "RE"},
                {"code": "humidity", "name": "Humidity", "datatype": "int", "unit": "%",
                 "min": 0, "max": 100, "access": "RE"},
                {"code": "interval", "name": "Report interval", "datatype": "int", "unit": "s",
                 "min": 1, "max": 3600, "access": "RWE"},
            ],
            "commands": [{"code": "set_interval", "name": "Set interval",
                          "requests": [{"code": "seconds", "datatype": "int", "min": 1,
                                        "max": 3600, "required": True}],
                          "responses": [{"code": "result", "datatype": "string"}]}],
            "events": [{"code": "overheat", "name": "Overheat",
                        "params": [{"code": "temperature", "datatype": "decimal"}]}],
        }],
    },
    {
        "identifier": "smart-plug",
        "name": "Smart plug",
        "description": "A switchable socket metering power and energy.",
        "product_type": "common",
        "services": [{
            "code": "power", "name": "Power",
            "properties": [
                {"code": "on", "name": "On", "datatype": "bool", "access": "RWE"},
                {"code": "watts", "name": "Power", "datatype": "decimal", "unit": "W",
                 "min": 0, "max": 4000, "access": "RE"},
                {"code": "energy", "name": "Energy", "datatype": "decimal", "unit": "kWh",
                 "min": 0, "access": "RE"},
            ],
            "commands": [{"code": "switch", "name": "Switch",
                          "requests": [{"code": "on", "datatype": "bool", "required": True}],
                          "responses": [{"code": "on", "datatype": "bool"}]}],
            "events": [{"code": "overload", "name": "Overload",
                        "params": [{"code": "watts", "datatype": "decimal"}]}],
        }],
    },
    {
        "identifier": "gateway",
        "name": "Gateway",
        "description": "A gateway that reports for its sub-devices.",
        "product_type": "gateway",
        "services": [{
            "code": "sys", "name": "System",
            "properties": [
                {"code": "uptime", "name": "Uptime", "datatype": "bigint", "unit": "s",
                 "min": 0, "access": "RE"},
                {"code": "rssi", "name": "Signal", "datatype": "int", "unit": "dBm",
                 "min": -150, "max": 0, "access": "RE"},
            ],
            "commands": [{"code": "reboot", "name": "Reboot"}],
        }],
    },
    {
        "identifier": "th-sensor-tcp",
        "name": "Binary temperature/humidity sensor (TCP)",
        "description": "Reports temperature and humidity in 9-byte frames over raw TCP after "
                       "a login frame; its report interval is set by a command.",
        "product_type": "common",
        "protocol": "tcp",
        "data_format": "binary",
        "services": [
            {"code": "env", "name": "Environment", "properties": [
                {"code": "temperature", "name": "Temperature", "datatype": "decimal",
                 "unit": "C", "min": -40, "max": 125, "step": 0.1, "access": "RE"},
                {"code": "humidity", "name": "Humidity", "datatype": "decimal", "unit": "%",
                 "min": 0, "max": 100, "step": 0.1, "access": "RE"},
            ]},
            {"code": "config", "name": "Configuration", "commands": [
                {"code": "setReportInterval", "name": "Set report interval",
                 "requests": [{"code": "interval", "datatype": "int", "unit": "s", "min": 1,
                               "max": 3600, "required": True}],
                 "responses": [{"code": "interval", "datatype": "int", "unit": "s"}]},
            ]},
        ],
        "codec": example_codec("th-sensor-tcp"),
        "codec_samples": [
            {"name": "report 25.3 C 45 %", "hex": "aa550200fd01c2753e",
             "expect": {"temperature": 25.3, "humidity": 45.0}},
            {"name": "report -20 C 0 %", "hex": "aa5502ff380000d516",
             "expect": {"temperature": -20.0, "humidity": 0.0}},
            {"name": "interval set to 60 s", "hex": "aa55830000000700003cdce6",
             "expect": {"seq": 7, "result": 0, "interval": 60}},
        ],
    },
    {
        "identifier": "meter-udp",
        "name": "UDP energy meter",
        "description": "An energy meter sending length-field frames over UDP, each naming "
                       "its address and signed with an HMAC of the device secret; its relay "
                       "is switched by a command.",
        "product_type": "common",
        "protocol": "udp",
        "data_format": "binary",
        "services": [{
            "code": "meter", "name": "Meter",
            "properties": [
                {"code": "energy", "name": "Energy", "datatype": "decimal", "unit": "kWh",
                 "min": 0, "access": "RE"},
                {"code": "voltage", "name": "Voltage", "datatype": "decimal", "unit": "V",
                 "min": 0, "max": 500, "access": "RE"},
                {"code": "current", "name": "Current", "datatype": "decimal", "unit": "A",
                 "min": 0, "max": 100, "access": "RE"},
                {"code": "relay", "name": "Relay", "datatype": "bool", "access": "RWE"},
                {"code": "mode", "name": "Mode", "datatype": "enum",
                 "enum_values": ["normal", "eco", "boost"], "access": "RE"},
                {"code": "tamper", "name": "Tamper", "datatype": "bool", "access": "RE"},
            ],
            "commands": [{"code": "setRelay", "name": "Switch the relay",
                          "requests": [{"code": "on", "datatype": "bool", "required": True}],
                          "responses": [{"code": "on", "datatype": "bool"}]}],
            "events": [{"code": "alarm", "name": "Alarm", "params": [
                {"code": "type", "datatype": "enum",
                 "enum_values": ["overvoltage", "overcurrent", "tamper"]},
                {"code": "value", "datatype": "decimal"},
            ]}],
        }],
        "codec": example_codec("meter-udp"),
        # The frames are signed with the secret "s3cret" (a sample's, not a device's).
        "codec_samples": [
            {"name": "reading", "secret": "s3cret",
             "hex": "68001801000012345678000186a009060fa083d4af67c5ec92b1e1",
             "expect": {"address": "000012345678", "energy": 1000.0, "voltage": 231.0,
                        "current": 4.0, "relay": True, "mode": "eco", "tamper": True}},
            {"name": "overcurrent alarm", "secret": "s3cret",
             "hex": "68001202000012345678020a287bb246072316eaec",
             "expect": {"type": "overcurrent", "value": 260.0}},
            {"name": "relay switched on", "secret": "s3cret",
             "hex": "680015830000123456780000000900019869e2b8a65af506",
             "expect": {"seq": 9, "result": 0, "on": True}},
        ],
    },
]



def ensure_builtin_templates(**kwargs: Any) -> None:
    """A `post_migrate` receiver: create the built-in templates that do not exist."""
    from webapp.products.models import ProductTemplate

    for data in TEMPLATES:
        ProductTemplate.objects.get_or_create(identifier=data["identifier"],
                                              defaults={**data, "built_in": True})
