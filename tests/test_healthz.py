"""GET /healthz: what the load balancer asks every second."""

from __future__ import annotations

import pytest
from django.db import OperationalError, connection

from chatsite.devservers import free_port

pytestmark = pytest.mark.django_db


def test_healthz_is_ok_when_database_and_redis_answer(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_healthz_is_never_cached_and_sets_no_cookie(client):
    response = client.get("/healthz")
    assert "no-store" in response["Cache-Control"] and "max-age=0" in response["Cache-Control"]
    assert not response.cookies


def test_healthz_needs_no_login_and_no_csrf_token(client):
    client.logout()
    assert client.head("/healthz").status_code == 200
    assert client.post("/healthz").status_code == 405  # safe methods only, never a CSRF failure


def test_healthz_is_503_naming_redis_when_a_redis_server_is_down(client, settings):
    settings.PRESENCE_REDIS_URL = f"redis://127.0.0.1:{free_port()}/2"  # nothing listens there
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "failed": {"redis": "ConnectionError"}}


def test_healthz_is_503_naming_the_database_when_it_fails(client, monkeypatch):
    def broken_cursor(*args, **kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr(connection, "cursor", broken_cursor)
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "failed": {"database": "OperationalError"}}


def test_healthz_is_503_while_this_process_is_draining(client):
    from asgiref.sync import async_to_sync

    from presence import runtime, store

    async_to_sync(store.draining_set)(server=runtime.server_name(), seconds=30)
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "failed": {"draining": "Draining"}}


def test_healthz_pings_each_channel_layer_shard(settings):
    from chatsite.views import redis_urls

    layer = dict(settings.CHANNEL_LAYERS["default"])
    layer["CONFIG"] = dict(layer["CONFIG"], hosts=["redis://10.0.0.1:6379/0", "redis://10.0.0.2:6379/0"])
    settings.CHANNEL_LAYERS = {"default": layer}
    settings.PRESENCE_REDIS_URL = "redis://10.0.0.1:6379/2"  # same server as the first shard
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://10.0.0.1:6379/1"}
    }
    assert redis_urls() == ["redis://10.0.0.1:6379/0", "redis://10.0.0.2:6379/0"]
