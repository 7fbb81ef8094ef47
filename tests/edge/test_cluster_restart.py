"""A worker killed with SIGKILL and started again under its node id (as the edge supervisor
does) delivers what was forwarded to it meanwhile to the persistent sessions it held: node B
holds a clean-session-0 subscriber, B is killed, a publisher on node A has 300 QoS 1 messages
acknowledged (forwarded to B's queue ``tl:mqtt:fwdq:{node}``), B starts again, and the
subscriber resuming its session there receives every one. Before, the new process deleted that
queue: 0 of 300 arrived."""

from __future__ import annotations

import os
import signal
import uuid

import pytest

from edge.mqtt.codec import encode
from edge.mqtt.packets import MQTT_3_1_1, Publish, SubAck, Subscribe
from edge.mqtt.packets import Subscription as Sub
from tests.support.waiting import wait_for

from .edge_process import RawClient, running_edge
from .redis_server import private_redis_server

pytestmark = [pytest.mark.e2e]

MESSAGES = 300


def test_a_restarted_worker_delivers_what_was_forwarded_to_it_while_it_was_down():
    prefix = f"rs{uuid.uuid4().hex[:8]}:"
    node_b = f"restart-{uuid.uuid4().hex[:6]}"
    env = {
        "EDGE_ALLOW_ANONYMOUS": "1",
        "DJANGO_SECRET_KEY": "restart-test-secret-key",
        "EDGE_LOG_LEVEL": "info",
    }
    with (
        private_redis_server() as url,
        running_edge(url, prefix, env) as a,
        running_edge(url, prefix, {**env, "EDGE_NODE_ID": node_b}) as b,
    ):
        subscriber = RawClient(b, "rs-sub", clean_start=False)
        subscriber.sock.sendall(encode(Subscribe(1, (Sub("rs/#", 1),)), MQTT_3_1_1))
        assert isinstance(subscriber._read()[0], SubAck)
        wait_for(lambda: b"rs/#" in a.redis.hkeys(a.key("mqtt:subs")))
        # Node A has B's filter once B's interest message reached it.
        publisher = RawClient(a, "rs-pub")
        publisher.thread.start()
        publisher.sock.sendall(encode(Publish("rs/t", b"warm-up!", qos=1, packet_id=1),
                                      MQTT_3_1_1))
        wait_for(lambda: publisher.acked == 1)
        subscriber.thread.start()
        wait_for(lambda: subscriber.received == {b"warm-up!"},
                 message=lambda: f"received {subscriber.received}; log of B: {b.log()[-1500:]}")

        os.kill(b.process.pid, signal.SIGKILL)
        b.process.wait(10)
        subscriber.close()
        publisher.sock.sendall(b"".join(
            encode(Publish("rs/t", b"%08d" % i, qos=1, packet_id=i + 2), MQTT_3_1_1)
            for i in range(MESSAGES)
        ))
        wait_for(lambda: publisher.acked == 1 + MESSAGES,
                 message=lambda: f"acked {publisher.acked}; log of A: {a.log()[-1500:]}")
        assert a.redis.llen(a.key(f"mqtt:fwdq:{node_b}")) > 0  # waiting for B

        with running_edge(url, prefix, {**env, "EDGE_NODE_ID": node_b}) as b2:
            again = RawClient(b2, "rs-sub", clean_start=False)
            assert again.connack.session_present
            again.thread.start()
            expected = {b"%08d" % i for i in range(MESSAGES)}

            def progress() -> str:
                return (f"received {len(again.received)} of {MESSAGES}; "
                        f"log of B: {b2.log()[-2000:]}")

            wait_for(lambda: len(again.received) >= MESSAGES, timeout=30, message=progress)
            assert again.received == expected and again.duplicates == 0
            assert "forwarded batches that waited for this node" in b2.log()
            assert a.redis.llen(a.key(f"mqtt:fwdq:{node_b}")) == 0
            again.close()
        publisher.close()
