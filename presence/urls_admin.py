"""Pages of the admin that are not a model's: mounted at /admin/presence/dashboard/
(before the admin's own URLs, so they take precedence)."""

from django.urls import path

from presence.admin_views import dashboard

urlpatterns = [
    path("", dashboard, name="presence_dashboard"),
]
