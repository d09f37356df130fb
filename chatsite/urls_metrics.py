"""GET /metrics (included from chatsite/urls.py as ``metrics``)."""

from django.urls import path

from chatsite.views_metrics import metrics_view

urlpatterns = [path("", metrics_view, name="metrics")]
