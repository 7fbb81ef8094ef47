"""The REST API under `/api/v1/`: one router for the viewsets of every app, and the views
outside it.

Each app declares its routes in its own `api.py` in one way: `ROUTES`, a list of (prefix,
viewset, basename) registered on this router in the order below, and `urlpatterns` for any view
outside the router. The router lives here, above the apps, because it imports all of them.
"""

from types import ModuleType

from django.urls import include, path
from rest_framework.routers import DefaultRouter

from webapp.access import api as access_api
from webapp.devices import api as devices_api
from webapp.ota import api as ota_api
from webapp.products import api as products_api
from webapp.rules import api as rules_api
from webapp.system import api as system_api
from webapp.telemetry import api as telemetry_api

APPS: tuple[ModuleType, ...] = (products_api, devices_api, system_api, ota_api, rules_api,
                                telemetry_api, access_api)

router = DefaultRouter()
for app in APPS:
    for prefix, viewset, basename in app.ROUTES:
        router.register(prefix, viewset, basename=basename)

urlpatterns = [
    *(pattern for app in APPS for pattern in getattr(app, "urlpatterns", ())),
    path("", include(router.urls)),
]
