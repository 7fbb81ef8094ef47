"""L5: rotating a device's secret ends the connections made with the old one (after a
compromise, rotation alone now locks the thief out). A change that leaves the credentials as
they were keeps the device connected."""

from __future__ import annotations

from tests.security.access_edge import mqtt_clients_of
from tests.system.conftest import make_product
from webapp.devices import actions as device_actions

ADMINISTRATIVE_ACTION = 0x98


def test_rotating_the_secret_ends_the_old_secrets_connection(edge):
    """A thief connected with the old secret is disconnected (0x98) and cannot come back;
    the new secret connects."""
    device, old = device_actions.create_device(
        acting_user=None, product=make_product("thermo"), identifier="victim")
    with mqtt_clients_of(edge) as make:
        thief = make("thief")
        assert thief.connect("victim", old) == 0
        device_actions.update_device(device=device, data={"name": "Hall"})
        assert thief.quiet() == [] and thief.disconnects.empty()  # nothing changed for it

        new = device_actions.rotate_secret(device=device)
        assert thief.disconnected() == ADMINISTRATIVE_ACTION
        assert make("thief-again").connect("victim", old) != 0
        assert make("owner").connect("victim", new) == 0
    (status,) = edge.wait_for_events(
        lambda e: e["t"] == "status" and e["s"] == "offline" and e.get("reason") not in (
            "takeover", "disconnect"))
    assert status["reason"] == "credentials_changed"
