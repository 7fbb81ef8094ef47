from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class RulesConfig(AppConfig):
    name = "webapp.rules"
    label = "rules"
    verbose_name = _("Rules, alarms and forwarding")

    def ready(self) -> None:
        from webapp.rules import engine
        from webapp.telemetry.hooks import after_store, on_uplink

        after_store(engine.on_batch)
        on_uplink("event")(engine.on_events)
        on_uplink("cmdrsp")(engine.on_command_responses)
