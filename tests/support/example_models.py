"""The thing models that go with the two example binary codecs of edge/frames/examples/
(th-sensor-tcp: temperature and humidity, a report interval command; meter-udp: an energy
meter with a relay command), in the JSON form the edge reads from a product's record. One
copy for every test that runs those codecs: the JSON for a product record in Redis, the
parsed model for in-memory records."""

from __future__ import annotations

from typing import Any

from edge.thingmodel import ThingModel

TH_SENSOR_SOURCE: dict[str, Any] = {
    "services": {
        "env": {
            "properties": {
                "temperature": {"datatype": "decimal", "min": -40, "max": 125},
                "humidity": {"datatype": "decimal", "min": 0, "max": 100},
            }
        },
        "config": {
            "commands": {
                "setReportInterval": {
                    "requests": {"interval": {"datatype": "int", "min": 1, "max": 3600}},
                    "responses": {"interval": {"datatype": "int"}},
                }
            }
        },
    }
}
METER_SOURCE: dict[str, Any] = {
    "services": {
        "meter": {
            "properties": {
                "energy": {"datatype": "decimal"},
                "voltage": {"datatype": "decimal"},
                "current": {"datatype": "decimal"},
                "relay": {"datatype": "bool"},
                "mode": {"datatype": "string"},
                "tamper": {"datatype": "bool"},
            },
            "commands": {"setRelay": {"requests": {"on": {"datatype": "bool"}}}},
        }
    }
}
TH_SENSOR_MODEL = ThingModel.from_json(TH_SENSOR_SOURCE)
METER_MODEL = ThingModel.from_json(METER_SOURCE)
