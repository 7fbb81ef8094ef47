from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class TelemetryConfig(AppConfig):
    name = "webapp.telemetry"
    label = "telemetry"
    verbose_name = _("Telemetry")

    def ready(self) -> None:
        from webapp.products import followers
        from webapp.telemetry import (
            backends,
            device_handlers,  # noqa: F401 - registers the device domain's ingest hooks
        )

        # The time-series storage follows the products' thing models.
        followers.use_storage(backends.get_backend)
