"""WebSocket routes (`/ws/…`). Each route checks the browser's Origin against ALLOWED_HOSTS
(a page of another site cannot open a socket with the user's cookies)."""

from channels.security.websocket import AllowedHostsOriginValidator
from django.urls import re_path

from webapp.console.consumers import DeviceConsumer
from webapp.console.consumers_dashboards import DashboardConsumer
from webapp.console.consumers_debug import DebugConsumer
from webapp.core.metrics_web import CountWebSockets

websocket_urlpatterns: list = [
    re_path(r"^ws/devices/(?P<identifier>[A-Za-z0-9][A-Za-z0-9_.-]{0,63})/$",
            AllowedHostsOriginValidator(CountWebSockets(DeviceConsumer.as_asgi(), "device"))),
    re_path(r"^ws/dashboards/(?P<pk>[0-9]{1,18})/$",
            AllowedHostsOriginValidator(CountWebSockets(DashboardConsumer.as_asgi(),
                                                    "dashboard"))),
    re_path(r"^ws/debug/$",
            AllowedHostsOriginValidator(CountWebSockets(DebugConsumer.as_asgi(), "debug"))),
]
