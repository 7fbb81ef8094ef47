"""C2 and issue item 2: `manage.py rotate_secrets --old-key …` moves an installation off a
leaked key. Every stored secret (device, product registration, envelope keys, notification
channel, sink credentials, rule-action secret) made under key A opens with key B afterwards
and no longer with A, the edge registry is published again, and a device still connects to an
edge running on key B with the secret it always had."""

from __future__ import annotations

import time

import pytest
from django.core.management import CommandError, call_command

from edge.crypto import (
    InvalidToken,
    decrypt_secret,
    encrypt_secret,
    generate_secret,
    new_secret_key,
)
from tests.edge.edge_process import Client, running_edge
from tests.system.conftest import make_product
from webapp.access import actions as access_actions
from webapp.access.models import DeviceKeys, ProductRegistration
from webapp.devices import actions as device_actions
from webapp.devices.models import Device
from webapp.devices.registry import republish_all
from webapp.rules.models import NotificationChannel, Rule, Sink

pytestmark = pytest.mark.django_db


@pytest.fixture
def key_a(settings):
    """The key the secrets were made with (the suite's key)."""
    return settings.SECRET_KEY


@pytest.fixture
def stored(redis_prefix, key_a):
    """One secret of every kind, encrypted with key A; returns {what: (token getter, plain)}."""
    product = make_product("rot")
    device, device_secret = device_actions.create_device(
        acting_user=None, product=product, identifier="rot-1", secret="device-secret-1")
    _registration, product_secret = access_actions.enable_registration(
        product=product)
    _keys, envelope = access_actions.set_device_keys(device=device)
    channel = NotificationChannel.objects.create(
        name="hook", channel_type="webhook", config={"url": "https://hooks.example.com/x"},
        secret_encrypted=encrypt_secret("channel-secret"))
    sink = Sink.objects.create(
        name="out", sink_type="http", config={"url": "https://sink.example.com/in"},
        credentials_encrypted=encrypt_secret('{"password": "sink-password"}'))
    rule = Rule.objects.create(
        name="r", trigger_type="property", product=product, trigger={}, actions=[
            {"type": "webhook", "url": "https://hooks.example.com/y",
             "secret_encrypted": encrypt_secret("action-secret")},
            {"type": "alarm", "name": "no secret here"}])
    return {
        "device": (lambda: Device.objects.get(pk=device.pk).secret_encrypted, device_secret),
        "registration": (lambda: ProductRegistration.objects.get(product=product)
                         .secret_encrypted, product_secret),
        **{f"envelope {name}": ((lambda name=name: getattr(
            DeviceKeys.objects.get(device=device), f"{name}_encrypted")), value)
           for name, value in envelope.items()},
        "channel": (lambda: NotificationChannel.objects.get(pk=channel.pk).secret_encrypted,
                    "channel-secret"),
        "sink": (lambda: Sink.objects.get(pk=sink.pk).credentials_encrypted,
                 '{"password": "sink-password"}'),
        "rule action": (lambda: Rule.objects.get(pk=rule.pk).actions[0]["secret_encrypted"],
                        "action-secret"),
    }


def switch_key(monkeypatch, settings) -> str:
    """The installation's new key B (DJANGO_SECRET_KEY for every process)."""
    key_b = new_secret_key()
    monkeypatch.setenv("DJANGO_SECRET_KEY", key_b)
    settings.SECRET_KEY = key_b
    return key_b


def opens(token: str, key: str) -> str | None:
    try:
        return decrypt_secret(token, key)
    except InvalidToken:
        return None


def test_every_secret_moves_to_the_new_key(stored, key_a, monkeypatch, settings, capsys):
    for what, (token, plain) in stored.items():
        assert opens(token(), key_a) == plain, what
    key_b = switch_key(monkeypatch, settings)
    call_command("rotate_secrets", f"--old-key={key_a}", "--no-republish")
    for what, (token, plain) in stored.items():
        assert opens(token(), key_b) == plain, what
        assert opens(token(), key_a) is None, what
    assert "8 secret(s) re-encrypted" in capsys.readouterr().out
    # Again (after an interruption, say): nothing left to do, nothing broken.
    call_command("rotate_secrets", f"--old-key={key_a}", "--no-republish")
    assert "0 secret(s) re-encrypted with the current key, 8 already used it" in \
        capsys.readouterr().out
    assert Rule.objects.get().actions[1] == {"type": "alarm", "name": "no secret here"}


def test_a_secret_under_neither_key_changes_nothing(stored, key_a, monkeypatch, settings):
    Device.objects.filter(identifier="rot-1").update(
        secret_encrypted=encrypt_secret("x", new_secret_key()))
    before = {what: token() for what, (token, _plain) in stored.items()}
    switch_key(monkeypatch, settings)
    with pytest.raises(CommandError, match="device rot-1"):
        call_command("rotate_secrets", f"--old-key={key_a}", "--no-republish")
    assert {what: token() for what, (token, _plain) in stored.items()} == before


def test_the_old_key_must_differ_from_the_current_one(key_a):
    with pytest.raises(CommandError, match="current key"):
        call_command("rotate_secrets", f"--old-key={key_a}")


def test_old_key_from_a_file(stored, key_a, monkeypatch, settings, tmp_path):
    old = tmp_path / "old.key"
    old.write_text(key_a + "\n")
    key_b = switch_key(monkeypatch, settings)
    call_command("rotate_secrets", old_key_file=str(old), no_republish=True)
    token, plain = stored["device"]
    assert opens(token(), key_b) == plain


def test_a_key_that_begins_with_a_dash(monkeypatch, settings):
    """One random key in 64 from token_urlsafe begins with "-" (CI once drew one). The keys
    this platform makes (keys, device secrets, generated passwords) never do, and an operator's
    own such key still works as --old-key=KEY."""
    assert not any(new_secret_key().startswith("-") for _ in range(2000))
    assert not any(generate_secret().startswith("-") for _ in range(2000))
    dashed = "-" + new_secret_key()
    monkeypatch.setenv("DJANGO_SECRET_KEY", dashed)
    settings.SECRET_KEY = dashed
    product = make_product("dash")
    device, plain = device_actions.create_device(
        acting_user=None, product=product, identifier="dash-1", secret="device-secret-1")
    key_b = switch_key(monkeypatch, settings)
    call_command("rotate_secrets", f"--old-key={dashed}", "--no-republish")
    assert opens(Device.objects.get(pk=device.pk).secret_encrypted, key_b) == plain


@pytest.mark.e2e
def test_devices_still_connect_to_an_edge_on_the_new_key(stored, key_a, monkeypatch, settings,
                                                         redis_url, redis_prefix):
    """The edge on key B refuses the device while its secret is under key A, and admits it
    once rotate_secrets re-encrypted it and published the registry again."""
    key_b = switch_key(monkeypatch, settings)
    republish_all()  # the registry as it was: tokens under key A
    _token, secret = stored["device"]
    clients = []
    with running_edge(redis_url, redis_prefix, {"DJANGO_SECRET_KEY": key_b}) as edge:
        before = Client(edge, "rot-before")
        clients.append(before)
        assert before.connect("rot-1", secret) != 0
        call_command("rotate_secrets", f"--old-key={key_a}")  # publishes the registry again
        # The edge learns the republished record through the registry's change messages,
        # shortly after: a device connecting again (as devices retry) gets in.
        answer = -1
        for attempt in range(20):
            after = Client(edge, f"rot-after-{attempt}")
            clients.append(after)
            answer = after.connect("rot-1", secret)
            if answer == 0:
                break
            time.sleep(0.5)
        assert answer == 0
        for client in clients:
            client.close()
