"""Production settings, read in a fresh process from a production-like environment
(settings are read at import, so they cannot be overridden inside this one)."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# `check` never connects: hosts that do not resolve prove it.
PRODUCTION = {
    "DJANGO_SETTINGS_MODULE": "chatsite.settings",
    "DJANGO_DEBUG": "false",
    "DJANGO_ALLOWED_HOSTS": "chat.example.com",
    "DJANGO_CSRF_TRUSTED_ORIGINS": "https://chat.example.com",
    "DATABASE_URL": "postgres://chat:secret@db.invalid:5432/chat",
    "REDIS_URL": "redis://redis.invalid:6379/0",
}


def run(code_or_args: list[str], **env: str | None) -> subprocess.CompletedProcess:
    """Run Python in a fresh process with the production environment; None removes a variable."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_", "CHAT_"))}
    base.update(PRODUCTION, DJANGO_SECRET_KEY=secrets.token_urlsafe(50))
    base.update(env)
    base = {k: v for k, v in base.items() if v is not None}
    return subprocess.run(
        [sys.executable, *code_or_args], cwd=ROOT, env=base, capture_output=True, text=True, timeout=60
    )


def production_settings(*names: str, **env: str) -> dict:
    code = (
        "import json, django; django.setup(); from django.conf import settings; "
        f"print(json.dumps({{n: getattr(settings, n) for n in {list(names)!r}}}, default=str))"
    )
    result = run(["-c", code], **env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_check_deploy_is_clean_with_production_environment():
    result = run(["manage.py", "check", "--deploy", "--fail-level", "WARNING"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_production_refuses_to_start_without_a_secret_key():
    result = run(["manage.py", "check"], DJANGO_SECRET_KEY=None)
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY" in result.stderr


def test_postgres_uses_the_psycopg_pool_without_persistent_connections():
    database = production_settings("DATABASES")["DATABASES"]["default"]
    assert database["ENGINE"] == "django.db.backends.postgresql"
    assert database["CONN_MAX_AGE"] == 0
    assert database["CONN_HEALTH_CHECKS"] is True
    assert database["OPTIONS"]["pool"] == {"min_size": 1, "max_size": 4, "timeout": 10.0}


def test_plain_http_cluster_turns_the_https_settings_off_together():
    values = production_settings(
        "SECURE_SSL_REDIRECT",
        "SESSION_COOKIE_SECURE",
        "CSRF_COOKIE_SECURE",
        "SECURE_HSTS_SECONDS",
        "STORAGES",
        DJANGO_SECURE_SSL="false",
    )
    assert values["SECURE_SSL_REDIRECT"] is False
    assert values["SESSION_COOKIE_SECURE"] is False and values["CSRF_COOKIE_SECURE"] is False
    assert values["SECURE_HSTS_SECONDS"] == 0
    assert values["STORAGES"]["staticfiles"]["BACKEND"] == "whitenoise.storage.CompressedManifestStaticFilesStorage"


def test_production_defaults_are_https_behind_the_load_balancer():
    values = production_settings("SECURE_PROXY_SSL_HEADER", "SECURE_SSL_REDIRECT", "SECURE_REDIRECT_EXEMPT")
    assert values["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]
    assert values["SECURE_SSL_REDIRECT"] is True
    assert "^healthz$" in values["SECURE_REDIRECT_EXEMPT"]


def test_channel_layer_shards_over_several_redis_urls():
    urls = "redis://a.invalid:6379/0,redis://b.invalid:6379/0"
    values = production_settings("CHANNEL_LAYERS", CHAT_CHANNEL_LAYER_URLS=urls)
    assert values["CHANNEL_LAYERS"]["default"]["CONFIG"]["hosts"] == urls.split(",")
