"""OTA routes under `/api/v1/` (included by `webapp.core.api`)."""

from django.urls import path

from webapp.ota.api import OtaCampaignViewSet, OtaPackageViewSet, ReadVersionView, download

ROUTES = [
    ("ota/packages", OtaPackageViewSet, "ota-package"),
    ("ota/campaigns", OtaCampaignViewSet, "ota-campaign"),
]

urlpatterns = [
    path("ota/download/<str:token>/", download, name="ota-download"),
    path("ota/read-version/", ReadVersionView.as_view(), name="ota-read-version"),
]
