"""The HTTP API for backend services, mounted at /api/ (PROTOCOL.md §5)."""

from django.urls import path, re_path

from presence import views

app_name = "api"

urlpatterns = [
    path("push", views.PushView.as_view(), name="push"),
    path("connections", views.ConnectionsView.as_view(), name="connections"),
    path("connections/<str:id>", views.ConnectionView.as_view(), name="connection"),
    # Last: every other path under /api/ answers a JSON 404.
    re_path(r"^", views.not_found, name="not-found"),
]
