"""What the raw transports read of their settings and of Redis: the budgets from the
environment, and the binary codecs of the tcp and udp products (edge.transports.rawcommon)."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from edge.bus.keys import Keys
from edge.transports.rawcommon import CodecCatalog, RawConfig
from tests.support.fake_redis import FakeRedis

from .test_frames_codec import EXAMPLES


def test_settings_come_from_the_environment_with_defaults() -> None:
    assert RawConfig.from_env({}) == RawConfig()
    assert (RawConfig().tcp_port, RawConfig().udp_port) == (18901, 18902)
    config = RawConfig.from_env(
        {
            "EDGE_TCP_PORT": "0",
            "EDGE_UDP_PORT": "0",
            "EDGE_TCP_MAX_LINE": "128",
            "EDGE_UDP_RATE": "2.5",
        }
    )
    assert (config.tcp_port, config.udp_port, config.max_line, config.udp_rate) == (0, 0, 128, 2.5)
    for bad in (
        {"EDGE_TCP_MAX_LINE": "-1"},
        {"EDGE_TCP_IDLE_TIMEOUT": "-5"},
        {"EDGE_UDP_MAX_DATAGRAM": "10"},
        {"EDGE_TCP_PORT": "x"},
    ):
        with pytest.raises(ValueError):
            RawConfig.from_env(bad)


def test_the_catalog_reads_the_codecs_of_tcp_and_udp_products() -> None:
    clock = Clock()
    redis = FakeRedis(clock)
    th = (EXAMPLES / "th-sensor-tcp.json").read_text()
    meter = (EXAMPLES / "meter-udp.json").read_text()
    redis.sync.hset("tl:prod:th", mapping={"protocol": "tcp", "codec": th})
    redis.sync.hset("tl:prod:meter", mapping={"protocol": "udp", "codec": meter})
    redis.sync.hset("tl:prod:json", mapping={"protocol": "tcp", "codec": ""})
    redis.sync.hset("tl:prod:mqtt", mapping={"protocol": "mqtt", "codec": th})
    redis.sync.hset("tl:prod:broken", mapping={"protocol": "tcp", "codec": "{"})
    redis.sync.hset("tl:dev:th", mapping={"product": "th"})  # not a product
    catalog = CodecCatalog(redis.client(), Keys("tl:"))
    loaded = catalog.load()
    redis.settle()
    assert loaded.called
    assert [c.product for c in catalog.candidates("tcp")] == ["th"]
    assert [c.product for c in catalog.candidates("udp")] == ["meter"]

    # webapp changed a product: it moves to udp; another loses its codec
    redis.sync.hset("tl:prod:th", mapping={"protocol": "udp"})
    catalog.changed("prod", "th")
    redis.sync.hset("tl:prod:meter", mapping={"codec": ""})
    catalog.changed("prod", "meter")
    catalog.changed("dev", "meter")  # a device: nothing to read
    redis.settle()
    assert catalog.candidates("tcp") == []
    assert [c.product for c in catalog.candidates("udp")] == ["th"]
