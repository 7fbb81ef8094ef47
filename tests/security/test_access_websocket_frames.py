"""M9: WebSocket frames are buffered in linear time before authentication, and a frame before
CONNECT is capped well below the packet size. The exploit: one 1 MiB frame sent in 100-byte
reads re-copied the whole buffer on every read (quadratic CPU for one unauthenticated
socket)."""

from __future__ import annotations

import os
import struct
import time

from twisted.internet.task import Clock

from edge.mqtt.broker import Broker
from edge.mqtt.packets import ConnAck, Connect
from edge.transports import rfc6455 as ws
from edge.transports.tcp import TransportCounter
from edge.transports.websocket import PRE_CONNECT_MAX_FRAME, WebSocketMqttFactory
from tests.edge.test_transports_websocket import WsClient, client_frame


def test_a_large_frame_in_small_reads_costs_linear_time():
    """A 4 MiB frame fed in 100-byte reads decodes in well under two seconds (about 0.1 s;
    the quadratic buffer took about 17 s, 0.47 s for 1 MiB as the review measured)."""
    size = 4 << 20
    payload = os.urandom(size)
    # A zero mask: the payload goes on the wire as it is (client_frame masks byte by byte).
    frame = struct.pack("!BBQ", 0x80 | ws.OP_BINARY, 0x80 | 127, size) + b"\0" * 4 + payload
    decoder = ws.FrameDecoder(max_frame=size)
    events = []
    started = time.perf_counter()
    for i in range(0, len(frame), 100):
        events.extend(decoder.feed(frame[i : i + 100]))
    elapsed = time.perf_counter() - started
    assert events == [("data", payload)]
    assert elapsed < 2.0, elapsed


def test_frames_split_at_every_byte_boundary():
    """A stream of control frames, fragments and the three length forms decodes the same
    whatever the read boundaries: two pieces cut anywhere, or one byte at a time."""
    payloads = [os.urandom(5), os.urandom(300), os.urandom(70_000)]
    stream = (
        client_frame(ws.OP_BINARY, payloads[0], fin=False)
        + client_frame(ws.OP_PING, b"hi")
        + client_frame(ws.OP_CONTINUATION, payloads[1], fin=False, mask=os.urandom(4))
        + client_frame(ws.OP_PONG, b"")
        + client_frame(ws.OP_CONTINUATION, payloads[2], mask=os.urandom(4))
        + client_frame(ws.OP_CLOSE, struct.pack("!H", 1000) + b"bye")
    )
    expected = [
        ("data", payloads[0]),
        ("ping", b"hi"),
        ("data", payloads[1]),
        ("pong", b""),
        ("data", payloads[2]),
        ("close", 1000, "bye"),
    ]
    assert ws.FrameDecoder().feed(stream) == expected
    head = stream[:400]  # the first frames, and the head of the 70,000-byte one
    for cut in range(len(head) + 1):
        decoder = ws.FrameDecoder()
        assert decoder.feed(stream[:cut]) + decoder.feed(stream[cut:]) == expected, cut
    for cut in range(len(stream) - 20, len(stream) + 1):
        decoder = ws.FrameDecoder()
        assert decoder.feed(stream[:cut]) + decoder.feed(stream[cut:]) == expected, cut
    decoder = ws.FrameDecoder()
    assert [e for byte in stream for e in decoder.feed(bytes([byte]))] == expected


def test_a_too_large_frame_is_refused_from_its_head():
    """The frame's length is checked when its head arrives, before its payload is kept."""
    decoder = ws.FrameDecoder(max_frame=1000)
    frame = client_frame(ws.OP_BINARY, b"x" * 2000)
    try:
        decoder.feed(frame[:10])
    except ws.FrameError as exc:
        assert exc.code == ws.CLOSE_TOO_BIG
    else:
        raise AssertionError("a frame over max_frame was accepted")


def test_frames_before_connect_are_capped_below_the_packet_size():
    """Before CONNECT a frame over PRE_CONNECT_MAX_FRAME closes the socket (1009) even though
    the broker accepts 1 MiB packets; once connected, a frame of that size is accepted."""
    clock = Clock()
    broker = Broker(clock)
    factory = WebSocketMqttFactory(broker, TransportCounter("ws"), clock)
    big = PRE_CONNECT_MAX_FRAME + 1024
    assert broker.config.max_packet_size > big

    early = WsClient(factory, 1)
    early.handshake()
    early.protocol.dataReceived(client_frame(ws.OP_BINARY, b"\x10" + b"\0" * big)[:64])
    frames = early.server_frames(broker)
    assert frames[-1][0] == ws.OP_CLOSE
    assert struct.unpack("!H", frames[-1][1][:2])[0] == ws.CLOSE_TOO_BIG
    assert early.transport.disconnecting

    late = WsClient(factory, 2)
    late.handshake()
    late.send(Connect("c", protocol_level=4))
    (connack,) = late.packets(broker)
    assert isinstance(connack, ConnAck) and connack.reason_code == 0
    # A PINGREQ followed by padding that the MQTT layer reads as the start of a packet: the
    # frame itself must pass the WebSocket layer.
    late.protocol.dataReceived(client_frame(ws.OP_BINARY, b"\xc0\x00" * (big // 2)))
    assert not any(op == ws.OP_CLOSE for op, _ in late.server_frames(broker))
