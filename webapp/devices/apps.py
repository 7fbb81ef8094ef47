from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class DevicesConfig(AppConfig):
    name = "webapp.devices"
    label = "devices"
    verbose_name = _("Devices")

    def ready(self) -> None:
        from webapp.devices import handlers  # noqa: F401 - registers the ingest hooks
