"""Edge throughput against Mosquitto, both started here, load generator on the same machine
(docs/performance.md):

(a) QoS 0 fan-in: 4 publishers → 1 subscriber, 64-byte payloads;
(b) QoS 0 fan-out: 1 publisher → 10 subscribers;
(c) QoS 1 fan-in: 4 publishers (100 messages in flight each) → 1 subscriber that acks.

Messages per second are counted at the subscribers over the steady part of the run.

    REDIS_URL=redis://127.0.0.1:6379/0 python -m bench edge-throughput [--small]
"""

from __future__ import annotations

import os
import time
from contextlib import ExitStack
from typing import Any

from bench import benchmark

from .edge_support import Broker, LoadGen, cpu_seconds, edge, mosquitto, rate_between, save

SCENARIOS = {
    "a_fan_in_qos0": {"publishers": 4, "subscribers": 1, "qos": 0},
    "b_fan_out_qos0": {"publishers": 1, "subscribers": 10, "qos": 0},
    "c_fan_in_qos1": {"publishers": 4, "subscribers": 1, "qos": 1},
}


def run_scenario(
    broker: Broker, name: str, spec: dict[str, int], duration: float, warmup: float
) -> dict[str, Any]:
    topic = f"bench/{name}"
    common = ["--port", str(broker.port), "--topic", topic, "--qos", str(spec["qos"])]
    sub = LoadGen("sub", *common, "--connections", str(spec["subscribers"]))
    try:
        sub.read(30)  # ready: subscribed
        time.sleep(0.2)
        cpu_before = cpu_seconds(broker.pid)
        pub = LoadGen(
            "pub",
            *common,
            "--connections",
            str(spec["publishers"]),
            "--duration",
            str(duration),
            "--window",
            "100",
        )
        try:
            pub.read(30)  # started
            sent = pub.read(duration + 60)
        finally:
            pub.close()
        broker_cpu = cpu_seconds(broker.pid) - cpu_before
        sub.stop()  # the subscriber reports once nothing more arrives for a second
        result = sub.read(30)
    finally:
        sub.close()
    rate = rate_between(result["samples"], sent["start"] + warmup, sent["end"])
    expected = sent["sent"] * spec["subscribers"]
    return {
        "delivered_per_second": round(rate),
        "published": sent["sent"],
        "delivered": result["received"],
        "lost": max(0, expected - result["received"]),
        "broker_cpu_seconds": round(broker_cpu, 2),
        "run_seconds": round(sent["end"] - sent["start"], 2),
        "loadgen_cpu_seconds": round(sent["cpu"] + result["cpu"], 2),
    }


@benchmark("edge-throughput")
def throughput(small: bool) -> dict[str, Any]:
    """Each scenario runs ``rounds`` times on each broker, alternating brokers so that the
    other load of a shared machine hits them alike; the best round is the figure."""
    duration, warmup, rounds = (2.0, 0.5, 1) if small else (10.0, 2.0, 3)
    results: dict[str, Any] = {
        "duration_s": duration,
        "warmup_s": warmup,
        "rounds": rounds,
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
    }
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
    with ExitStack() as stack:
        brokers = {
            "mosquitto": stack.enter_context(mosquitto()),
            "edge": stack.enter_context(edge({"EDGE_ALLOW_ANONYMOUS": "1"})),
        }
        if not small:
            brokers["edge_2_workers"] = stack.enter_context(
                edge({"EDGE_ALLOW_ANONYMOUS": "1"}, workers=2)
            )
        for _ in range(rounds):
            for scenario, spec in SCENARIOS.items():
                for who, broker in brokers.items():
                    run = run_scenario(broker, scenario, spec, duration, warmup)
                    runs.setdefault(who, {}).setdefault(scenario, []).append(run)
    for who, scenarios in runs.items():
        results[who] = {
            scenario: {
                **max(done, key=lambda r: r["delivered_per_second"]),
                "all_rounds_per_second": [r["delivered_per_second"] for r in done],
            }
            for scenario, done in scenarios.items()
        }
    ratios = {}
    for who in runs:
        if who == "mosquitto":
            continue
        for scenario in SCENARIOS:
            base = results["mosquitto"][scenario]["delivered_per_second"] or 1
            mine = results[who][scenario]["delivered_per_second"]
            ratios[f"{who}/{scenario}"] = round(mine / base, 2)
    results["ratio_to_mosquitto"] = ratios
    results["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    for who in runs:
        for scenario in SCENARIOS:
            if results[who][scenario]["delivered"] == 0:
                raise RuntimeError(f"{who} delivered nothing in {scenario}")
    return save("edge-throughput-small" if small else "edge-throughput", results)
