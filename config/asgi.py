"""ASGI entry point for Daphne: HTTP (Django) and WebSockets (Channels)."""

import os

from channels.auth import AuthMiddlewareStack
from channels.routing import ProtocolTypeRouter, URLRouter
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django_asgi_app = get_asgi_application()

from config.routing import websocket_urlpatterns  # noqa: E402
from webapp.core.processes import start_publisher  # noqa: E402

# This process's metrics in Redis every 10 s, for GET /metrics of any web and /monitoring/.
start_publisher("web")

application = ProtocolTypeRouter({
    # Static files (console and admin) straight from the apps: the platform runs Daphne with
    # no other web server in front of it (`make run`); a proxy may serve /static/ instead.
    "http": ASGIStaticFilesHandler(django_asgi_app),
    "websocket": AuthMiddlewareStack(URLRouter(websocket_urlpatterns)),
})
