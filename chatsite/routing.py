"""WebSocket routes: one socket per browser tab carries every room (PROTOCOL.md §1)."""

from django.urls import path

from presence.consumers import DashboardConsumer
from rooms.consumers import ChatConsumer

websocket_urlpatterns = [
    path("ws/chat/", ChatConsumer.as_asgi()),
    path("ws/admin/dashboard/", DashboardConsumer.as_asgi()),
]
