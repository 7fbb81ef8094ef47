from django.apps import AppConfig
from django.db.models.signals import post_migrate
from django.utils.translation import gettext_lazy as _


class ProductsConfig(AppConfig):
    name = "webapp.products"
    label = "products"
    verbose_name = _("Products")

    def ready(self) -> None:
        from webapp.products.builtin_templates import ensure_builtin_templates

        post_migrate.connect(ensure_builtin_templates, sender=self,
                             dispatch_uid="products.builtin_templates")
