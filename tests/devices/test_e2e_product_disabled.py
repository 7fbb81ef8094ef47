"""End to end through webapp: disabling a product in the API disconnects its connected devices
at the edge and refuses them until the product is enabled again (``python -m edge``, paho)."""

from __future__ import annotations

import time
import uuid

import paho.mqtt.client as mqtt
import pytest

from tests.edge.edge_process import Client

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_disabling_a_product_in_the_api_disconnects_and_refuses_its_devices(api, thermo,
                                                                          live):
    secret = api.post("/api/v1/devices/", {"product": "thermo", "identifier": "dev-1"},
                      format="json").json()["secret"]
    made: list[Client] = []

    def connect() -> int:
        client = Client(live, f"dev-1-{uuid.uuid4().hex[:4]}", mqtt.MQTTv5)
        made.append(client)
        return client.connect("dev-1", secret)

    try:
        assert connect() == 0
        connected = made[-1]
        response = api.patch("/api/v1/products/thermo/", {"status": "disabled"}, format="json")
        assert response.status_code == 200, response.json()
        assert connected.disconnects.get(timeout=5) == 0x98
        assert connect() == 0x87
        assert "product thermo is disabled" in live.log()

        assert api.patch("/api/v1/products/thermo/", {"status": "enabled"},
                         format="json").status_code == 200
        deadline = time.monotonic() + 5
        while connect() != 0:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        for client in made:
            client.close()
