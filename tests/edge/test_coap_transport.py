"""The CoAP device transport (edge.transports.coap) in memory: datagrams into the server of an
in-memory node (broker, ThingLinks hooks, registry, uplink stream, fake clock), and the
datagrams it writes back, decoded."""

from __future__ import annotations

import json
from typing import Any

from edge.bus.registry import ProductRecord
from edge.coap.message import Code, Message, Type, build, decode, empty, encode, option
from edge.coap.message import OptionNumber as Opt
from edge.transports.coap import (
    DEFER_AFTER,
    MAX_PENDING_PER_PEER,
    CoapConfig,
    CoapServer,
)
from edge.transports.tcp import listen_datagram

from .test_thinglinks_mqtt import Edge
from .thinglinks_memory import MODEL, device

PEER = ("192.0.2.7", 40001)
DATA = json.dumps(
    {
        "devices": [
            {"deviceId": "c1", "services": [{"serviceCode": "env", "data": {"humidity": 40}}]}
        ]
    }
).encode()


class Wire:
    """The UDP transport: what the server wrote, to whom."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, Any]] = []

    def write(self, data: bytes, addr: Any) -> None:
        self.sent.append((data, addr))


class Node:
    def __init__(self, **budgets: int) -> None:
        self.edge = Edge()
        products = self.edge.directory.products
        products["coapthermo"] = ProductRecord("coapthermo", "direct", MODEL, None, protocol="coap")
        for name in ("c1", "c2"):
            self.edge.directory.devices[name] = device(name, product="coapthermo")
        hooks = self.edge.hooks
        self.server = CoapServer(
            self.edge.clock,
            hooks.auth,
            hooks.pipeline,
            hooks.endpoints,
            CoapConfig(**budgets),
            rng=lambda: 0.0,
        )
        self.wire = Wire()
        self.server.transport = self.wire  # type: ignore[assignment]
        self.mid = 100

    def send(self, message: Message, peer: Any = PEER) -> list[Message]:
        self.server.datagramReceived(encode(message), peer)
        return self.received()

    def received(self) -> list[Message]:
        out = [decode(data) for data, _ in self.wire.sent]
        self.wire.sent.clear()
        return out

    def request(
        self,
        code: int,
        path: str,
        query: tuple[str, ...] = ("p=s3cret",),
        payload: bytes = b"",
        type_: Type = Type.CON,
        token: bytes = b"t1",
        extra: tuple[tuple[int, bytes], ...] = (),
    ) -> Message:
        self.mid += 1
        options = [option(Opt.URI_PATH, part) for part in path.strip("/").split("/")]
        options += [option(Opt.URI_QUERY, item) for item in query]
        return build(type_, code, self.mid, token, [*options, *extra], payload)

    def store(self) -> None:
        """The bus confirms every emission still owed."""
        pending, self.edge.sink.pending = self.edge.sink.pending, []
        for d in pending:
            d.callback(None)

    def statuses(self) -> list[tuple[str, str]]:
        return [(e["dev"], e["s"]) for e in self.edge.events("status")]


def test_posted_data_lands_and_is_answered_2_04_once_stored_in_the_ack():
    node = Node()
    post = node.request(Code.POST, "/v1/devices/c1/datas", payload=DATA)
    assert node.send(post) == []  # waiting for the bus
    node.store()
    (ack,) = node.received()
    assert (ack.type, ack.code, ack.mid, ack.token) == (Type.ACK, Code.CHANGED, post.mid, b"t1")
    assert ack.payload == b""  # everything landed: nothing to list
    (data,) = node.edge.events("data")
    assert data["dev"] == "c1" and data["v"] == {"humidity": 40}
    assert node.statuses() == [("c1", "online")]  # the presence lease started
    # A retransmission of the same message is answered again and lands nothing new.
    (again,) = node.send(post)
    assert again == ack and len(node.edge.events("data")) == 1


def test_a_slow_store_gets_an_empty_ack_then_a_separate_response():
    node = Node()
    post = node.request(Code.POST, "/v1/devices/c1/datas", payload=DATA)
    assert node.send(post) == []
    node.edge.clock.advance(DEFER_AFTER)
    (ack,) = node.received()
    assert ack == empty(Type.ACK, post.mid)
    node.store()
    (response,) = node.received()
    assert (response.type, response.code, response.token) == (Type.CON, Code.CHANGED, b"t1")
    assert node.send(empty(Type.ACK, response.mid)) == []
    node.edge.clock.advance(60)
    assert node.received() == []  # acknowledged: no retransmission


def test_non_confirmable_posts_are_answered_non_confirmable():
    node = Node()
    post = node.request(Code.POST, "/v1/devices/c1/datas", payload=DATA, type_=Type.NON)
    node.send(post)
    node.store()
    (answer,) = node.received()
    assert (answer.type, answer.code) == (Type.NON, Code.CHANGED)


def test_refused_data_is_4_00_with_the_datas_response():
    node = Node()
    node.send(node.request(Code.POST, "/v1/devices/c1/datas", payload=b"{oops"))
    node.store()
    (ack,) = node.received()
    assert ack.code == Code.BAD_REQUEST and ack.content_format == 50
    body = json.loads(ack.payload)
    assert body["errors"][0]["code"] == "malformed_json" and body["statusDesc"]


def test_credentials_paths_and_methods_are_refused_with_the_right_codes():
    node = Node()

    def code(message: Message) -> tuple[int, str]:
        (reply,) = node.send(message)
        return reply.code, reply.payload.decode()

    datas = "/v1/devices/c1/datas"
    assert code(node.request(Code.POST, datas, ("p=wrong",), DATA))[0] == Code.UNAUTHORIZED
    missing = code(node.request(Code.POST, datas, (), DATA))
    assert missing[0] == Code.UNAUTHORIZED and "p=" in missing[1]
    # An MQTT product's device is not let in over CoAP, even with its secret.
    assert code(node.request(Code.POST, "/v1/devices/d1/datas", payload=DATA))[0] == 0x81
    other = code(node.request(Code.POST, datas, ("u=c2", "p=s3cret"), DATA))
    assert other == (Code.FORBIDDEN, "device c2 may not use the resources of c1")
    assert code(node.request(Code.POST, "/v1/devices/c1/nothing"))[0] == Code.NOT_FOUND
    assert code(node.request(Code.POST, "/elsewhere"))[0] == Code.NOT_FOUND
    assert code(node.request(Code.GET, datas))[0] == Code.METHOD_NOT_ALLOWED
    assert code(node.request(Code.POST, "/v1/devices/c1/command"))[0] == Code.METHOD_NOT_ALLOWED
    assert node.edge.events("data") == [] and node.statuses() == []


def test_a_get_without_observe_takes_the_next_waiting_command_or_answers_empty():
    node = Node()
    (empty_answer,) = node.send(node.request(Code.GET, "/v1/devices/c1/command"))
    assert (empty_answer.code, empty_answer.payload) == (Code.CONTENT, b"")
    node.edge.hooks.deliver_downlink(
        {b"topic": b"/v1/devices/c1/shadow/getResponse", b"payload": b'{"s":1}'}
    )
    node.edge.hooks.deliver_downlink({b"topic": b"/v1/devices/c1/command", b"payload": b'{"c":1}'})
    (answer,) = node.send(node.request(Code.GET, "/v1/devices/c1/command"))
    assert (answer.code, answer.payload, answer.content_format) == (Code.CONTENT, b'{"c":1}', 50)
    (shadow,) = node.send(node.request(Code.GET, "/v1/devices/c1/shadow/getResponse"))
    assert shadow.payload == b'{"s":1}'


def command(node: Node, n: int) -> None:
    payload = json.dumps({"n": n}).encode()
    node.edge.hooks.deliver_downlink({b"topic": b"/v1/devices/c1/command", b"payload": payload})


def test_observed_commands_go_out_one_confirmable_notification_at_a_time():
    node = Node()
    node.send(node.request(Code.GET, "/v1/devices/c1/command"))  # attaches the device
    command(node, 0)  # waiting before the registration: the registration's answer carries it
    register = node.request(Code.GET, "/v1/devices/c1/command", extra=(option(Opt.OBSERVE, 0),))
    (first,) = node.send(register)
    assert (first.type, first.code, json.loads(first.payload)) == (Type.ACK, Code.CONTENT, {"n": 0})
    assert first.observe is not None
    command(node, 1)
    command(node, 2)  # waits in the mailbox while the first notification is unacknowledged
    (note,) = node.received()
    assert (note.type, note.token, json.loads(note.payload)) == (Type.CON, b"t1", {"n": 1})
    assert note.observe is not None and note.observe > first.observe
    (second,) = node.send(empty(Type.ACK, note.mid))
    assert json.loads(second.payload) == {"n": 2}
    node.edge.clock.advance(3)  # not acknowledged yet: retransmitted
    assert node.received() == [second]
    assert node.send(empty(Type.ACK, second.mid)) == []
    logs = [e for e in node.edge.events("log") if e["dir"] == "down"]
    assert [e["ok"] for e in logs] == [True, True, True]
    assert node.server.stats["notifications"] == 2

    # Observe 1 deregisters: the next command waits for a poll.
    node.send(node.request(Code.GET, "/v1/devices/c1/command", extra=(option(Opt.OBSERVE, 1),)))
    command(node, 3)
    assert node.received() == []
    (polled,) = node.send(node.request(Code.GET, "/v1/devices/c1/command", token=b"t2"))
    assert json.loads(polled.payload) == {"n": 3}


def test_a_reset_or_silence_ends_the_observation():
    node = Node()
    register = node.request(Code.GET, "/v1/devices/c1/command", extra=(option(Opt.OBSERVE, 0),))
    node.send(register)
    command(node, 1)
    (note,) = node.received()
    node.send(empty(Type.RST, note.mid))
    assert node.server.observers == {} and node.server.exchange.observations == 0
    command(node, 2)
    assert node.received() == []  # kept in the mailbox

    again = node.request(Code.GET, "/v1/devices/c1/command", extra=(option(Opt.OBSERVE, 0),))
    (waiting,) = node.send(again)
    assert json.loads(waiting.payload) == {"n": 2}
    command(node, 3)
    for _ in range(5):  # the first send and 4 retransmissions, never acknowledged
        node.edge.clock.advance(100)
    assert node.server.observers == {} and node.server.exchange.observations == 0


def test_the_end_of_the_presence_lease_ends_the_observation_with_a_last_notification():
    node = Node()
    register = node.request(Code.GET, "/v1/devices/c1/command", extra=(option(Opt.OBSERVE, 0),))
    node.send(register)
    node.edge.clock.advance(node.edge.hooks.endpoints.lease)
    assert ("c1", "offline") in node.statuses()
    last = [m for m in node.received() if m.code != Code.EMPTY]
    assert [(m.type, m.code) for m in last] == [(Type.CON, Code.SERVICE_UNAVAILABLE)]
    assert b"register again" in last[0].payload
    assert node.server.observers == {} and node.server.exchange.observations == 0


def test_pending_requests_are_bounded_per_peer():
    node = Node()
    for _ in range(MAX_PENDING_PER_PEER):
        assert node.send(node.request(Code.POST, "/v1/devices/c1/datas", payload=DATA)) == []
    (refused,) = node.send(node.request(Code.POST, "/v1/devices/c1/datas", payload=DATA))
    assert refused.code == Code.SERVICE_UNAVAILABLE
    node.store()
    assert {m.code for m in node.received()} == {Code.CHANGED}
    assert node.server.pending == {} and node.server.pending_total == 0


def test_a_body_past_the_budget_is_4_13():
    node = Node(max_body=100)
    (reply,) = node.send(node.request(Code.POST, "/v1/devices/c1/datas", payload=b"x" * 101))
    assert reply.code == Code.REQUEST_ENTITY_TOO_LARGE and reply.uint(Opt.SIZE1) == 100


def test_config_from_env():
    assert CoapConfig.from_env({}) == CoapConfig()
    config = CoapConfig.from_env({"EDGE_COAP_PORT": "0", "EDGE_COAP_MAX_PEERS": "5"})
    assert (config.port, config.max_peers) == (0, 5)


def test_a_refused_registration_observes_nothing():
    node = Node()
    register = node.request(
        Code.GET, "/v1/devices/c1/command", ("p=wrong",), extra=(option(Opt.OBSERVE, 0),)
    )
    (reply,) = node.send(register)
    assert reply.code == Code.UNAUTHORIZED and reply.observe is None
    assert node.server.observers == {} and node.server.exchange.observations == 0


def test_workers_share_the_port_with_reuse_port():
    from twisted.internet import reactor
    from twisted.internet.protocol import DatagramProtocol

    first = listen_datagram(reactor, 0, DatagramProtocol(), "127.0.0.1", reuse_port=True)
    port = first.getHost().port
    second = listen_datagram(reactor, port, DatagramProtocol(), "127.0.0.1", reuse_port=True)
    try:
        assert second.getHost().port == port
    finally:
        first.stopListening()
        second.stopListening()
