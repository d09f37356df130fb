from django.contrib import admin
from django.urls import include, path

from chatsite.views import healthz

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("admin/presence/dashboard/", include("presence.urls_admin")),
    path("admin/", admin.site.urls),
    path("accounts/", include("accounts.urls")),
    path("api/", include("presence.urls")),
    path("metrics", include("chatsite.urls_metrics")),
    path("", include("rooms.urls")),
]
