"""The built-in product templates, created after every `migrate` (and after a test flush)
when missing; a user's edits of them are kept."""

from __future__ import annotations

from typing import Any

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
]



def ensure_builtin_templates(**kwargs: Any) -> None:
    """A `post_migrate` receiver: create the built-in templates that do not exist."""
    from webapp.products.models import ProductTemplate

    for data in TEMPLATES:
        ProductTemplate.objects.get_or_create(identifier=data["identifier"],
                                              defaults={**data, "built_in": True})
