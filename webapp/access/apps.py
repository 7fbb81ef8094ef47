from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class AccessConfig(AppConfig):
    name = "webapp.access"
    label = "access"
    verbose_name = _("Device access")

    def ready(self) -> None:
        from webapp.access import handlers, registry  # noqa: F401 - ingest hook, registry fields

        registry.connect()
