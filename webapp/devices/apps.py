from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class DevicesConfig(AppConfig):
    name = "webapp.devices"
    label = "devices"
    verbose_name = _("Devices")

    def ready(self) -> None:
        from webapp.devices import registry
        from webapp.products import followers

        # The edge registry follows the products' thing models.
        followers.on_change(registry.publish_product, registry.unpublish_product)
