"""The device simulator: values from the thing model, and virtual devices against the real
edge that report, answer commands and follow the shadow (`manage.py simulate`)."""

from __future__ import annotations

import random
import threading
import time

import pytest
from django.core.management import call_command

from webapp.devices.models import Device
from webapp.devices.simulator import Simulator, initial_value, next_value
from webapp.products.models import Product
from webapp.products.thingmodel import compact_model
from webapp.telemetry.models import DeviceMessage

SENSOR = {
    "identifier": "sensor", "name": "Sensor",
    "services": [{
        "code": "env",
        "properties": [
            {"code": "temperature", "datatype": "decimal", "min": -10, "max": 40, "step": 0.5},
            {"code": "level", "datatype": "int", "min": 0, "max": 5},
            {"code": "mode", "datatype": "enum", "enum_values": ["eco", "boost"]},
            {"code": "interval", "datatype": "int", "min": 1, "max": 60, "access": "RWE"},
        ],
        "commands": [{"code": "set_interval",
                      "requests": [{"code": "interval", "datatype": "int", "min": 1,
                                    "max": 60}],
                      "responses": [{"code": "result", "datatype": "string"}]}],
    }],
}


def test_generated_values_respect_the_model():
    """Readings stay within min/max, on the step, and within enum values."""
    rng = random.Random(1)
    temperature = {"datatype": "decimal", "min": -10, "max": 40, "step": 0.5}
    level = {"datatype": "int", "min": 0, "max": 5}
    mode = {"datatype": "enum", "enum": ["eco", "boost"]}
    t, lv = initial_value(temperature, rng), initial_value(level, rng)
    for _ in range(500):
        t, lv = next_value(t, temperature, rng), next_value(lv, level, rng)
        assert -10 <= t <= 40 and (t * 2).is_integer()
        assert 0 <= lv <= 5 and isinstance(lv, int)
    assert {initial_value(mode, rng) for _ in range(50)} == {"eco", "boost"}
    assert isinstance(initial_value({"datatype": "bool"}, rng), bool)
    assert len(initial_value({"datatype": "string", "max_length": 3}, rng)) <= 3


@pytest.fixture
def sensor(api, redis_prefix):
    assert api.post("/api/v1/products/", SENSOR, format="json").status_code == 201
    return Product.objects.get(identifier="sensor")


def pump_until(worker, check, timeout=20.0):
    deadline = time.monotonic() + timeout
    while True:
        worker.process(worker.read())
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached in {timeout} s; last {value!r}")


def telemetry(api, identifier):
    body = api.get(f"/api/v1/devices/{identifier}/telemetry/?service=env").json()
    return body.get("results", [])


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_simulate_command_creates_devices_that_report(api, sensor, live, worker):
    """`manage.py simulate` creates the missing devices and they report valid data."""
    runner = threading.Thread(target=call_command, args=("simulate",), kwargs={
        "product": "sensor", "devices": 3, "interval": 0.5, "duration": 6,
        "port": live.mqtt_port, "seed": 7})
    runner.start()
    try:
        names = ["sim-sensor-0001", "sim-sensor-0002", "sim-sensor-0003"]
        pump_until(worker, lambda: Device.objects.filter(identifier__in=names).count() == 3)
        rows = pump_until(worker, lambda: all(telemetry(api, n) for n in names) and
                          telemetry(api, names[0]))
        assert -10 <= rows[0]["temperature"] <= 40 and rows[0]["mode"] in ("eco", "boost")
        rejected = api.get(f"/api/v1/devices/{names[0]}/messages/?result=rejected").json()
        assert rejected["results"] == []
    finally:
        runner.join(30)
    assert not runner.is_alive()


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_simulated_devices_answer_commands_and_follow_the_shadow(api, sensor, live, worker):
    """A command gets a response with its mid; a desired value is applied and reported."""
    secrets = []
    for identifier in ("v-1", "v-2"):
        body = api.post("/api/v1/devices/", {"product": "sensor", "identifier": identifier},
                        format="json").json()
        secrets.append((identifier, body["secret"]))
    simulator = Simulator(secrets, compact_model(sensor), port=live.mqtt_port, interval=1.0,
                          seed=3)
    stop = threading.Event()
    runner = threading.Thread(target=simulator.run, kwargs={"stop": stop.is_set})
    runner.start()
    try:
        # The simulator asks for its shadow once it has subscribed to its topics.
        pump_until(worker, lambda: DeviceMessage.objects.filter(
            device_identifier="v-1", topic="/v1/devices/v-1/shadow/get").exists())
        command = api.post("/api/v1/devices/v-1/commands/", {
            "service": "env", "command": "set_interval", "params": {"interval": 9}},
            format="json").json()
        done = pump_until(worker, lambda: (c := api.get(
            f"/api/v1/commands/{command['id']}/").json())["status"] == "succeeded" and c)
        assert done["response"] == {"result": "ok"}

        written = api.put("/api/v1/devices/v-2/shadow/", {"desired": {"env": {"interval": 42}}},
                          format="json")
        assert written.status_code == 200, written.json()
        shadow = pump_until(worker, lambda: (s := api.get(
            "/api/v1/devices/v-2/shadow/").json())["delta"] == {} and s)
        assert shadow["reported"]["env"]["interval"]["value"] == 42
    finally:
        stop.set()
        runner.join(10)
    assert simulator.stats.commands >= 1 and simulator.stats.shadow_updates >= 1
