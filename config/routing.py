"""WebSocket routes (`/ws/…`)."""

websocket_urlpatterns: list = []
