"""WebSocket routes (`/ws/…`). Each route checks the browser's Origin against ALLOWED_HOSTS
(a page of another site cannot open a socket with the user's cookies)."""

from channels.security.websocket import AllowedHostsOriginValidator
from django.urls import re_path

from webapp.console.consumers import DeviceConsumer
from webapp.console.consumers_dashboards import DashboardConsumer
from webapp.console.consumers_debug import DebugConsumer

websocket_urlpatterns: list = [
    re_path(r"^ws/devices/(?P<identifier>[A-Za-z0-9][A-Za-z0-9_.-]{0,63})/$",
            AllowedHostsOriginValidator(DeviceConsumer.as_asgi())),
    re_path(r"^ws/dashboards/(?P<pk>[0-9]{1,18})/$",
            AllowedHostsOriginValidator(DashboardConsumer.as_asgi())),
    re_path(r"^ws/debug/$", AllowedHostsOriginValidator(DebugConsumer.as_asgi())),
]
