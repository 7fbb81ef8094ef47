"""Fixtures of the time-series tests: a product with every property type, on a clean store."""

from __future__ import annotations

import copy

import pytest

SENSOR = {
    "identifier": "sensor",
    "name": "Sensor",
    "product_type": "common",
    "protocol": "mqtt",
    "services": [{
        "code": "env",
        "name": "Environment",
        "properties": [
            {"code": "temperature", "datatype": "decimal", "min": -40, "max": 125},
            {"code": "humidity", "datatype": "int", "min": 0, "max": 100},
            {"code": "label", "datatype": "string", "max_length": 200},
            {"code": "ok", "datatype": "bool"},
        ],
    }, {
        "code": "power",
        "name": "Power",
        "properties": [{"code": "watts", "datatype": "decimal"}],
    }],
}

# An hour boundary, so that minute and hour buckets are easy to reason about.
BASE = 1_700_000_000_000 - 1_700_000_000_000 % 3_600_000


@pytest.fixture
def sensor_payload():
    return copy.deepcopy(SENSOR)


@pytest.fixture
def sensor(db, commit_hooks, redis_prefix, admin_user, sensor_payload):
    """The `sensor` product, created through the products actions (schema ensured on commit)."""
    from webapp.products import actions

    return actions.create_product(acting_user=admin_user, data=copy.deepcopy(sensor_payload))
