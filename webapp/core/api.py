"""The API root router and authentication endpoints."""

from django.urls import include, path
from rest_framework.routers import DefaultRouter

from webapp.access import urls as access_urls
from webapp.devices.api import DeviceCommandViewSet, DeviceGroupViewSet, DeviceViewSet
from webapp.ota import urls as ota_urls
from webapp.products.api import ProductTemplateViewSet, ProductViewSet
from webapp.rules import api as rules_api
from webapp.system import api as system_api
from webapp.telemetry import api as telemetry_api

router = DefaultRouter()
router.register("products", ProductViewSet, basename="product")
router.register("product-templates", ProductTemplateViewSet, basename="product-template")
router.register("devices", DeviceViewSet, basename="device")
router.register("device-groups", DeviceGroupViewSet, basename="device-group")
for prefix, viewset, basename in system_api.ROUTES:
    router.register(prefix, viewset, basename=basename)
router.register("commands", DeviceCommandViewSet, basename="command")
for prefix, viewset, basename in ota_urls.ROUTES:
    router.register(prefix, viewset, basename=basename)
for prefix, viewset, basename in rules_api.ROUTES:
    router.register(prefix, viewset, basename=basename)
for prefix, viewset, basename in telemetry_api.ROUTES:
    router.register(prefix, viewset, basename=basename)
for prefix, viewset, basename in access_urls.ROUTES:
    router.register(prefix, viewset, basename=basename)

urlpatterns = [
    path("auth/token/", system_api.LoginView.as_view(), name="token_obtain_pair"),
    path("auth/token/refresh/", system_api.RefreshView.as_view(), name="token_refresh"),
    path("auth/logout/", system_api.LogoutView.as_view(), name="logout"),
    path("auth/me/", system_api.MeView.as_view(), name="me"),
    path("auth/password/", system_api.PasswordView.as_view(), name="change_password"),
    *ota_urls.urlpatterns,
    path("", include(router.urls)),
]
