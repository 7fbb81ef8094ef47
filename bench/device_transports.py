"""HTTP posts and CoAP messages against the MQTT path, on one edge (docs/performance.md).

``python -m edge`` with its HTTP device API and CoAP listener, real Redis; devices of an
``http``, a ``coap`` and an ``mqtt`` product written to Redis as the webapp publishes them.
Load generators (``bench._transport_loadgen``, several processes) send the same ``datas``
message over each transport in turn, each device keeping ``window`` messages unanswered:
pipelined HTTP/1.1 posts on keep-alive connections, CoAP Confirmable POSTs, MQTT QoS 1
publishes. Reported per transport: accepted messages per second end to end (answered with
success, which the edge does only once the message is in the uplink stream; the stream is
then counted to check it), p50/p99 latency under that load and unloaded (one device, one
message at a time), and the edge's CPU seconds per 1,000 messages (``/proc/<pid>/stat``).

    REDIS_URL=redis://127.0.0.1:6379/0 python -m bench device-transports [--small]
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from bench import benchmark
from edge.crypto import encrypt_secret

from ._transport_loadgen import ACCEPTED, datas
from .edge_support import Broker, LoadGen, cpu_seconds, edge, free_port, save, wait_port

SECRET_KEY = "bench-transports-secret-key"
DEVICE_SECRET = "bench-device-secret"
TRANSPORTS = ("http", "coap", "mqtt")
MODEL = {
    "services": {
        "env": {
            "properties": {
                "temperature": {"datatype": "decimal"},
                "humidity": {"datatype": "int"},
            }
        }
    }
}


class TransportLoad(LoadGen):
    """One ``bench._transport_loadgen`` process."""

    module = "bench._transport_loadgen"

    def go(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()


def device_name(transport: str, index: int) -> str:
    return f"bench-{transport}-{index}"


def register(broker: Broker, per_transport: int) -> None:
    """A product per transport (its ``protocol`` admits only that transport) and its devices,
    as webapp publishes them (secret encrypted with edge.crypto)."""
    r = broker.extra["redis"]
    prefix = broker.extra["prefix"]
    secret = encrypt_secret(DEVICE_SECRET, SECRET_KEY)
    pipe = r.pipeline(transaction=False)
    for transport in TRANSPORTS:
        pipe.hset(
            f"{prefix}prod:bench-{transport}",
            mapping={"model": json.dumps(MODEL), "type": "common", "protocol": transport},
        )
        for i in range(per_transport):
            pipe.hset(
                f"{prefix}dev:{device_name(transport, i)}",
                mapping={
                    "product": f"bench-{transport}",
                    "secret": secret,
                    "status": "activated",
                    "node_type": "direct",
                    "gateway": "",
                },
            )
    pipe.execute()


def stored_data_events(broker: Broker) -> dict[str, int]:
    """``data`` events per product in the uplink stream; the stream is emptied after (so that
    Redis does not hold every run's messages)."""
    r = broker.extra["redis"]
    key = f"{broker.extra['prefix']}uplink"
    counts: dict[str, int] = {}
    after = "-"
    while True:
        entries = r.xrange(key, after, "+", count=1000)
        if not entries:
            break
        for _id, fields in entries:
            for event in orjson.loads(fields[b"b"]):
                if event.get("t") == "data":
                    counts[event["prod"]] = counts.get(event["prod"], 0) + 1
        after = "(" + entries[-1][0].decode()
    r.delete(key)
    return counts


def udp_receive_buffer_drops() -> int:
    """Datagrams the kernel dropped because a socket's receive buffer was full (all UDP
    sockets of the machine: a CoAP figure is only as good as this is small)."""
    lines = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines()]
    names, values = [line for line in lines if line[0] == "Udp:"][:2]
    return int(values[names.index("RcvbufErrors")])


def percentile(sorted_values: list[int], fraction: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, int(len(sorted_values) * fraction))
    return round(sorted_values[index] / 1000, 2)


def run_transport(
    broker: Broker,
    transport: str,
    port: int,
    groups: list[list[str]],
    window: int,
    duration: float,
    count: int = 0,
) -> dict[str, Any]:
    """One timed run: every generator ready (connected, one warm-up message per device
    answered), then ``go`` to all; edge CPU read around the whole run, drain included."""
    generators = [
        TransportLoad(
            transport,
            "--port",
            str(port),
            "--devices",
            ",".join(group),
            "--secret",
            DEVICE_SECRET,
            "--window",
            str(window),
            "--duration",
            str(duration),
            "--count",
            str(count),
        )
        for group in groups
    ]
    try:
        ready = [g.read(120) for g in generators]
        cpu_before = cpu_seconds(broker.pid)
        drops_before = udp_receive_buffer_drops()
        for g in generators:
            g.go()
        reports = [g.read(duration + 120) for g in generators]
        edge_cpu = cpu_seconds(broker.pid) - cpu_before
        drops = udp_receive_buffer_drops() - drops_before
    finally:
        for g in generators:
            g.close()
    start = min(r["start"] for r in reports)
    end = max(r["end"] for r in reports)
    statuses: dict[str, int] = {}
    for report in reports:
        for status, n in report["statuses"].items():
            statuses[status] = statuses.get(status, 0) + n
    accepted = statuses.get(ACCEPTED[transport], 0)
    latencies = sorted(x for r in reports for x in r["latencies_us"])
    warm = sum(r["warmup"]["answered"] for r in ready)
    in_stream = stored_data_events(broker).get(f"bench-{transport}", 0)
    if accepted == 0:
        raise RuntimeError(f"{transport}: nothing accepted ({statuses})")
    if in_stream < accepted + warm:
        raise RuntimeError(
            f"{transport}: {accepted + warm} messages answered, {in_stream} in the uplink stream"
        )
    return {
        "accepted_per_second": round(accepted / (end - start)),
        "p50_ms": percentile(latencies, 0.50),
        "p99_ms": percentile(latencies, 0.99),
        "edge_cpu_s_per_1000": round(1000 * edge_cpu / accepted, 3),
        "accepted": accepted,
        "answers": statuses,
        "in_uplink_stream": in_stream,
        "warmup_messages": warm,
        "seconds": round(end - start, 2),
        "edge_cpu_seconds": round(edge_cpu, 2),
        "loadgen_cpu_seconds": round(sum(r["cpu"] for r in reports), 2),
        "coap_retransmitted": sum(r["retransmitted"] for r in reports),
        "udp_receive_buffer_drops": drops,
    }


@contextmanager
def transports_edge(devices: int) -> Iterator[tuple[Broker, dict[str, int]]]:
    """An edge with MQTT, the HTTP device API and CoAP on free ports, and ``devices`` devices
    of each transport's product; yields it and the port of each transport."""
    ports = {"http": free_port(), "coap": free_port()}
    env = {
        "DJANGO_SECRET_KEY": SECRET_KEY,
        "EDGE_HTTP_PORT": str(ports["http"]),
        "EDGE_COAP_PORT": str(ports["coap"]),
        # The per-device publish budget (100/s by default) would refuse the load; what is
        # measured here is the cost of a message on each transport, not the budget.
        "EDGE_PUBLISH_RATE": "1000000000",
        "EDGE_PUBLISH_BURST": "1000000000",
        "EDGE_PUBLISH_BYTES_RATE": "100000000000",
        "EDGE_PUBLISH_BYTES_BURST": "100000000000",
    }
    with edge(env) as broker:
        wait_port(ports["http"], broker.process)
        register(broker, devices)
        yield broker, {**ports, "mqtt": broker.port}


@benchmark("device-transports")
def device_transports(small: bool) -> dict[str, Any]:
    """Transports alternate within each round so that the other load of a shared machine hits
    them alike; the best round is the figure and every round is kept."""
    duration, rounds, processes, per_process, window = (
        (2.0, 1, 2, 4, 2) if small else (10.0, 3, 2, 64, 2)
    )
    duration = float(os.environ.get("BENCH_DURATION") or duration)
    rounds = int(os.environ.get("BENCH_ROUNDS") or rounds)
    per_process = int(os.environ.get("BENCH_DEVICES") or processes * per_process) // processes
    window = int(os.environ.get("BENCH_WINDOW") or window)
    idle_duration = 0.5 if small else 2.0
    results: dict[str, Any] = {
        "duration_s": duration,
        "rounds": rounds,
        "loadgen_processes": processes,
        "devices_per_process": per_process,
        "window_per_device": window,
        "payload_bytes": len(datas(device_name("http", 0))),
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
    }
    runs: dict[str, list[dict[str, Any]]] = {t: [] for t in TRANSPORTS}
    groups = {
        t: [
            [device_name(t, k * per_process + i) for i in range(per_process)]
            for k in range(processes)
        ]
        for t in TRANSPORTS
    }
    # A fresh edge for each round: the CoAP layer remembers every Confirmable request for
    # 247 s to answer duplicates, at most 2,048 per address and 200,000 per node, and answers
    # 5.03 past that (docs/performance.md), so one edge cannot take several rounds at full
    # speed. The unloaded runs send at most 1,000 messages from their one device.
    devices = processes * per_process
    for _ in range(rounds):
        with transports_edge(devices) as (broker, ports):
            for transport in TRANSPORTS:
                runs[transport].append(
                    run_transport(
                        broker, transport, ports[transport], groups[transport], window, duration
                    )
                )
    idle: dict[str, Any] = {}
    with transports_edge(devices) as (broker, ports):
        for transport in TRANSPORTS:
            one = [groups[transport][0][:1]]
            alone = run_transport(
                broker, transport, ports[transport], one, 1, idle_duration, 200 if small else 1000
            )
            idle[transport] = {key: alone[key] for key in ("p50_ms", "p99_ms", "accepted")}
    for transport, done in runs.items():
        results[transport] = {
            **max(done, key=lambda r: r["accepted_per_second"]),
            "all_rounds_per_second": [r["accepted_per_second"] for r in done],
            "all_rounds_cpu_s_per_1000": [r["edge_cpu_s_per_1000"] for r in done],
        }
    results["unloaded_one_at_a_time"] = idle
    mqtt = results["mqtt"]
    results["relative_to_mqtt"] = {
        transport: {
            "rate": round(mine["accepted_per_second"] / mqtt["accepted_per_second"], 2),
            "edge_cpu_per_message": round(
                mine["edge_cpu_s_per_1000"] / mqtt["edge_cpu_s_per_1000"], 2
            ),
        }
        for transport, mine in ((t, results[t]) for t in ("http", "coap"))
    }
    results["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    return save("device-transports-small" if small else "device-transports", results)
