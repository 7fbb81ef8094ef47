import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from edge.crypto import InvalidToken, decrypt_secret
from webapp.devices import actions
from webapp.devices.choices import DeviceStatus
from webapp.devices.models import Device
from webapp.devices.simulator import Simulator, Stats
from webapp.products.models import Product
from webapp.products.thingmodel import compact_model


class Command(BaseCommand):
    help = ("Connect N virtual devices of a product over MQTT: they report data generated from "
            "the thing model, answer commands, follow the shadow and accept OTA upgrades. "
            "Missing devices are created; their secrets stay in memory.")

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--product", required=True, help="product identifier")
        parser.add_argument("--devices", type=int, default=1, help="how many devices")
        parser.add_argument("--interval", type=float, default=5.0,
                            help="seconds between two reports of a device")
        parser.add_argument("--host", default="127.0.0.1", help="MQTT host of the edge")
        parser.add_argument("--port", type=int, default=11883, help="MQTT port of the edge")
        parser.add_argument("--prefix", default=None,
                            help="device identifiers are {prefix}-0001… (default sim-{product})")
        parser.add_argument("--duration", type=float, default=0,
                            help="stop after this many seconds (default: until Ctrl-C)")
        parser.add_argument("--seed", type=int, default=None, help="random seed")

    def handle(self, *args: Any, **options: Any) -> None:
        product = Product.objects.filter(identifier=options["product"]).first()
        if product is None:
            raise CommandError(f"no product {options['product']!r}")
        count = options["devices"]
        if count < 1:
            raise CommandError("--devices must be at least 1")
        prefix = options["prefix"] or f"sim-{product.identifier}"
        devices = self._devices(product, prefix, count)
        model = compact_model(product)
        self.stdout.write(f"simulating {len(devices)} devices of {product.identifier} on "
                          f"{options['host']}:{options['port']}, a report every "
                          f"{options['interval']} s")
        simulator = Simulator(devices, model, host=options["host"], port=options["port"],
                              interval=options["interval"], seed=options["seed"])
        deadline = time.monotonic() + options["duration"] if options["duration"] else None
        try:
            stats = simulator.run(
                stop=lambda: deadline is not None and time.monotonic() >= deadline,
                on_tick=self._progress)
        except KeyboardInterrupt:
            stats = simulator.stats
        self._progress(stats)

    def _devices(self, product: Product, prefix: str, count: int) -> list[tuple[str, str]]:
        identifiers = [f"{prefix}-{i:04d}" for i in range(1, count + 1)]
        existing = {d.identifier: d for d in Device.objects.filter(identifier__in=identifiers)}
        out: list[tuple[str, str]] = []
        for identifier in identifiers:
            device = existing.get(identifier)
            if device is None:
                device, secret = actions.create_device(acting_user=None, product=product,
                                                       identifier=identifier,
                                                       name=f"Simulated {identifier}")
                out.append((identifier, secret))
                continue
            if device.product_id != product.pk:
                raise CommandError(f"{identifier} exists and belongs to another product")
            if device.status == DeviceStatus.LOCKED:
                self.stderr.write(f"{identifier} is locked; skipped")
                continue
            try:
                out.append((identifier, decrypt_secret(device.secret_encrypted)))
            except InvalidToken:
                raise CommandError(f"cannot read the secret of {identifier} "
                                   "(DJANGO_SECRET_KEY differs?)") from None
        return out

    def _progress(self, stats: Stats) -> None:
        self.stdout.write(f"connected {stats.connected}, reports {stats.reports}, "
                          f"commands answered {stats.commands}, shadow updates "
                          f"{stats.shadow_updates}, upgrades {stats.upgrades}")
