from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/presence/dashboard/", include("presence.urls_admin")),
    path("admin/", admin.site.urls),
    path("accounts/", include("accounts.urls")),
    path("api/", include("presence.urls")),
    path("", include("rooms.urls")),
]
