"""Commands to devices: validation, the downlink with its mid, completion by the device's
response, offline waiting, timeouts, synchronous calls (real Redis, real ingest worker)."""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from tests.devices.conftest import NODE, now_ms
from webapp.devices import actions
from webapp.devices.models import DeviceCommand

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("commit_hooks")]

SET_INTERVAL = {"service": "env", "command": "set_interval", "params": {"seconds": 10},
                "timeout": 10}


def response_event(mid, *, err=0, params=None, dev="dev-1"):
    return {"t": "cmdrsp", "dev": dev, "mid": mid, "svc": "env", "cmd": "set_interval",
            "err": err, "params": params if params is not None else {"result": "ok"},
            "ts": now_ms()}


def test_command_is_sent_with_its_mid_and_completed_by_the_response(api, device, edge):
    """An online device gets the enveloped command; its response with the same mid completes it."""
    edge.connect("dev-1")
    response = api.post("/api/v1/devices/dev-1/commands/", SET_INTERVAL, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["status"] == "sent"

    [entry] = edge.take()
    assert entry["topic"] == "/v1/devices/dev-1/command"
    assert entry["dev"] == "dev-1" and int(entry["mid"]) == body["id"]
    message = entry["message"]
    assert message["head"]["mid"] == body["id"]
    assert message["dataBody"] == {
        "deviceIdentification": "dev-1", "productIdentification": "thermo",
        "msgType": "cloudReq", "serviceCode": "env", "cmd": "set_interval",
        "params": {"seconds": 10}}

    edge.uplink(response_event(body["id"], params={"result": "done"}))
    done = api.get(f"/api/v1/commands/{body['id']}/").json()
    assert done["status"] == "succeeded"
    assert done["response"] == {"result": "done"} and done["err_code"] == 0
    assert done["completed"] is not None

    # A redelivered response changes nothing.
    edge.uplink(response_event(body["id"], err=1))
    assert api.get(f"/api/v1/commands/{body['id']}/").json()["status"] == "succeeded"


def test_error_code_fails_the_command(api, device, edge):
    """errCode ≠ 0 marks the command failed, with the response kept."""
    edge.connect("dev-1")
    command_id = api.post("/api/v1/devices/dev-1/commands/", SET_INTERVAL,
                          format="json").json()["id"]
    edge.uplink(response_event(command_id, err=1, params={"result": "busy"}))
    body = api.get(f"/api/v1/commands/{command_id}/").json()
    assert body["status"] == "failed" and body["err_code"] == 1
    assert body["response"] == {"result": "busy"}


@pytest.mark.parametrize(("payload", "code", "text"), [
    ({"service": "nope", "command": "set_interval"}, "unknown_service", "unknown service"),
    ({"service": "env", "command": "explode"}, "unknown_command", "unknown command"),
    ({"service": "env", "command": "set_interval", "params": {"seconds": 0}}, "out_of_range",
     "below min 1"),
    ({"service": "env", "command": "set_interval", "params": {"seconds": "ten"}}, "wrong_type",
     "must be an integer"),
    ({"service": "env", "command": "set_interval", "params": {"seconds": 5, "x": 1}},
     "unknown_property", "unknown property 'x'"),
])
def test_invalid_commands_are_refused_with_the_reason(api, device, edge, payload, code, text):
    """The thing model refuses bad commands with 400 `invalid_command` and per-field errors."""
    edge.connect("dev-1")
    response = api.post("/api/v1/devices/dev-1/commands/", payload, format="json")
    assert response.status_code == 400, response.json()
    body = response.json()
    assert body["code"] == "invalid_command"
    assert body["errors"][0]["code"] == code
    assert text in body["detail"]
    assert not DeviceCommand.objects.exists()
    assert edge.take() == []


def test_missing_required_parameter(api, thermo_payload, redis_prefix, edge):
    """A required request parameter must be given."""
    thermo_payload["services"][0]["commands"][0]["requests"][0]["required"] = True
    api.post("/api/v1/products/", thermo_payload, format="json")
    api.post("/api/v1/devices/", {"product": "thermo", "identifier": "dev-1"}, format="json")
    response = api.post("/api/v1/devices/dev-1/commands/",
                        {"service": "env", "command": "set_interval"}, format="json")
    assert response.status_code == 400
    assert response.json()["errors"][0]["code"] == "missing_required"


def test_offline_device_gets_its_commands_when_it_connects(api, device, edge):
    """A command for an offline device waits, then goes out in order when it comes online."""
    first = api.post("/api/v1/devices/dev-1/commands/", SET_INTERVAL, format="json").json()
    second = api.post("/api/v1/devices/dev-1/commands/",
                      {**SET_INTERVAL, "params": {"seconds": 20}}, format="json").json()
    assert first["status"] == second["status"] == "pending"
    assert edge.take() == []

    edge.connect("dev-1")
    sent = edge.take()
    assert [e["message"]["head"]["mid"] for e in sent] == [first["id"], second["id"]]
    assert api.get(f"/api/v1/commands/{first['id']}/").json()["status"] == "sent"

    # Reconnecting again does not send them twice.
    edge.connect("dev-1")
    assert edge.take() == []


def test_timeouts(api, device, edge):
    """No response by the deadline, or no connection within the TTL: the command times out."""
    edge.connect("dev-1")
    sent = api.post("/api/v1/devices/dev-1/commands/", {**SET_INTERVAL, "timeout": 1},
                    format="json").json()
    edge.disconnect("dev-1")
    waiting = api.post("/api/v1/devices/dev-1/commands/", {**SET_INTERVAL, "ttl": 0},
                       format="json").json()
    kept = api.post("/api/v1/devices/dev-1/commands/", SET_INTERVAL, format="json").json()
    DeviceCommand.objects.filter(pk=sent["id"]).update(
        deadline=timezone.now() - timedelta(seconds=1))
    time.sleep(0.01)
    assert actions.expire_commands() == 2
    states = {c["id"]: c for c in api.get("/api/v1/devices/dev-1/commands/").json()["results"]}
    assert states[sent["id"]]["status"] == "timeout"
    assert "did not respond" in states[sent["id"]]["error"]
    assert states[waiting["id"]]["status"] == "timeout"
    assert "did not come online" in states[waiting["id"]]["error"]
    assert states[kept["id"]]["status"] == "pending"
    # A late response does not revive a timed-out command.
    edge.uplink(response_event(sent["id"]))
    assert api.get(f"/api/v1/commands/{sent['id']}/").json()["status"] == "timeout"


# The device answers from another thread, whose database connection must see the command.
@pytest.mark.django_db(transaction=True)
def test_synchronous_command_returns_the_response(api, device, edge, worker):
    """With `sync`, the call returns once the device's response has been ingested."""
    edge.connect("dev-1")

    def device_answers():
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            entries = edge.sent()
            if entries:
                mid = entries[0]["message"]["head"]["mid"]
                edge.uplink(response_event(mid, params={"result": "applied"}))
                return
            time.sleep(0.05)

    answering = threading.Thread(target=device_answers)
    answering.start()
    started = time.monotonic()
    response = api.post("/api/v1/devices/dev-1/commands/", {**SET_INTERVAL, "sync": True},
                        format="json")
    answering.join()
    assert response.status_code == 201, response.json()
    assert response.json()["status"] == "succeeded"
    assert response.json()["response"] == {"result": "applied"}
    assert time.monotonic() - started < 5


def test_synchronous_command_without_response_times_out(api, device, edge):
    """A synchronous call waits `timeout` seconds, then reports the timeout."""
    edge.connect("dev-1")
    started = time.monotonic()
    body = api.post("/api/v1/devices/dev-1/commands/",
                    {**SET_INTERVAL, "timeout": 1, "sync": True}, format="json").json()
    assert 0.9 <= time.monotonic() - started < 4
    assert body["status"] == "timeout"


def test_history_filter_and_cancel(api, device, edge):
    """The per-device history filters by status; a pending command can be cancelled once."""
    pending = api.post("/api/v1/devices/dev-1/commands/", SET_INTERVAL, format="json").json()
    cancelled = api.post(f"/api/v1/commands/{pending['id']}/cancel/").json()
    assert cancelled["status"] == "cancelled"
    again = api.post(f"/api/v1/commands/{pending['id']}/cancel/")
    assert again.status_code == 409 and again.json()["code"] == "not_pending"
    api.post("/api/v1/devices/dev-1/commands/", SET_INTERVAL, format="json")
    history = api.get("/api/v1/devices/dev-1/commands/?status=pending").json()
    assert history["count"] == 1
    listed = api.get("/api/v1/commands/?device=dev-1").json()
    assert listed["count"] == 2
    edge.connect("dev-1")
    assert len(edge.take()) == 1  # the cancelled one is never sent


def test_send_command_action_for_the_rule_engine(device, edge):
    """`actions.send_command` takes a device identifier and records its source."""
    edge.connect("dev-1")
    record = actions.send_command(acting_user=None, device="dev-1", service="env",
                                  command="set_interval", params={"seconds": 5}, source="rule")
    record.refresh_from_db()
    assert record.status == "sent" and record.source == "rule"
    assert edge.take()[0]["message"]["dataBody"]["params"] == {"seconds": 5}


def test_locked_and_unknown_devices(api, device, edge):
    """Locked devices get no commands; unknown devices are 404."""
    assert api.patch("/api/v1/devices/dev-1/", {"status": "locked"},
                     format="json").status_code == 200
    response = api.post("/api/v1/devices/dev-1/commands/", SET_INTERVAL, format="json")
    assert response.status_code == 409 and response.json()["code"] == "device_locked"
    assert api.post("/api/v1/devices/nope/commands/", SET_INTERVAL,
                    format="json").status_code == 404


def test_routes_to_the_node_holding_the_device(api, device, edge):
    """The command goes to the downlink stream of the node in `tl:route`."""
    edge.connect("dev-1", node="node-b")
    api.post("/api/v1/devices/dev-1/commands/", SET_INTERVAL, format="json")
    assert edge.take(NODE) == []
    assert len(edge.take("node-b")) == 1


def test_undelivered_command_is_sent_again(api, device, edge):
    """When the edge finds no subscriber for a command it returns to pending and the sweep
    sends it again while the device is online."""
    edge.connect("dev-1")
    command_id = api.post("/api/v1/devices/dev-1/commands/", SET_INTERVAL,
                          format="json").json()["id"]
    [entry] = edge.take()
    payload = json.dumps(entry["message"])
    edge.uplink({"t": "log", "dev": "dev-1", "dir": "down", "topic": entry["topic"],
                 "payload": payload, "ok": False, "reason": "no subscriber", "ts": now_ms()})
    assert api.get(f"/api/v1/commands/{command_id}/").json()["status"] == "pending"
    assert actions.retry_pending() == 1
    [again] = edge.take()
    assert again["message"]["head"]["mid"] == command_id
    record = DeviceCommand.objects.get(pk=command_id)
    assert record.status == "sent" and record.attempts == 2


def test_admin_sends_commands_checked_against_the_model(client, admin_user, device, edge):
    """The admin's "add command" form refuses bad parameters and sends good ones."""
    client.force_login(admin_user)
    edge.connect("dev-1")
    form = {"device": device.pk, "service": "env", "command": "set_interval", "timeout": 10,
            "params_json": '{"seconds": 0}', "ttl": ""}
    refused = client.post("/admin/devices/devicecommand/add/", form)
    assert refused.status_code == 200 and b"below min 1" in refused.content
    assert not DeviceCommand.objects.exists()
    sent = client.post("/admin/devices/devicecommand/add/", {**form, "params_json":
                                                             '{"seconds": 5}'})
    assert sent.status_code == 302
    record = DeviceCommand.objects.get()
    assert record.source == "admin" and record.status == "sent"
    history = client.get(f"/admin/devices/device/{device.pk}/change/")
    assert b"set_interval" in history.content
