"""MQTT over WebSocket: the sans-I/O RFC 6455 layer byte by byte, the Twisted protocol on a
StringTransport with the real broker, and paho (3.1.1 and 5.0) against ``python -m edge``."""

from __future__ import annotations

import os
import struct
import uuid
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from edge.mqtt.broker import Broker
from edge.mqtt.codec import Decoder, encode
from edge.mqtt.packets import MQTT_3_1_1, ConnAck, Connect, Publish, SubAck, Subscribe
from edge.mqtt.packets import Subscription as Sub
from edge.transports import rfc6455 as ws
from edge.transports.tcp import TransportCounter
from edge.transports.websocket import WebSocketMqttFactory

from .edge_process import Client, Edge, running_edge
from .redis_server import free_port
from .tls_material import Authority

KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # the example key of RFC 6455 section 1.3
REQUEST = (
    "GET /mqtt HTTP/1.1\r\n"
    "Host: example.com\r\n"
    "Upgrade: websocket\r\n"
    "Connection: keep-alive, Upgrade\r\n"
    f"Sec-WebSocket-Key: {KEY}\r\n"
    "Sec-WebSocket-Protocol: mqtt\r\n"
    "Sec-WebSocket-Version: 13\r\n\r\n"
).encode()


def client_frame(
    opcode: int, payload: bytes, fin: bool = True, mask: bytes = b"\x01\x02\x03\x04"
) -> bytes:
    """A masked client frame built by hand (RFC 6455 section 5.2)."""
    first = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", first, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", first, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", first, 0x80 | 127, n)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


# -- handshake --------------------------------------------------------------------------------


def test_handshake_answer_matches_rfc_example():
    """The accept key of the RFC's example nonce and the mqtt subprotocol are answered."""
    handshake = ws.parse_handshake(REQUEST)
    assert handshake is not None
    assert handshake.consumed == len(REQUEST)
    assert handshake.subprotocol == "mqtt"
    assert handshake.response == (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
        b"Sec-WebSocket-Protocol: mqtt\r\n\r\n"
    )


def test_handshake_incomplete_at_every_byte():
    """Every strict prefix of a request head is incomplete, the whole head is accepted."""
    for cut in range(len(REQUEST)):
        assert ws.parse_handshake(REQUEST[:cut]) is None
    assert ws.parse_handshake(REQUEST + b"\x82") is not None


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ((b"GET /mqtt ", b"GET /other "), 404),
        ((b"GET ", b"POST "), 405),
        ((b"HTTP/1.1\r\nHost", b"HTTP/1.0\r\nHost"), 505),
        ((b"Upgrade: websocket", b"Upgrade: h2c"), 426),
        ((b"keep-alive, Upgrade", b"keep-alive"), 400),
        ((b"Version: 13", b"Version: 8"), 426),
        ((KEY.encode(), b"short"), 400),
        ((b"Protocol: mqtt", b"Protocol: chat, superchat"), 400),
    ],
)
def test_handshake_refusals(change: tuple[bytes, bytes], status: int):
    """Requests that are not a WebSocket upgrade to /mqtt are refused with an HTTP status."""
    with pytest.raises(ws.HandshakeError) as caught:
        ws.parse_handshake(REQUEST.replace(*change))
    assert caught.value.status == status
    assert ws.refusal(caught.value).startswith(f"HTTP/1.1 {status} ".encode())


def test_handshake_without_subprotocol_and_with_old_name():
    """No subprotocol offered: accepted without one; ``mqttv3.1`` is echoed back."""
    bare = ws.parse_handshake(REQUEST.replace(b"Sec-WebSocket-Protocol: mqtt\r\n", b""))
    assert bare is not None and bare.subprotocol is None
    assert b"Sec-WebSocket-Protocol" not in bare.response
    old = ws.parse_handshake(REQUEST.replace(b"Protocol: mqtt", b"Protocol: mqttv3.1"))
    assert old is not None and old.subprotocol == "mqttv3.1"


def test_handshake_head_too_large():
    """An endless request head is refused instead of buffered."""
    with pytest.raises(ws.HandshakeError) as caught:
        ws.parse_handshake(b"GET /mqtt HTTP/1.1\r\nX: " + b"a" * ws.MAX_HANDSHAKE)
    assert caught.value.status == 431


# -- frames -----------------------------------------------------------------------------------


def test_frame_lengths_and_masking_split_at_every_byte():
    """7-bit, 16-bit and 64-bit lengths decode, whatever the read boundaries."""
    payloads = [os.urandom(5), os.urandom(300), os.urandom(70_000)]
    stream = b"".join(client_frame(ws.OP_BINARY, p, mask=os.urandom(4)) for p in payloads)
    whole = ws.FrameDecoder().feed(stream)
    assert whole == [("data", p) for p in payloads]
    small = client_frame(ws.OP_BINARY, payloads[0]) + client_frame(ws.OP_BINARY, payloads[1])
    for cut in range(len(small) + 1):
        decoder = ws.FrameDecoder()
        events = decoder.feed(small[:cut]) + decoder.feed(small[cut:])
        assert b"".join(e[1] for e in events) == payloads[0] + payloads[1]
    decoder = ws.FrameDecoder()
    events = [e for byte in small for e in decoder.feed(bytes([byte]))]
    assert b"".join(e[1] for e in events) == payloads[0] + payloads[1]


def test_fragments_and_interleaved_control_frames():
    """A fragmented binary message is delivered piece by piece; a ping between fragments is
    answered on its own."""
    stream = (
        client_frame(ws.OP_BINARY, b"ab", fin=False)
        + client_frame(ws.OP_PING, b"hi")
        + client_frame(ws.OP_CONTINUATION, b"cd", fin=False)
        + client_frame(ws.OP_CONTINUATION, b"e")
        + client_frame(ws.OP_CLOSE, struct.pack("!H", 1000) + b"bye")
    )
    assert ws.FrameDecoder().feed(stream) == [
        ("data", b"ab"),
        ("ping", b"hi"),
        ("data", b"cd"),
        ("data", b"e"),
        ("close", 1000, "bye"),
    ]


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (client_frame(ws.OP_TEXT, b"{}"), ws.CLOSE_UNSUPPORTED_DATA),
        (bytes([0x82, 0x01, 0x00]), ws.CLOSE_PROTOCOL_ERROR),  # unmasked
        (bytes([0xC2, 0x80]) + b"\0\0\0\0", ws.CLOSE_PROTOCOL_ERROR),  # RSV1
        (client_frame(0x3, b""), ws.CLOSE_PROTOCOL_ERROR),  # reserved opcode
        (client_frame(ws.OP_PING, b"", fin=False), ws.CLOSE_PROTOCOL_ERROR),
        (client_frame(ws.OP_PING, b"x" * 126), ws.CLOSE_PROTOCOL_ERROR),
        (client_frame(ws.OP_CONTINUATION, b"x"), ws.CLOSE_PROTOCOL_ERROR),
        (
            client_frame(ws.OP_BINARY, b"a", fin=False) + client_frame(ws.OP_BINARY, b"b"),
            ws.CLOSE_PROTOCOL_ERROR,
        ),
        (bytes([0x82, 0xFE, 0x00, 0x05]) + b"\0" * 9, ws.CLOSE_PROTOCOL_ERROR),  # long form
        (client_frame(ws.OP_CLOSE, b"\x03"), ws.CLOSE_PROTOCOL_ERROR),
        (client_frame(ws.OP_CLOSE, struct.pack("!H", 1005)), ws.CLOSE_PROTOCOL_ERROR),
        (client_frame(ws.OP_CLOSE, struct.pack("!H", 1000) + b"\xff"), ws.CLOSE_INVALID_PAYLOAD),
        (client_frame(ws.OP_BINARY, b"x" * 200), ws.CLOSE_TOO_BIG),
    ],
)
def test_framing_violations(frame: bytes, code: int):
    """Each violation raises FrameError with the close code to send."""
    with pytest.raises(ws.FrameError) as caught:
        ws.FrameDecoder(max_frame=100).feed(frame)
    assert caught.value.code == code


def test_server_frames_are_unmasked_with_minimal_lengths():
    """Server frames carry no mask and the shortest length form."""
    assert ws.encode_frame(ws.OP_BINARY, b"abc") == b"\x82\x03abc"
    assert ws.encode_frame(ws.OP_BINARY, b"x" * 126)[:4] == b"\x82\x7e\x00\x7e"
    assert ws.encode_frame(ws.OP_BINARY, b"x" * 65536)[:10] == b"\x82\x7f" + (65536).to_bytes(
        8, "big"
    )
    assert ws.encode_close(1002, "bad") == b"\x88\x05\x03\xeabad"


# -- the Twisted protocol with the real broker ------------------------------------------------


class WsClient:
    def __init__(self, factory: WebSocketMqttFactory, port: int) -> None:
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", "10.0.0.2", port))
        self.protocol = factory.buildProtocol(None)
        self.protocol.makeConnection(self.transport)
        self.decoder = Decoder(MQTT_3_1_1)
        self.frames = ws.FrameDecoder(binary_only=False)

    def handshake(self) -> bytes:
        self.protocol.dataReceived(REQUEST)
        head = self.transport.value()
        self.transport.clear()
        return head

    def send(self, *packets, chunk: int | None = None) -> None:
        data = b"".join(encode(p, MQTT_3_1_1) for p in packets)
        pieces = (
            [data] if chunk is None else [data[i : i + chunk] for i in range(0, len(data), chunk)]
        )
        for piece in pieces:
            self.protocol.dataReceived(client_frame(ws.OP_BINARY, piece, mask=os.urandom(4)))

    def server_frames(self, broker: Broker) -> list[tuple]:
        broker.flush()
        data = self.transport.value()
        self.transport.clear()
        # Server frames are unmasked: add a zero mask so the client-side decoder reads them.
        events = []
        offset = 0
        while offset < len(data):
            first, second = data[offset], data[offset + 1]
            n, head = second & 0x7F, 2
            if n == 126:
                n, head = struct.unpack_from("!H", data, offset + 2)[0], 4
            elif n == 127:
                n, head = struct.unpack_from("!Q", data, offset + 2)[0], 10
            assert not second & 0x80, "server frames must not be masked"
            events.append((first & 0x0F, data[offset + head : offset + head + n]))
            offset += head + n
        return events

    def packets(self, broker: Broker) -> list:
        out = []
        for opcode, payload in self.server_frames(broker):
            assert opcode == ws.OP_BINARY
            out.extend(self.decoder.feed(payload))
        return out


@pytest.fixture
def ws_setup() -> tuple[Broker, WebSocketMqttFactory, Clock]:
    clock = Clock()
    broker = Broker(clock)
    factory = WebSocketMqttFactory(broker, TransportCounter("ws"), clock)
    factory.startFactory()
    return broker, factory, clock


def test_mqtt_packets_split_across_frames_reach_the_broker(ws_setup):
    """MQTT packets cut into 3-byte frames still make a session; output is binary frames."""
    broker, factory, _ = ws_setup
    sub, pub = WsClient(factory, 1), WsClient(factory, 2)
    assert sub.handshake().startswith(b"HTTP/1.1 101 ")
    pub.handshake()
    sub.send(Connect("sub", protocol_level=4), Subscribe(1, (Sub("a/#", 1),)), chunk=3)
    connack, suback = sub.packets(broker)
    assert isinstance(connack, ConnAck) and isinstance(suback, SubAck)
    pub.send(Connect("pub", protocol_level=4), Publish("a/b", b"x" * 300, 0))
    (message,) = sub.packets(broker)
    assert (message.topic, message.payload) == ("a/b", b"x" * 300)
    assert factory.counter.open == 2


def test_close_ping_and_text_frames(ws_setup):
    """A ping gets a pong, a text frame closes with 1003, a close frame is echoed."""
    broker, factory, _ = ws_setup
    client = WsClient(factory, 3)
    client.handshake()
    client.send(Connect("c", protocol_level=4))
    client.packets(broker)
    client.protocol.dataReceived(client_frame(ws.OP_PING, b"p"))
    assert client.server_frames(broker) == [(ws.OP_PONG, b"p")]
    client.protocol.dataReceived(client_frame(ws.OP_TEXT, b"hello"))
    assert client.server_frames(broker) == [
        (ws.OP_CLOSE, struct.pack("!H", 1003) + b"MQTT needs binary frames")
    ]
    assert client.transport.disconnecting
    client.protocol.connectionLost(None)
    assert not broker.connections and factory.counter.open == 0
    other = WsClient(factory, 4)
    other.handshake()
    other.protocol.dataReceived(client_frame(ws.OP_CLOSE, struct.pack("!H", 1001)))
    assert other.server_frames(broker) == [(ws.OP_CLOSE, struct.pack("!H", 1001))]


def test_refused_handshake_and_handshake_timeout(ws_setup):
    """A bad path gets 404 and a close; a client silent during the handshake is dropped by
    the periodic sweep."""
    _, factory, clock = ws_setup
    lost = WsClient(factory, 5)
    lost.protocol.dataReceived(REQUEST.replace(b"/mqtt", b"/"))
    assert lost.transport.value().startswith(b"HTTP/1.1 404 Not Found\r\n")
    assert lost.transport.disconnecting
    silent = WsClient(factory, 6)
    silent.protocol.dataReceived(b"GET /mqtt HTTP/1.1\r\n")
    clock.advance(5)
    assert not silent.transport.disconnecting
    clock.advance(6)
    assert silent.transport.disconnecting


def test_mqtt_close_sends_close_frame(ws_setup):
    """When the broker closes the MQTT connection (protocol violation), the client gets its
    bytes and a close frame."""
    broker, factory, _ = ws_setup
    client = WsClient(factory, 7)
    client.handshake()
    client.send(Connect("c", protocol_level=4))
    client.packets(broker)
    client.protocol.dataReceived(client_frame(ws.OP_BINARY, b"\x00\x00"))  # reserved type 0
    frames = client.server_frames(broker)
    assert frames[-1] == (ws.OP_CLOSE, struct.pack("!H", 1000))
    assert client.transport.disconnecting


# -- end to end with paho ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def edge(edge_redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    ca = Authority(tmp_path_factory.mktemp("wstls"))
    server = ca.issue("localhost", server=True, stem="server")
    env = {
        "EDGE_ALLOW_ANONYMOUS": "1",
        "EDGE_WS_PORT": str(free_port()),
        "EDGE_TLS_PORT": str(free_port()),
        "EDGE_WSS_PORT": str(free_port()),
        "EDGE_TLS_CERT": str(server.cert),
        "EDGE_TLS_KEY": str(server.key),
    }
    with running_edge(edge_redis_url, f"ws{uuid.uuid4().hex[:8]}:", env) as running:
        running.ws_port = int(env["EDGE_WS_PORT"])  # type: ignore[attr-defined]
        running.tls_port = int(env["EDGE_TLS_PORT"])  # type: ignore[attr-defined]
        running.ca = ca  # type: ignore[attr-defined]
        yield running


def connect(
    edge: Edge, clients: list[Client], client_id: str, protocol: int, transport: str
) -> Client:
    if transport == "ws":
        client = Client(edge, client_id, protocol, transport="websockets")
        client.client.ws_set_options(path="/mqtt")
        client.port = edge.ws_port  # type: ignore[attr-defined]
    else:
        client = Client(edge, client_id, protocol)
        if transport == "tls":
            client.client.tls_set(ca_certs=str(edge.ca.path))  # type: ignore[attr-defined]
            client.port = edge.tls_port  # type: ignore[attr-defined]
    clients.append(client)
    assert client.connect(None, None) == 0
    return client


@pytest.mark.e2e
@pytest.mark.parametrize("protocol", [mqtt.MQTTv311, mqtt.MQTTv5])
def test_paho_over_websocket_meets_tcp_and_tls(edge: Edge, clients: list[Client], protocol: int):
    """paho over WebSocket exchanges QoS 0, 1 and 2 messages with clients on TCP and TLS."""
    tag = uuid.uuid4().hex[:6]
    on_ws = connect(edge, clients, f"ws-{tag}", protocol, "ws")
    on_tcp = connect(edge, clients, f"tcp-{tag}", protocol, "tcp")
    on_tls = connect(edge, clients, f"tls-{tag}", protocol, "tls")
    assert on_ws.subscribe(f"{tag}/#", 2) == [2]
    assert on_tls.subscribe(f"{tag}/to-tls", 2) == [2]
    for qos in (0, 1, 2):
        on_tcp.publish(f"{tag}/from-tcp/{qos}", f"q{qos}".encode() * 1000, qos=qos)
        message = on_ws.next_message()
        assert (message.topic, message.payload, message.qos) == (
            f"{tag}/from-tcp/{qos}",
            f"q{qos}".encode() * 1000,
            qos,
        )
    on_ws.publish(f"{tag}/to-tls", b"over ws", qos=1)
    assert on_tls.next_message().payload == b"over ws"
    assert on_ws.next_message().payload == b"over ws"  # its own subscription matches too
