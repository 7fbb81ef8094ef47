"""Move every stored secret to the current secret key: `manage.py rotate_secrets --old-key …`.

Device secrets, product registration secrets, device envelope keys, notification channel
secrets and robot URL tokens, sink credentials and the secrets of rule actions are Fernet
tokens whose key derives from `DJANGO_SECRET_KEY` (edge/crypto.py). To leave an old (or
leaked) key:

1. stop every process (web, edge, ingest, Celery),
2. set the new key (`DJANGO_SECRET_KEY`, or `var/secret_key` under `make run`),
3. `manage.py rotate_secrets --old-key-file old.key` (or `--old-key …`),
4. start them again with the new key.

Secrets already readable with the current key are left as they are, so the command may run
again after an interruption. All rows change in one transaction: when a secret opens with
neither key, nothing is written and the command names it. The edge registry in Redis is
published again afterwards. Login sessions, JWTs, password reset and OTA download links
signed with the old key stop working (users log in again).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import models, transaction

from edge.crypto import InvalidToken, decrypt_secret, encrypt_secret

BATCH = 1000


@dataclass
class Tally:
    rotated: int = 0
    current: int = 0
    unreadable: list[str] = field(default_factory=list)


class Rekey:
    """Re-encrypts tokens from the old key to the new one, counting what it saw."""

    def __init__(self, old_key: str, new_key: str) -> None:
        self.old_key, self.new_key = old_key, new_key
        self.tally = Tally()

    def __call__(self, token: str, what: str) -> str:
        if not token:
            return token
        try:
            plain = decrypt_secret(token, self.old_key)
        except InvalidToken:
            try:
                decrypt_secret(token, self.new_key)
            except InvalidToken:
                self.tally.unreadable.append(what)
            else:
                self.tally.current += 1
            return token
        self.tally.rotated += 1
        return encrypt_secret(plain, self.new_key)


def _rows(queryset: Any) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for row in queryset.order_by("pk").iterator(chunk_size=BATCH):
        batch.append(row)
        if len(batch) >= BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _rotate_fields(model: type[models.Model], names: list[str], rekey: Rekey,
                   label: Any) -> None:
    """Every non-empty `{name}` token of every row of `model`."""
    nonempty = models.Q()
    for name in names:
        nonempty |= ~models.Q(**{name: ""})
    for batch in _rows(model._default_manager.filter(nonempty)):  # type: ignore[attr-defined]
        changed = []
        for row in batch:
            before = [getattr(row, name) for name in names]
            for name in names:
                setattr(row, name, rekey(getattr(row, name), f"{label(row)} {name}"))
            if [getattr(row, name) for name in names] != before:
                changed.append(row)
        if changed:
            model._default_manager.bulk_update(changed, names)  # type: ignore[attr-defined]


def _rotate_rule_actions(rekey: Rekey) -> None:
    from webapp.rules.models import Rule

    for batch in _rows(Rule.objects.all()):
        changed = []
        for rule in batch:
            actions = list(rule.actions or [])
            touched = False
            for i, action in enumerate(actions):
                if isinstance(action, dict) and action.get("secret_encrypted"):
                    token = rekey(action["secret_encrypted"], f"rule {rule.pk} action {i}")
                    if token != action["secret_encrypted"]:
                        actions[i] = {**action, "secret_encrypted": token}
                        touched = True
            if touched:
                rule.actions = actions
                changed.append(rule)
        if changed:
            Rule.objects.bulk_update(changed, ["actions"])


def _rotate_channel_url_tokens(rekey: Rekey) -> None:
    """The credential of a robot channel's URL, kept encrypted in its config."""
    from webapp.rules.models import NotificationChannel
    from webapp.rules.secrets import URL_TOKEN_KEY

    for batch in _rows(NotificationChannel.objects.all()):
        changed = []
        for channel in batch:
            config = channel.config if isinstance(channel.config, dict) else {}
            token = config.get(URL_TOKEN_KEY)
            if token:
                new = rekey(token, f"channel {channel.name} URL token")
                if new != token:
                    channel.config = {**config, URL_TOKEN_KEY: new}
                    changed.append(channel)
        if changed:
            NotificationChannel.objects.bulk_update(changed, ["config"])


def rotate(old_key: str, new_key: str) -> Tally:
    """Re-encrypt every stored secret from `old_key` to `new_key` (one transaction; raises
    CommandError, writing nothing, when a secret opens with neither key)."""
    from webapp.access.models import DeviceKeys, ProductRegistration
    from webapp.devices.models import Device
    from webapp.rules.models import NotificationChannel, Sink

    rekey = Rekey(old_key, new_key)
    with transaction.atomic():
        _rotate_fields(Device, ["secret_encrypted"], rekey, lambda d: f"device {d.identifier}")
        _rotate_fields(ProductRegistration, ["secret_encrypted"], rekey,
                       lambda r: f"registration of product {r.product_id}")
        _rotate_fields(DeviceKeys, ["sign_key_encrypted", "encrypt_key_encrypted",
                                    "encrypt_vector_encrypted"], rekey,
                       lambda k: f"envelope keys of device {k.device_id}")
        _rotate_fields(NotificationChannel, ["secret_encrypted"], rekey,
                       lambda c: f"channel {c.name}")
        _rotate_channel_url_tokens(rekey)
        _rotate_fields(Sink, ["credentials_encrypted"], rekey, lambda s: f"sink {s.name}")
        _rotate_rule_actions(rekey)
        unreadable = rekey.tally.unreadable
        if unreadable:
            shown = ", ".join(unreadable[:20]) + (" …" if len(unreadable) > 20 else "")
            raise CommandError(
                f"{len(unreadable)} secret(s) open with neither the old nor the current key, "
                f"so nothing was changed: {shown}. Check --old-key; give those devices a new "
                "secret (manage.py rotate_secret <identifier>) or enter those channel and "
                "sink secrets again, then run this again.")
    return rekey.tally


class Command(BaseCommand):
    help = ("Re-encrypt every device, product, envelope, channel, sink and rule-action secret "
            "from an old secret key to the current one (DJANGO_SECRET_KEY), then publish the "
            "edge registry again.")

    def add_arguments(self, parser: Any) -> None:
        old = parser.add_mutually_exclusive_group(required=True)
        old.add_argument("--old-key", help="the previous secret key (visible in the process "
                                           "list: prefer --old-key-file; write --old-key=KEY "
                                           "when the key begins with '-')")
        old.add_argument("--old-key-file", type=Path,
                         help="a file holding the previous secret key")
        parser.add_argument("--no-republish", action="store_true",
                            help="do not publish the edge registry to Redis afterwards")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["old_key_file"] is not None:
            try:
                old_key = Path(options["old_key_file"]).read_text().strip()
            except OSError as exc:
                raise CommandError(f"cannot read {options['old_key_file']}: {exc}") from None
        else:
            old_key = (options["old_key"] or "").strip()
        new_key = settings.SECRET_KEY
        if not old_key:
            raise CommandError("the old key is empty")
        if old_key == new_key:
            raise CommandError("the old key is the current key: set the new key first "
                               "(DJANGO_SECRET_KEY or var/secret_key), then run this")
        tally = rotate(old_key, new_key)
        self.stdout.write(f"{tally.rotated} secret(s) re-encrypted with the current key, "
                          f"{tally.current} already used it")
        if not options["no_republish"]:
            from webapp.devices.registry import republish_all

            products, devices = republish_all()
            self.stdout.write(f"edge registry published: {products} products, "
                              f"{devices} devices")
