"""The API root router and authentication endpoints."""

from django.urls import include, path
from rest_framework.routers import DefaultRouter
from rest_framework_simplejwt.views import TokenObtainPairView, TokenRefreshView

from webapp.devices.api import DeviceCommandViewSet, DeviceViewSet
from webapp.products.api import ProductViewSet
from webapp.rules import api as rules_api

router = DefaultRouter()
router.register("products", ProductViewSet, basename="product")
router.register("devices", DeviceViewSet, basename="device")
router.register("commands", DeviceCommandViewSet, basename="command")
for prefix, viewset, basename in rules_api.ROUTES:
    router.register(prefix, viewset, basename=basename)

urlpatterns = [
    path("auth/token/", TokenObtainPairView.as_view(), name="token_obtain_pair"),
    path("auth/token/refresh/", TokenRefreshView.as_view(), name="token_refresh"),
    path("", include(router.urls)),
]
