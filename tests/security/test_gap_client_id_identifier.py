"""Known gap closed (opt-in): a device could connect with any client id not owned by another
identity, so it could squat the client id another device will use (H1's refusal then keeps
that device out while the squatter's session lasts). With
`EDGE_CLIENT_ID_MUST_BE_IDENTIFIER=1` a device must use its identifier as client id: another
one is refused (MQTT 5 0x85, 3.1.1 return code 2) before any session is touched, so the
squat is impossible. Clients without a device identity (application keys, anonymous) are not
concerned; the default (off) keeps existing fleets working."""

from __future__ import annotations

import pytest

from edge.mqtt.broker import BrokerConfig
from edge.mqtt.packets import MQTT_3_1_1, MQTT_5

from .mqtt_broker import client, connected, make_broker

STRICT = BrokerConfig(client_id_must_be_identity=True)


@pytest.mark.parametrize(("version", "code"), [(MQTT_5, 0x85), (MQTT_3_1_1, 2)])
def test_a_device_cannot_squat_another_client_id(version: int, code: int):
    broker, _, _ = make_broker(STRICT)
    squatter = client(broker, version)
    connack = squatter.connect("dev-victim", username="dev-attacker", clean_start=False)
    assert connack.reason_code == code and squatter.closed
    assert "dev-victim" not in broker.sessions
    assert broker.refusals["client_id"] == 1
    victim = client(broker, version)
    assert victim.connect("dev-victim", username="dev-victim").reason_code == 0
    assert not victim.closed


def test_an_empty_client_id_is_refused_too():
    broker, _, _ = make_broker(STRICT)
    device = client(broker, MQTT_5)
    assert device.connect("", username="dev-a").reason_code == 0x85


def test_clients_without_a_device_identity_keep_any_client_id():
    broker, _, _ = make_broker(STRICT)
    connected(broker, "dashboard-1", "app:k1", MQTT_5)
    connected(broker, "anon-1", None, MQTT_5)


def test_off_by_default_and_set_from_the_environment():
    broker, _, _ = make_broker()
    connected(broker, "any-cid", "dev-a", MQTT_5)
    assert BrokerConfig.from_env({"EDGE_CLIENT_ID_MUST_BE_IDENTIFIER": "1"}) \
        .client_id_must_be_identity is True
    assert BrokerConfig.from_env({"EDGE_CLIENT_ID_MUST_BE_IDENTIFIER": "0"}) \
        .client_id_must_be_identity is False
    with pytest.raises(ValueError, match="EDGE_CLIENT_ID_MUST_BE_IDENTIFIER"):
        BrokerConfig.from_env({"EDGE_CLIENT_ID_MUST_BE_IDENTIFIER": "maybe"})
