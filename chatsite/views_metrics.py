"""GET /metrics: this process's metrics in the Prometheus text format, for clients on
CHAT_METRICS_NETWORKS or sending ``Authorization: Bearer <CHAT_METRICS_KEY>``.

Every daphne process has its own numbers, so Prometheus scrapes each process on its own
port, never through the load balancer (docs/observability.md); a request that came
through a proxy is admitted by key only.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from chatsite import metrics
from presence.api import ApiErrorCode, bearer_key, error_response
from presence.policies import ip_in_networks, networks_parse

logger = logging.getLogger(__name__)


def metrics_access(*, ip: str | None, key: str | None, networks: list[str], expected_key: str) -> bool:
    """Whether a scrape from ``ip`` carrying bearer ``key`` may read the metrics: the
    address is in ``networks``, or the key equals ``expected_key`` (an empty one admits no key)."""
    if expected_key and key is not None and hmac.compare_digest(key.encode(), expected_key.encode()):
        return True
    try:
        parsed = networks_parse(values=networks)
    except ValueError:
        logger.error("CHAT_METRICS_NETWORKS has an entry that is not a network; admitting by key only")
        return False
    if ip_in_networks(ip=ip, networks=parsed):
        return True
    # A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d; match them as IPv4 too.
    try:
        mapped = ipaddress.ip_address(ip or "").ipv4_mapped if ":" in (ip or "") else None
    except ValueError:
        mapped = None
    return mapped is not None and ip_in_networks(ip=str(mapped), networks=parsed)


@csrf_exempt  # read-only; lets any other method get the JSON 405 instead of a CSRF page
def metrics_view(request: HttpRequest) -> HttpResponse:
    if request.method not in ("GET", "HEAD"):
        response = error_response(status=405, code=ApiErrorCode.METHOD_NOT_ALLOWED, message="use GET")
        response["Allow"] = "GET, HEAD"
        return response
    # A request that passed through a proxy (the load balancer sets both headers) is
    # admitted by key only: its peer, or the address daphne takes from X-Real-IP, says
    # nothing trustworthy about the scraper. Prometheus scrapes each process directly.
    proxied = "X-Forwarded-For" in request.headers or "X-Real-IP" in request.headers
    allowed = metrics_access(
        ip=None if proxied else request.META.get("REMOTE_ADDR"),
        key=bearer_key(request),
        networks=settings.CHAT_METRICS_NETWORKS,
        expected_key=settings.CHAT_METRICS_KEY,
    )
    if not allowed:
        return error_response(
            status=403,
            code=ApiErrorCode.FORBIDDEN,
            message="metrics are served to configured networks, or with 'Authorization: Bearer <metrics key>'",
        )
    return HttpResponse(generate_latest(metrics.REGISTRY), content_type=CONTENT_TYPE_LATEST)
