"""M7: ACL rules cannot open other devices' namespaces. The exploit: a rule `sub #` on your own
product let its devices read the whole broker, registration answers included. Refused when
the rule is saved (with the reason), and refused again by the edge for a rule already in the
registry."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from edge.crypto import encrypt_secret
from tests.edge.edge_process import Edge, running_edge
from tests.security.access_edge import mqtt_clients_of
from tests.support.slow import starts_processes

SECRET_KEY = "acl-namespaces-secret-key"
NOT_AUTHORIZED = 0x87


@pytest.mark.django_db
@pytest.mark.parametrize("topic", ["#", "+/#", "/v1/devices/+/command", "/v1/devices/#",
                                   "/+/devices/x/datas", "/v1/devices/${product}/command",
                                   "/v1/devices/other-device/datas"])
def test_a_rule_reaching_other_devices_is_refused_with_its_reason(api, thermo_payload, topic):
    """Through the API, as the review's exploit: 400 with the reason on `topic`."""
    assert api.post("/api/v1/products/", thermo_payload, format="json").status_code == 201
    response = api.post("/api/v1/acl-rules/", {"product": "thermo", "action": "sub",
                                               "topic": topic, "decision": "allow"},
                        format="json")
    assert response.status_code == 400, response.json()
    (reason,) = response.json()["errors"]["topic"]
    assert "other devices' topics" in reason


@pytest.mark.django_db
@pytest.mark.parametrize("topic", ["broadcast/#", "fleet/${product}/${device}",
                                   "/v1/devices/${device}/custom", "$SYS/#"])
def test_rules_outside_other_devices_namespaces_are_kept(api, thermo_payload, topic):
    """Topics of their own, and the device's own namespace, stay allowed."""
    assert api.post("/api/v1/products/", thermo_payload, format="json").status_code == 201
    response = api.post("/api/v1/acl-rules/", {"product": "thermo", "action": "all",
                                               "topic": topic, "decision": "allow"},
                        format="json")
    assert response.status_code == 201, response.json()


def put(r: redis.Redis, key: str, **fields: Any) -> None:
    r.hset(key, mapping=fields)


@pytest.fixture(scope="module")
@starts_processes
def edge(redis_url: str) -> Iterator[Edge]:
    """Rules written to Redis as an older webapp (or someone by hand) would: `#` and
    `/v1/devices/+/#` allowed for every device of the product."""
    prefix = f"acl{uuid.uuid4().hex[:8]}:"
    r = redis.Redis.from_url(redis_url)
    bad = [
        {"action": "all", "topic": "#", "decision": "allow"},
        {"action": "all", "topic": "/v1/devices/+/#", "decision": "allow", "priority": 5},
    ]
    model = {"services": {"env": {"properties": {"temperature": {"datatype": "decimal"}}}}}
    put(r, f"{prefix}prod:thermo", model=json.dumps(model), type="common", acl=json.dumps(bad))
    for name in ("d1", "d2"):
        put(r, f"{prefix}dev:{name}", product="thermo", status="activated", node_type="direct",
            gateway="", secret=encrypt_secret(f"secret-{name}", SECRET_KEY),
            acl=json.dumps([{"action": "sub", "topic": "/v1/devices/d2/#",
                             "decision": "allow"}]))
    r.close()
    with running_edge(redis_url, prefix, {"DJANGO_SECRET_KEY": SECRET_KEY}) as running:
        yield running


def test_a_bad_rule_in_the_registry_cannot_open_another_devices_topics(edge):
    """d1, whose product and device rules allow `#` and d2's namespace, still may neither
    subscribe to nor publish on d2's topics; the rule keeps opening other topics."""
    with mqtt_clients_of(edge) as make:
        d1, d2 = make("d1"), make("d2")
        assert d1.connect("d1", "secret-d1") == 0
        assert d2.connect("d2", "secret-d2") == 0
        for topic in ("#", "/v1/devices/d2/datas", "/v1/devices/d2/#", "/v1/devices/+/datas",
                      "+/#", "$share/g/#", "$share/g//v1/devices/d2/command"):
            assert d1.subscribe(topic) == [NOT_AUTHORIZED], topic
        assert d1.subscribe("broadcast/x") == [1]
        assert d2.subscribe("/v1/devices/d2/command") == [1]
        d2.publish("/v1/devices/d2/datas", {"devices": []})
        d1.publish("/v1/devices/d2/command", {"cmd": "reboot"})
        assert d1.acks.get(timeout=5) == NOT_AUTHORIZED
        assert d1.quiet() == []
        assert d2.quiet() == []  # no command from d1
