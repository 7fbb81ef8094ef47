from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class OtaConfig(AppConfig):
    name = "webapp.ota"
    label = "ota"
    verbose_name = _("Firmware updates (OTA)")

    def ready(self) -> None:
        from webapp.ota import handlers  # noqa: F401 - registers the ingest hooks
