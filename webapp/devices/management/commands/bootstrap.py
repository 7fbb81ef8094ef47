"""Create the admin account and the demo product and device (idempotent)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from edge.crypto import random_token
from webapp.devices import actions as device_actions
from webapp.devices.models import Device
from webapp.products import actions as product_actions
from webapp.products.models import Product

DEMO_PRODUCT = {
    "identifier": "thermo",
    "name": "Thermometer (demo)",
    "product_type": "common",
    "protocol": "mqtt",
    "manufacturer": "ThingLinks",
    "model": "T-1",
    "description": "A demo product created by `make run`.",
    "services": [{
        "code": "env",
        "name": "Environment",
        "properties": [
            {"code": "temperature", "name": "Temperature", "datatype": "decimal", "unit": "C",
             "min": -40, "max": 125, "access": "RE"},
            {"code": "humidity", "name": "Humidity", "datatype": "decimal", "unit": "%",
             "min": 0, "max": 100, "access": "RE"},
        ],
        "commands": [{
            "code": "set_interval", "name": "Set report interval",
            "requests": [{"code": "seconds", "datatype": "int", "min": 1, "max": 3600,
                          "required": True}],
            "responses": [{"code": "result", "datatype": "string"}],
        }],
        "events": [{"code": "overheat", "name": "Overheat",
                    "params": [{"code": "temperature", "datatype": "decimal"}]}],
    }],
}
DEMO_DEVICE = "demo-001"


def write_private(path: Path, text: str) -> None:
    """Write `path` readable by its owner only (0600), replacing it as a whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


class Command(BaseCommand):
    help = ("Create the admin account (a generated password goes to var/admin-password, never "
            "to the log) and the demo product and device.")

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--no-demo", action="store_true")
        parser.add_argument(
            "--show-password", action="store_true",
            help="also print a generated password (`make run` in a terminal: the developer "
                 "reads it there); containers and production leave it in the file only")

    def handle(self, *args: Any, **options: Any) -> None:
        self._admin(show_password=options["show_password"])
        if not options["no_demo"]:
            self._demo()

    def _admin(self, show_password: bool = False) -> None:
        user_model = get_user_model()
        username = os.environ.get("DJANGO_SUPERUSER_USERNAME") or "admin"
        password = os.environ.get("DJANGO_SUPERUSER_PASSWORD")
        if user_model.objects.filter(username=username).exists():
            if password:
                user = user_model.objects.get(username=username)
                if not user.check_password(password):
                    user.set_password(password)
                    user.save(update_fields=["password"])
                    self.stdout.write(f"admin account {username!r}: password set from "
                                      "DJANGO_SUPERUSER_PASSWORD")
                    return
            self.stdout.write(f"admin account {username!r} exists (log in at /admin/)")
            return
        if password:
            user_model.objects.create_superuser(username=username, email="", password=password)
            self.stdout.write(self.style.SUCCESS(
                f"admin account created: username {username!r} password from "
                "DJANGO_SUPERUSER_PASSWORD"))
            return
        # A generated password is kept in a file only its owner reads, not in the log (which
        # container platforms keep and ship), and must be changed at the first login.
        password = random_token(12)
        user = user_model.objects.create_superuser(username=username, email="",
                                                   password=password)
        user.must_change_password = True
        user.save(update_fields=["must_change_password"])
        path = Path(settings.VAR_DIR) / "admin-password"
        write_private(path, password + "\n")
        if show_password:
            self.stdout.write(self.style.SUCCESS(
                f"admin account created: username {username!r} password {password!r} (also in "
                f"{path}; to be changed at the first login)"))
            return
        self.stdout.write(self.style.SUCCESS(
            f"admin account created: username {username!r}, password in {path} (readable by "
            "this user only; to be changed at the first login, then delete the file)"))

    @transaction.atomic
    def _demo(self) -> None:
        product = Product.objects.filter(identifier=DEMO_PRODUCT["identifier"]).first()
        if product is None:
            product = product_actions.create_product(acting_user=None, data={
                **DEMO_PRODUCT, "services": list(DEMO_PRODUCT["services"])})
            self.stdout.write(f"demo product {product.identifier!r} created")
        if Device.objects.filter(identifier=DEMO_DEVICE).exists():
            self.stdout.write(
                f"demo device {DEMO_DEVICE!r} exists; its secret was printed when it was "
                f"created (new one: python manage.py rotate_secret {DEMO_DEVICE})")
            return
        device, secret = device_actions.create_device(
            acting_user=None, product=product, identifier=DEMO_DEVICE, name="Demo thermometer",
            secret=os.environ.get("THINGLINKS_DEMO_SECRET") or None)
        self.stdout.write(self.style.SUCCESS(
            f"demo device created: identifier {device.identifier!r} secret {secret!r} "
            "(shown once)"))
