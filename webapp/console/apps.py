from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class ConsoleConfig(AppConfig):
    name = "webapp.console"
    label = "console"
    verbose_name = _("Console")

    def ready(self) -> None:
        from webapp.console import live
        from webapp.telemetry.hooks import after_store

        after_store(live.on_batch)
