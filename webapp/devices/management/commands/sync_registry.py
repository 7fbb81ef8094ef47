from typing import Any

from django.core.management.base import BaseCommand

from webapp.devices.registry import republish_all


class Command(BaseCommand):
    help = "Publish every product model and device credential to Redis for the edge."

    def handle(self, *args: Any, **options: Any) -> None:
        products, devices = republish_all()
        self.stdout.write(f"published {products} products and {devices} devices")
