"""GET /healthz: is this process able to serve? The load balancer asks every second.

200 ``{"status": "ok"}`` when the database answers ``SELECT 1``, every Redis server the
process uses (channel layer shards, cache and sessions, presence) answers PING within a
short timeout, and the process is not draining; 503 otherwise, naming what failed:
``{"status": "unavailable", "failed": {"redis": "ConnectionError"}}``, or
``{"failed": {"draining": "Draining"}}`` once ``manage.py drain`` marked this process, so
the balancer stops sending it new connections within two checks. No authentication, no session, no CSRF, never cached. Failures name only the
exception class (the details go to the log): the endpoint is public through the balancer.

It is a plain sync view, so it runs on the process's one ORM thread (PITFALLS.md): a
process whose ORM thread is stuck for longer than the balancer's check timeout is taken
out of rotation for new connections, which is what we want.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

import redis
from asgiref.sync import async_to_sync
from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_safe

logger = logging.getLogger(__name__)

REDIS_TIMEOUT = 0.5  # seconds, per server: the balancer's check times out after 2 s


def redis_urls() -> list[str]:
    """One URL per distinct Redis server this process talks to, read when called."""
    urls = []
    for host in settings.CHANNEL_LAYERS["default"].get("CONFIG", {}).get("hosts", []):
        urls.append(host if isinstance(host, str) else host.get("address", ""))
    location = settings.CACHES["default"].get("LOCATION")
    if "redis" in settings.CACHES["default"]["BACKEND"].lower() and location:
        urls.extend([location] if isinstance(location, str) else location)
    urls.append(settings.PRESENCE_REDIS_URL)
    servers: dict[tuple, str] = {}
    for url in filter(None, urls):
        parts = urlsplit(url)
        servers.setdefault(
            (parts.scheme, parts.hostname, parts.port, parts.path if parts.scheme == "unix" else ""), url
        )
    return list(servers.values())


def _database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def _redis() -> None:
    for url in redis_urls():
        client = redis.Redis.from_url(url, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT)
        try:
            client.ping()
        finally:
            client.close()


class Draining(Exception):
    pass


def _draining() -> None:
    from presence import runtime, store

    if async_to_sync(store.draining)(server=runtime.server_name()):
        raise Draining


CHECKS = {"database": _database, "redis": _redis, "draining": _draining}


@csrf_exempt
@never_cache
@require_safe
def healthz(request):
    failed = {}
    for name, check in CHECKS.items():
        if name == "draining" and "redis" in failed:
            continue  # the flag is in Redis
        try:
            check()
        except Draining:
            failed[name] = "Draining"
        except Exception as exc:  # any failure means "not ready", whatever raised it
            failed[name] = type(exc).__name__
            logger.warning("healthz: %s failed: %s", name, exc)
    if failed:
        return JsonResponse({"status": "unavailable", "failed": failed}, status=503)
    return JsonResponse({"status": "ok"})
