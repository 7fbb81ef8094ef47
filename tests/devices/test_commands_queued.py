"""Commands for devices in queue mode (UDP): the edge logs a command it keeps for the device's
next datagram as queued, which is no failure, and logs it again when it went out; the wait for
the response starts then (real Redis, real ingest worker)."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from edge.codecs import thinglinks as tl
from tests.devices.conftest import now_ms
from webapp.devices import actions
from webapp.devices.models import DeviceCommand

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("commit_hooks")]

SET_INTERVAL = {"service": "env", "command": "set_interval", "params": {"seconds": 10},
                "timeout": 10}


def logged(entry, reason, ts):
    return {"t": "log", "dev": "dev-1", "dir": "down", "topic": entry["topic"],
            "payload": json.dumps(entry["message"]), "ok": True, "reason": reason, "ts": ts}


def test_a_queued_command_stays_sent_and_waits_from_its_delivery(api, device, edge):
    edge.connect("dev-1")
    command_id = api.post("/api/v1/devices/dev-1/commands/", SET_INTERVAL,
                          format="json").json()["id"]
    [entry] = edge.take()
    edge.uplink(logged(entry, "queued until the device asks for it", now_ms()))
    record = DeviceCommand.objects.get(pk=command_id)
    assert record.status == "sent" and record.sent is not None

    # the device asks late: the first deadline has passed, but the wait starts at delivery
    DeviceCommand.objects.filter(pk=command_id).update(
        deadline=timezone.now() - timedelta(seconds=1))
    delivered = timezone.now()
    edge.uplink(logged(entry, tl.DELIVERED_ON_REQUEST, int(delivered.timestamp() * 1000)))
    record.refresh_from_db()
    assert abs((record.deadline - (delivered + timedelta(seconds=10))).total_seconds()) < 0.01
    actions.expire_commands()
    record.refresh_from_db()
    assert record.status == "sent"


def test_a_command_no_longer_sent_is_left_alone(api, device, edge):
    edge.connect("dev-1")
    command_id = api.post("/api/v1/devices/dev-1/commands/", SET_INTERVAL,
                          format="json").json()["id"]
    DeviceCommand.objects.filter(pk=command_id).update(status="succeeded")
    assert actions.delivered({command_id: timezone.now()}) == 0
    assert DeviceCommand.objects.get(pk=command_id).status == "succeeded"
