"""Device debugging (`/debug/`): the live stream over `/ws/debug/` fed by the real ingest worker
(scope, filters, the watch flag), and the publish, simulate, disconnect and broadcast POSTs
(permissions, scope, hostile input, the operation log)."""

from __future__ import annotations

import asyncio
import json

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from tests.console.conftest import log_event, now_ms, status_event
from tests.console.test_live import headers_of, open_socket
from tests.support.slow import starts_processes
from webapp.console import live

pytestmark = pytest.mark.django_db(transaction=True)

STREAM = ("devices.view_device", "telemetry.view_devicemessage")
DEBUG = ("devices.view_device", "devices.debug_device")
ADMINISTRATIVE_ACTION = 0x98


def grant(world, user, *permissions: str) -> None:
    user.roles.add(world.org.role(permissions, "department"))


@pytest.fixture
def debuggers(world):
    """alice and bob may watch the stream and publish/simulate (their department's)."""
    for user in (world.alice, world.bob):
        grant(world, user, *STREAM, *DEBUG)
    return world


def datas(device: str, **values) -> str:
    return json.dumps({"devices": [{"deviceId": device, "services": [
        {"serviceCode": "env", "data": values}]}]})


def oplog(action: str):
    from webapp.system.models import OperationLog

    return [e for e in OperationLog.objects.filter(app_label="devices", model="device")
            if isinstance(e.after, dict) and e.after.get("debug") == action]


def down_line(device: str, ts: int) -> dict:
    return {"t": "log", "dev": device, "dir": "down", "topic": f"/v1/devices/{device}/command",
            "payload": "{}", "ok": True, "reason": None, "ts": ts}


# The page ------------------------------------------------------------------------------


def test_the_page_lists_only_the_users_devices_and_needs_the_permissions(debuggers, client_of):
    page = client_of(debuggers.alice).get("/debug/")
    assert page.status_code == 200
    text = page.content.decode()
    assert 'value="dev-a1"' in text and "dev-b1" not in text and "thermo-b" not in text
    assert 'data-testid="publish-form"' in text and 'data-testid="disconnect-form"' in text
    assert client_of(debuggers.nobody).get("/debug/").status_code == 403
    # the console's operator permissions without the message log's: no stream
    assert client_of(debuggers.root).get("/debug/").status_code == 200
    carol = debuggers.org.user("carol", debuggers.org.a, ("devices.view_device",),
                               scope="department")
    assert client_of(carol).get("/debug/").status_code == 403


def test_the_broadcast_form_shows_the_products_commands_typed(debuggers, client_of):
    text = client_of(debuggers.alice).get("/debug/?product=thermo-a").content.decode()
    assert 'data-testid="broadcast-env.set_interval"' in text
    assert 'name="p.seconds"' in text and 'type="number"' in text
    # another department's product is not offered and not chosen
    text = client_of(debuggers.alice).get("/debug/?product=thermo-b").content.decode()
    assert "broadcast-env.set_interval" not in text


# The stream ----------------------------------------------------------------------------


def test_each_socket_receives_only_its_users_devices(debuggers, client_of, ingest):
    """bob's socket never receives dev-a1's messages, alice's never dev-b1's; the superuser's
    gets both, each line with its product."""
    sockets_of = {name: headers_of(client_of(getattr(debuggers, name)))
                  for name in ("alice", "bob", "root")}

    async def scenario() -> None:
        sockets = {}
        for name, headers in sockets_of.items():
            socket, connected, _code = await open_socket("/ws/debug/", headers)
            assert connected
            assert await socket.receive_json_from(timeout=5) == {"type": "hello"}
            sockets[name] = socket
        ts = now_ms()
        await database_sync_to_async(ingest.send)(
            log_event("dev-a1", True, ts=ts), log_event("dev-b1", False, "too hot", ts=ts + 1))
        alice = await sockets["alice"].receive_json_from(timeout=10)
        assert [(line["device"], line["product"], line["result"]) for line in alice["lines"]] \
            == [("dev-a1", "thermo-a", "accepted")]
        bob = await sockets["bob"].receive_json_from(timeout=10)
        assert [(line["device"], line["reason"]) for line in bob["lines"]] \
            == [("dev-b1", "too hot")]
        root = await sockets["root"].receive_json_from(timeout=10)
        assert {line["device"] for line in root["lines"]} == {"dev-a1", "dev-b1"}
        # only dev-a1 again: bob gets nothing at all
        await database_sync_to_async(ingest.send)(log_event("dev-a1", False, "x", ts=ts + 2))
        assert (await sockets["alice"].receive_json_from(timeout=10))["lines"][0]["result"] \
            == "rejected"
        assert await sockets["bob"].receive_nothing(timeout=0.5)
        for socket in sockets.values():
            await socket.disconnect()

    async_to_sync(scenario)()


def test_the_filters_of_the_page_apply_on_the_server(debuggers, client_of, ingest):
    headers = headers_of(client_of(debuggers.root))

    async def scenario() -> None:
        socket, connected, _code = await open_socket("/ws/debug/", headers)
        assert connected
        await socket.receive_json_from(timeout=5)
        await socket.send_json_to({"type": "filter", "result": "rejected", "product": "thermo-a",
                                   "device": "x" * 500})  # too long: ignored
        assert (await socket.receive_json_from(timeout=5))["filters"] == {
            "result": "rejected", "product": "thermo-a"}
        ts = now_ms()
        await database_sync_to_async(ingest.send)(
            log_event("dev-a1", True, ts=ts), log_event("dev-a1", False, "bad", ts=ts + 1),
            log_event("dev-b1", False, "bad", ts=ts + 2))
        got = await socket.receive_json_from(timeout=10)
        assert [(line["device"], line["result"]) for line in got["lines"]] == [
            ("dev-a1", "rejected")]
        await socket.send_json_to({"type": "filter", "direction": "down", "device": "dev-b1"})
        await socket.receive_json_from(timeout=5)
        await database_sync_to_async(ingest.send)(
            log_event("dev-b1", True, ts=ts + 3), down_line("dev-a1", ts + 4),
            down_line("dev-b1", ts + 5))
        got = await socket.receive_json_from(timeout=10)
        assert [(line["device"], line["direction"]) for line in got["lines"]] == [
            ("dev-b1", "down")]
        await socket.disconnect()

    async_to_sync(scenario)()


@pytest.mark.parametrize(("who", "code"), [(None, 4401), ("nobody", 4403), ("alice", 4403)])
def test_sockets_are_refused_without_login_or_permissions(world, client_of, who, code):
    """alice holds the operator permissions but not the message log's."""
    headers = headers_of(client_of(getattr(world, who)) if who else None)

    async def scenario() -> None:
        _socket, connected, close_code = await open_socket("/ws/debug/", headers)
        assert not connected and close_code == code

    async_to_sync(scenario)()


def test_ingest_pushes_to_the_debug_group_only_while_a_stream_is_open(world, ingest,
                                                                      redis_client,
                                                                      redis_prefix):
    """No open debug page: ingest sends nothing to the group. An open one: each batch's
    lines. A lapsed one (its socket gone without saying so): nothing again."""

    async def scenario() -> None:
        layer = get_channel_layer()
        channel = await layer.new_channel()
        await layer.group_add(live.DEBUG_GROUP, channel)
        await database_sync_to_async(ingest.send)(log_event("dev-a1", True))
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(layer.receive(channel), 0.5)
        await sync_to_async(live.debug_watch)("socket-1")
        await database_sync_to_async(ingest.send)(log_event("dev-a1", False, "bad"))
        message = await asyncio.wait_for(layer.receive(channel), 5)
        assert message["type"] == "debug.lines"
        assert [line["result"] for line in message["lines"]] == ["rejected"]
        await sync_to_async(redis_client.zadd)(f"{redis_prefix}console:debug",
                                               {"socket-1": now_ms() - 1})
        await database_sync_to_async(ingest.send)(log_event("dev-a1", True))
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(layer.receive(channel), 0.5)

    async_to_sync(scenario)()


def test_a_closed_socket_ends_its_watch(debuggers, client_of, redis_client, redis_prefix):
    headers = headers_of(client_of(debuggers.alice))

    async def scenario() -> None:
        socket, connected, _code = await open_socket("/ws/debug/", headers)
        assert connected
        await socket.receive_json_from(timeout=5)
        assert await sync_to_async(redis_client.zcard)(f"{redis_prefix}console:debug") == 1
        await socket.disconnect()

    async_to_sync(scenario)()
    assert redis_client.zcard(f"{redis_prefix}console:debug") == 0


# Publish -------------------------------------------------------------------------------


def online(redis_client, redis_prefix, device: str, node: str = "node-x") -> str:
    redis_client.hset(f"{redis_prefix}route", device, node)
    return f"{redis_prefix}down:{node}"


def test_publish_reaches_the_devices_edge_node_and_is_audited(debuggers, client_of,
                                                             redis_client, redis_prefix):
    stream = online(redis_client, redis_prefix, "dev-a1")
    reply = client_of(debuggers.alice).post("/debug/publish/", {
        "device": "dev-a1", "suffix": "custom/ping", "qos": "0", "format": "json",
        "envelope": "1", "payload": '{"hello": "world"}'})
    assert reply.status_code == 200, reply.content
    assert reply.json()["topic"] == "/v1/devices/dev-a1/custom/ping"
    [(_id, fields)] = redis_client.xrange(stream)
    assert fields[b"topic"] == b"/v1/devices/dev-a1/custom/ping" and fields[b"qos"] == b"0"
    sent = json.loads(fields[b"payload"])
    assert sent["dataBody"] == {"hello": "world"} and "mid" in sent["head"]
    [entry] = oplog("publish")
    assert entry.username == "alice" and entry.object_repr == "dev-a1"
    assert entry.after["topic"] == "/v1/devices/dev-a1/custom/ping"
    assert entry.after["bytes"] == len(fields[b"payload"]) and "payload" not in entry.after

    raw = client_of(debuggers.alice).post("/debug/publish/", {
        "device": "dev-a1", "suffix": "command", "format": "text", "payload": "not json"})
    assert raw.status_code == 200
    assert redis_client.xrange(stream)[-1][1][b"payload"] == b"not json"


@pytest.mark.parametrize(("data", "status", "code"), [
    ({"device": "dev-b1"}, 404, "unknown_device"),
    ({"device": "no-such"}, 404, "unknown_device"),
    ({"payload": "{oops"}, 400, "malformed_json"),
    ({"payload": json.dumps({"x": "a" * 70_000})}, 400, "payload_too_large"),
    ({"suffix": "a/+/b"}, 400, "invalid_topic"),
    ({"suffix": "../other"}, 400, "invalid_topic"),
    ({"suffix": "#"}, 400, "invalid_topic"),
    ({"qos": "7"}, 400, "invalid_qos"),
    ({"device": "dev-a2"}, 409, "device_offline"),
])
def test_publish_refusals_say_why(debuggers, client_of, redis_client, redis_prefix, data,
                                  status, code):
    from tests.console.conftest import create_device

    create_device("dev-a2", debuggers.product_a, debuggers.org.a)
    online(redis_client, redis_prefix, "dev-a1")
    online(redis_client, redis_prefix, "dev-b1")
    reply = client_of(debuggers.alice).post("/debug/publish/", {
        "device": "dev-a1", "suffix": "command", "payload": "{}", **data})
    assert reply.status_code == status, reply.content
    assert reply.json()["code"] == code and reply.json()["detail"]
    assert not oplog("publish")


def test_publish_and_simulate_need_the_debug_permission(world, client_of):
    grant(world, world.alice, *STREAM)  # may watch, may not publish
    for path in ("/debug/publish/", "/debug/simulate/"):
        reply = client_of(world.alice).post(path, {"device": "dev-a1", "suffix": "datas",
                                                   "payload": "{}"})
        assert reply.status_code == 403
    text = client_of(world.alice).get("/debug/").content.decode()
    assert "publish-form" not in text and "simulate-form" not in text


# Simulate ------------------------------------------------------------------------------


def test_a_simulated_message_is_validated_stored_and_logged_like_a_real_one(
        debuggers, client_of, ingest):
    from webapp.telemetry.models import DeviceMessage

    client = client_of(debuggers.alice)
    good = client.post("/debug/simulate/", {"device": "dev-a1", "suffix": "datas",
                                            "payload": datas("dev-a1", temperature=21.5)})
    assert good.status_code == 200, good.content
    assert good.json() | {"answer": None} == {
        "topic": "/v1/devices/dev-a1/datas", "accepted": True, "result": "accepted",
        "reason": None, "landed": 1, "answer": None}
    bad = client.post("/debug/simulate/", {"device": "dev-a1", "suffix": "datas",
                                           "payload": datas("dev-a1", temperature=500)})
    assert bad.status_code == 200
    body = bad.json()
    assert body["accepted"] is False and body["result"] == "rejected"
    assert "temperature" in body["reason"] and "125" in body["reason"]
    assert body["answer"] and "temperature" in body["answer"]  # the datasResponse
    malformed = client.post("/debug/simulate/", {"device": "dev-a1", "suffix": "datas",
                                                 "payload": "{oops"})
    assert malformed.json()["result"] == "rejected"
    assert "JSON" in malformed.json()["reason"]
    # another device's namespace, as a real device could not
    other = client.post("/debug/simulate/", {"device": "dev-a1", "suffix": "datas",
                                             "payload": datas("dev-b1", temperature=1)})
    assert other.json()["result"] == "rejected"

    ingest.run()
    logged = list(DeviceMessage.objects.filter(device_identifier="dev-a1").order_by("id")
                  .values_list("direction", "result", "topic"))
    assert logged == [("up", "accepted", "/v1/devices/dev-a1/datas")] + [
        ("up", "rejected", "/v1/devices/dev-a1/datas")] * 3
    from webapp.devices.models import Device

    latest = client.get("/devices/dev-a1/").content.decode()
    assert "21.5" in latest
    assert Device.objects.get(identifier="dev-a1").last_seen is not None
    entries = oplog("simulate")
    assert sorted(e.after["result"] for e in entries) == ["accepted"] + ["rejected"] * 3
    assert all(e.username == "alice" and e.after["bytes"] > 0 for e in entries)


@pytest.mark.parametrize(("data", "status", "code"), [
    ({"device": "dev-b1"}, 404, "unknown_device"),
    ({"suffix": "register"}, 400, "invalid_topic"),
    ({"suffix": "command"}, 400, "invalid_topic"),
    ({"payload": "x" * 70_000}, 400, "payload_too_large"),
])
def test_simulate_refusals_say_why(debuggers, client_of, data, status, code):
    reply = client_of(debuggers.alice).post("/debug/simulate/", {
        "device": "dev-a1", "suffix": "datas", "payload": "{}", **data})
    assert reply.status_code == status
    assert reply.json()["code"] == code and reply.json()["detail"]
    assert not oplog("simulate")


# Disconnect ----------------------------------------------------------------------------


def test_disconnect_asks_the_edge_and_shows_in_the_connection_history(world, client_of,
                                                                      redis_client,
                                                                      redis_prefix, ingest):
    pubsub = redis_client.pubsub()
    pubsub.subscribe(f"{redis_prefix}registry")
    pubsub.get_message(timeout=1)
    online(redis_client, redis_prefix, "dev-a1")
    client = client_of(world.alice)  # devices.change_device
    reply = client.post("/debug/disconnect/", {"device": "dev-a1"})
    assert reply.status_code == 200 and reply.json() == {"device": "dev-a1", "online": True}
    message = pubsub.get_message(timeout=2)
    assert message["data"] == b"kick:dev-a1"
    [entry] = oplog("disconnect")
    assert entry.username == "alice" and entry.after["online"] is True

    event = status_event("dev-a1", "offline")  # what the edge then reports
    event["reason"] = "kicked"
    ingest.send(event)
    page = client.get("/devices/dev-a1/").content.decode()
    assert "kicked" in page

    assert client.post("/debug/disconnect/", {"device": "dev-b1"}).status_code == 404
    assert client_of(world.nobody).post("/debug/disconnect/",
                                        {"device": "dev-a1"}).status_code == 403
    assert pubsub.get_message(timeout=0.5) is None
    pubsub.close()


def test_disconnect_needs_change_or_debug_permission(world, client_of):
    viewer = world.org.user("viewer", world.org.a, ("devices.view_device",),
                            scope="department")
    reply = client_of(viewer).post("/debug/disconnect/", {"device": "dev-a1"})
    assert reply.status_code == 403


# Broadcast -----------------------------------------------------------------------------


def test_a_broadcast_sends_to_each_device_of_the_product_in_scope(world, client_of):
    from tests.console.conftest import create_device
    from webapp.devices.models import DeviceCommand

    create_device("dev-a2", world.product_a, world.org.a)
    create_device("dev-x", world.product_a, world.org.b)  # thermo-a, but department B
    client = client_of(world.alice)
    reply = client.post("/debug/broadcast/", {"product": "thermo-a", "service": "env",
                                              "command": "set_interval", "p.seconds": "30"})
    assert reply.status_code == 201, reply.content
    results = reply.json()["results"]
    assert [(r["device"], r["status"], r["open"]) for r in results] == [
        ("dev-a1", "pending", True), ("dev-a2", "pending", True)]
    assert list(DeviceCommand.objects.order_by("device__identifier").values_list(
        "device__identifier", "params")) == [("dev-a1", {"seconds": 30}),
                                             ("dev-a2", {"seconds": 30})]
    assert len(oplog("broadcast")) == 2

    DeviceCommand.objects.filter(device__identifier="dev-a1").update(status="succeeded")
    ids = ",".join(str(r["id"]) for r in results)
    status = client.get(f"/debug/broadcast/status/?ids={ids}").json()["results"]
    assert [(r["device"], r["status"], r["open"]) for r in status] == [
        ("dev-a1", "succeeded", False), ("dev-a2", "pending", True)]
    # bob asks about alice's commands: none of them
    bob = client_of(world.bob).get(f"/debug/broadcast/status/?ids={ids}").json()
    assert bob["results"] == []


@pytest.mark.parametrize(("data", "status", "code"), [
    ({"product": "thermo-b"}, 404, "unknown_product"),
    ({"command": "nope"}, 400, "unknown_command"),
    ({"p.seconds": "many"}, 400, "invalid_command"),
    ({"group": "999"}, 404, "unknown_group"),
    ({"group": "x"}, 404, "unknown_group"),
])
def test_broadcast_refusals_say_why(world, client_of, data, status, code):
    from webapp.devices.models import DeviceCommand

    reply = client_of(world.alice).post("/debug/broadcast/", {
        "product": "thermo-a", "service": "env", "command": "set_interval", "p.seconds": "5",
        **data})
    assert reply.status_code == status, reply.content
    assert reply.json()["code"] == code
    assert not DeviceCommand.objects.exists()


def test_a_broadcast_is_bounded_and_out_of_range_values_fail_per_device(world, client_of,
                                                                        monkeypatch):
    from webapp.devices.actions import debug as debug_actions

    client = client_of(world.alice)
    reply = client.post("/debug/broadcast/", {"product": "thermo-a", "service": "env",
                                              "command": "set_interval", "p.seconds": "99999"})
    [result] = reply.json()["results"]
    assert result["status"] == "failed" and "3600" in result["error"]
    monkeypatch.setattr(debug_actions, "MAX_BROADCAST_DEVICES", 0)
    reply = client.post("/debug/broadcast/", {"product": "thermo-a", "service": "env",
                                              "command": "set_interval", "p.seconds": "5"})
    assert reply.status_code == 400 and reply.json()["code"] == "too_many_devices"
    assert client_of(world.nobody).post("/debug/broadcast/", {
        "product": "thermo-a", "service": "env", "command": "set_interval"}).status_code == 403


def test_a_broadcast_to_a_group_reaches_its_members_only(world, client_of):
    from tests.console.conftest import create_device
    from webapp.devices import actions

    device = create_device("dev-a2", world.product_a, world.org.a)
    group = actions.create_group(data={"name": "Hall", "department": world.org.a})
    actions.change_members(group=group, add=[device])
    reply = client_of(world.alice).post("/debug/broadcast/", {
        "product": "thermo-a", "group": str(group.pk), "service": "env",
        "command": "set_interval", "p.seconds": "5"})
    assert [r["device"] for r in reply.json()["results"]] == ["dev-a2"]
    other = actions.create_group(data={"name": "B hall", "department": world.org.b})
    reply = client_of(world.alice).post("/debug/broadcast/", {
        "product": "thermo-a", "group": str(other.pk), "service": "env",
        "command": "set_interval", "p.seconds": "5"})
    assert reply.status_code == 404


def test_a_device_moved_out_of_scope_stops_showing_and_a_lost_permission_closes(
        debuggers, client_of, ingest, monkeypatch, redis_client, redis_prefix):
    """The socket forgets what it learnt of the scope at each check (with the user read
    afresh): a device moved to another department stops showing; losing the message log's
    permission closes the socket; the check also renews the watch."""
    from webapp.devices.models import Device

    monkeypatch.setattr(live, "RENEW_S", 0.2)
    headers = headers_of(client_of(debuggers.alice))

    async def scenario() -> None:
        socket, connected, _code = await open_socket("/ws/debug/", headers)
        assert connected
        await socket.receive_json_from(timeout=5)
        await database_sync_to_async(ingest.send)(log_event("dev-a1", True))
        assert (await socket.receive_json_from(timeout=10))["lines"][0]["device"] == "dev-a1"
        await database_sync_to_async(
            Device.objects.filter(identifier="dev-a1").update)(department=debuggers.org.b)
        await asyncio.sleep(0.6)
        key = f"{redis_prefix}console:debug"
        [(_member, score)] = await sync_to_async(redis_client.zrange)(key, 0, -1,
                                                                      withscores=True)
        assert score > now_ms() + live.WATCH_TTL_MS / 2
        await database_sync_to_async(ingest.send)(log_event("dev-a1", True))
        assert await socket.receive_nothing(timeout=0.5)
        await database_sync_to_async(debuggers.alice.roles.clear)()
        closed = await socket.receive_output(timeout=5)
        assert closed == {"type": "websocket.close", "code": 4403}

    async_to_sync(scenario)()


# Through a real edge -------------------------------------------------------------------


@pytest.fixture
@starts_processes
def edge(transactional_db, redis_url, redis_prefix, settings):
    from tests.security.access_edge import webapp_edge

    with webapp_edge(redis_url, redis_prefix, settings) as e:
        yield e


def test_publish_and_disconnect_reach_a_connected_device_through_the_edge(
        world, client_of, edge, ingest):
    """A message published from the console arrives on the device's MQTT connection; the
    disconnect closes that connection (0x98) and its connection history says `kicked`."""
    from tests.security.access_edge import mqtt_clients_of
    from webapp.devices import actions as device_actions
    from webapp.devices.models import DeviceConnection

    grant(world, world.alice, *DEBUG)
    _device, secret = device_actions.create_device(
        acting_user=None, product=world.product_a, identifier="dev-a3", department=world.org.a)
    client = client_of(world.alice)
    with mqtt_clients_of(edge) as make:
        device = make("dev-a3")
        assert device.connect("dev-a3", secret) == 0
        assert device.subscribe("/v1/devices/dev-a3/debug/#") == [1]
        reply = client.post("/debug/publish/", {"device": "dev-a3", "suffix": "debug/ping",
                                                "qos": "1", "format": "text",
                                                "payload": "hello"})
        assert reply.status_code == 200, reply.content
        message = device.next_message()
        assert (message.topic, message.payload) == ("/v1/devices/dev-a3/debug/ping", b"hello")

        reply = client.post("/debug/disconnect/", {"device": "dev-a3"})
        assert reply.json() == {"device": "dev-a3", "online": True}
        assert device.disconnected() == ADMINISTRATIVE_ACTION
    edge.wait_for_events(lambda e: e["t"] == "status" and e.get("reason") == "kicked")
    ingest.run()
    assert list(DeviceConnection.objects.filter(device__identifier="dev-a3").order_by(
        "at", "id").values_list("event", "reason")) == [("online", ""), ("offline", "kicked")]


def test_the_builtin_roles_hold_the_debug_permission():
    """Administrators and operators may publish and simulate; viewers may not (the defaults
    `grant_builtin_permissions` applies after every migrate)."""
    from webapp.system.defaults import wants

    assert {role: wants(role, "devices", "debug_device")
            for role in ("administrator", "operator", "viewer")} == {
        "administrator": True, "operator": True, "viewer": False}
