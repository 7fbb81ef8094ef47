from typing import Any

from django.core.management.base import BaseCommand, CommandError

from webapp.devices import actions
from webapp.devices.models import Device


class Command(BaseCommand):
    help = "Give a device a new secret and print it (the only time it is shown)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("identifier")

    def handle(self, *args: Any, **options: Any) -> None:
        device = Device.objects.filter(identifier=options["identifier"]).first()
        if device is None:
            raise CommandError(f"no device {options['identifier']!r}")
        secret = actions.rotate_secret(device=device)
        self.stdout.write(f"new secret of {device.identifier}: {secret}")
