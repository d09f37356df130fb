"""The live dashboard page of the admin; the numbers then arrive over /ws/admin/dashboard/."""

from django.contrib import admin
from django.contrib.admin.views.decorators import staff_member_required
from django.template.response import TemplateResponse

from presence.models import Connection
from presence.selectors_dashboard import dashboard_snapshot


@staff_member_required
def dashboard(request):
    """Rendered with a first snapshot, so the page is complete before its socket opens."""
    context = {
        **admin.site.each_context(request),
        "title": "Live dashboard",
        "opts": Connection._meta,
        "snapshot": dashboard_snapshot(),
    }
    return TemplateResponse(request, "admin/presence/dashboard.html", context)
