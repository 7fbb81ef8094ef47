"""H10: MQTT application clients (API keys of users with access.mqtt_application) reach only
the devices of their user's data scope, and do not outlive what admitted them. The exploit:
any such key subscribed to `#` and saw every department's traffic (registration secrets
included), and stayed connected after its user was disabled, lost the permission, or the key
was revoked or expired."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from tests.security.access_edge import Mqtt
from tests.support.waiting import wait_for
from tests.system.conftest import Org, make_device, make_product
from webapp.devices import actions as device_actions
from webapp.system import actions as system_actions

APP = ("access.mqtt_application",)
NOT_AUTHORIZED = 0x87
ADMINISTRATIVE_ACTION = 0x98


def setup(org: Org, scope: str = "department", expires=None):
    """Products and devices of departments A and B, an operator of A with the permission,
    and the operator's API key; returns (operator, key id, key)."""
    for dept, name in ((org.a, "a"), (org.b, "b")):
        product = make_product(f"p{name}", dept)
        for i in (1, 2):
            _device, _secret = device_actions.create_device(
                acting_user=None, product=product, identifier=f"{name}{i}", department=dept,
                secret=f"secret-{name}{i}")
    operator = org.user("op-a", org.a, APP, scope=scope)
    api_key, key = system_actions.create_api_key(acting_user=operator, user=operator,
                                                 name="mqtt", expires=expires)
    return operator, api_key.prefix, key


def device(mqtt_clients, name: str) -> Mqtt:
    client = mqtt_clients(f"dev-{name}")
    assert client.connect(name, f"secret-{name}") == 0
    return client


def test_a_scoped_operators_app_key_sees_only_its_departments_devices(edge, mqtt_clients):
    """The review's exploit: `#`, `/v1/devices/+/…` and B's devices are refused to A's
    operator; B's device data never arrives; A's device data does."""
    _operator, key_id, key = setup(Org())
    app = mqtt_clients("app")
    assert app.connect(f"app:{key_id}", key) == 0
    for topic in ("#", "+/#", "/v1/devices/+/datas", "/v1/devices/#", "/v1/devices/b1/datas",
                  "$share/g/#", "/v1/devices/b1/#"):
        assert app.subscribe(topic) == [NOT_AUTHORIZED], topic
    assert app.subscribe("/v1/devices/a1/#") == [1]

    b1 = device(mqtt_clients, "b1")
    b1.publish("/v1/devices/b1/datas", {"devices": []})
    assert app.quiet() == []
    a1 = device(mqtt_clients, "a1")
    a1.publish("/v1/devices/a1/datas", {"devices": []})
    assert "/v1/devices/a1/datas" in {m.topic for m in app.quiet(2)}
    app.publish("/v1/devices/a1/command", {"cmd": "x"})
    assert app.acks.get(timeout=5) == NOT_AUTHORIZED  # publishing needs a rule


def test_an_operator_who_sees_everything_keeps_the_broker_wide_subscription(edge, mqtt_clients):
    """A user whose role's scope is `all` still subscribes to `#` and hears every device."""
    _operator, key_id, key = setup(Org(), scope="all")
    app = mqtt_clients("app")
    assert app.connect(f"app:{key_id}", key) == 0
    assert app.subscribe("#") == [1]
    device(mqtt_clients, "b1").publish("/v1/devices/b1/datas", {"devices": []})
    assert "/v1/devices/b1/datas" in {m.topic for m in app.quiet(2)}


def test_disabling_the_user_ends_the_app_client(edge, mqtt_clients, admin_user):
    """Disabling the key's user disconnects its connected client (0x98) and refuses it."""
    operator, key_id, key = setup(Org())
    app = mqtt_clients("app")
    assert app.connect(f"app:{key_id}", key) == 0
    system_actions.update_user(acting_user=admin_user, user=operator, data={"is_active": False})
    assert app.disconnected() == ADMINISTRATIVE_ACTION
    again = mqtt_clients("app-again")
    assert again.connect(f"app:{key_id}", key) != 0


def test_losing_the_permission_through_the_role_ends_the_app_client(edge, mqtt_clients):
    """Removing access.mqtt_application from the user's role disconnects the client."""
    operator, key_id, key = setup(Org())
    app = mqtt_clients("app")
    assert app.connect(f"app:{key_id}", key) == 0
    operator.roles.first().permissions.clear()
    assert app.disconnected() == ADMINISTRATIVE_ACTION


def test_a_narrower_scope_or_a_revoked_key_ends_the_app_client(edge, mqtt_clients, admin_user):
    """A role moved from `all` to `department` republishes the key (the client goes); a
    revoked key ends its client at once."""
    org = Org()
    operator, key_id, key = setup(org, scope="all")
    app = mqtt_clients("app")
    assert app.connect(f"app:{key_id}", key) == 0
    assert app.subscribe("#") == [1]
    role = operator.roles.first()
    role.data_scope = "department"
    role.save()
    assert app.disconnected() == ADMINISTRATIVE_ACTION
    narrowed = mqtt_clients("app-narrowed")
    assert narrowed.connect(f"app:{key_id}", key) == 0
    assert narrowed.subscribe("#") == [NOT_AUTHORIZED]
    system_actions.revoke_api_key(api_key=operator.api_keys.get(prefix=key_id))
    assert narrowed.disconnected() == ADMINISTRATIVE_ACTION


def test_a_device_leaving_the_scope_ends_the_app_client_that_follows_it(edge, mqtt_clients):
    """A device moved to department B while A's operator follows it: the client goes."""
    org = Org()
    _operator, key_id, key = setup(org)
    app = mqtt_clients("app")
    assert app.connect(f"app:{key_id}", key) == 0
    assert app.subscribe("/v1/devices/a2/datas") == [1]
    from webapp.devices.models import Device

    device_actions.update_device(device=Device.objects.get(identifier="a2"),
                                 data={"department": org.b})
    assert app.disconnected() == ADMINISTRATIVE_ACTION


def test_an_app_client_is_ended_when_its_key_expires(edge, mqtt_clients):
    """Expiry is checked on the live connection, not only at CONNECT."""
    _operator, key_id, key = setup(Org(), expires=timezone.now() + timedelta(seconds=3))
    app = mqtt_clients("app")
    assert app.connect(f"app:{key_id}", key) == 0
    assert app.disconnected(timeout=10) == ADMINISTRATIVE_ACTION


def test_devices_created_by_the_user_are_in_a_self_scope(edge, mqtt_clients):
    """A user whose scope is their own records reaches the devices they created only."""
    org = Org()
    operator = org.user("maker", org.a, APP, scope="self")
    product = make_product("pm", org.a)
    make_device("mine", product, created_by=operator)
    make_device("theirs", product, department=org.a)
    api_key, key = system_actions.create_api_key(acting_user=operator, user=operator, name="m")
    app = mqtt_clients("app")
    assert app.connect(f"app:{api_key.prefix}", key) == 0
    assert wait_for(lambda: app.subscribe("/v1/devices/mine/#") == [1])
    assert app.subscribe("/v1/devices/theirs/#") == [NOT_AUTHORIZED]
