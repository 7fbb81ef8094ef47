"""Cross-node forwarding under overload, on a real Redis with two ``python -m edge`` nodes (as
two workers): QoS 1 messages are published on node A faster than node B takes them (B is
stopped with SIGSTOP for a while), on a Redis of this test's own whose pub/sub output-buffer
limit is 256 KB — forwarding through a pub/sub channel lost what Redis held when it cut B's
connection there. Forwarded messages wait in B's queue, A stops reading the publisher while
that queue is over EDGE_CLUSTER_FORWARD_LIMIT, and every message arrives. The bound's details
(QoS 0 dropped and counted, publishers read again) are in test_bus_cluster.py, in memory."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from edge.mqtt.codec import encode
from edge.mqtt.packets import MQTT_3_1_1, Publish, SubAck, Subscribe
from edge.mqtt.packets import Subscription as Sub
from tests.support.waiting import wait_for

from .edge_process import RawClient, metric, running_edge
from .redis_server import private_redis_server

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MESSAGES = 20_000
PAYLOAD = 512


@pytest.fixture
def small_pubsub_redis() -> Iterator[str]:
    """A Redis that cuts a pub/sub client past 256 KB of output buffer (the default 32 MB,
    scaled to what a test can push in seconds)."""
    with private_redis_server("--client-output-buffer-limit", "pubsub", "256kb", "0", "0") as url:
        yield url


def test_qos1_published_faster_than_the_other_node_takes_it_is_not_lost(small_pubsub_redis):
    prefix = f"bp{uuid.uuid4().hex[:8]}:"
    env = {
        "EDGE_ALLOW_ANONYMOUS": "1",
        "DJANGO_SECRET_KEY": "backpressure-test-secret-key",
        "EDGE_CLUSTER_FORWARD_LIMIT": str(64 * 1024),
        # What a slow subscriber's session may queue is another bound (Broker): not this test's.
        "EDGE_MAX_QUEUED_MESSAGES": str(MESSAGES * 2),
        "EDGE_MAX_QUEUED_BYTES": str(256 << 20),
        "EDGE_LOG_LEVEL": "warn",
    }
    with (
        running_edge(small_pubsub_redis, prefix, env) as a,
        running_edge(small_pubsub_redis, prefix, env) as b,
    ):
        subscriber = RawClient(b, "bp-sub")
        subscriber.sock.sendall(encode(Subscribe(1, (Sub("bp/#", 1),)), MQTT_3_1_1))
        assert isinstance(subscriber._read()[0], SubAck)
        subscriber.thread.start()
        wait_for(lambda: b"bp/#" in a.redis.hkeys(a.key("mqtt:subs")))
        time.sleep(0.5)  # node A has B's filter (tl:mqtt:interest)

        publisher = RawClient(a, "bp-pub")
        publisher.thread.start()
        data = b"".join(
            encode(
                Publish("bp/t", b"%08d" % i + b"x" * (PAYLOAD - 8), qos=1, packet_id=i % 65535 + 1),
                MQTT_3_1_1,
            )
            for i in range(MESSAGES)
        )
        sender = threading.Thread(target=publisher.sock.sendall, args=(data,), daemon=True)
        os.kill(b.process.pid, signal.SIGSTOP)  # node B takes nothing for a while
        try:
            sender.start()
            wait_for(
                lambda: metric(a, "edge_cluster_publishers_held") >= 1,
                timeout=30,
                message=lambda: f"acked {publisher.acked}; log of A: {a.log()[-2000:]}",
            )
            time.sleep(1.0)
            # Held: A reads no more of the publisher's ~10 MB while B's queue is full.
            assert publisher.acked < MESSAGES
            waiting = a.redis.get(a.key(f"mqtt:fwdb:{b.node}"))
            # The limit, plus what the publisher's last reads held (queued all the same).
            assert waiting is not None and int(waiting) < 64 * 1024 + 1024 * 1024, waiting
        finally:
            os.kill(b.process.pid, signal.SIGCONT)
        sender.join(60)

        def progress() -> str:
            return (
                f"received {len(subscriber.received)}, acked {publisher.acked}, "
                f"log of A: {a.log()[-1500:]}\nlog of B: {b.log()[-1500:]}"
            )

        wait_for(lambda: len(subscriber.received) >= MESSAGES, timeout=60, message=progress)
        wait_for(lambda: publisher.acked >= MESSAGES, timeout=30, message=progress)
        assert len(subscriber.received) == MESSAGES and subscriber.duplicates == 0
        assert metric(a, "edge_cluster_publisher_holds_total") >= 1
        # Read again once A has seen B's queue empty (it reads the count every 50 ms).
        wait_for(lambda: metric(a, "edge_cluster_publishers_held") == 0, timeout=10)
        assert metric(b, "edge_cluster_subscriber_reconnects_total") == 0
        assert metric(b, "edge_cluster_forwarded_in_total") == MESSAGES
        assert not subscriber.closed and not publisher.closed
        subscriber.close()
        publisher.close()
