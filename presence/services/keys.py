"""Service keys for the HTTP API: created with a fresh random key that is shown once,
stored only as its SHA-256, revoked (never deleted) so that its name stays taken."""

from __future__ import annotations

import hashlib
import logging
import secrets

from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils import timezone

from presence.models import ServiceKey

logger = logging.getLogger(__name__)

KEY_PREFIX = "sk_"
PREFIX_CHARS = 10  # shown in the admin and logs to recognise a key; not enough to use it
NAME_MAX_CHARS = 100


class ServiceKeyNameTaken(ValueError):
    """A key with this name exists already (revoked keys keep their names)."""


def service_key_hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def service_key_new(*, key: ServiceKey) -> str:
    """Give an unsaved key a fresh secret; returns the raw key, which is never stored."""
    raw = KEY_PREFIX + secrets.token_urlsafe(32)
    key.prefix = raw[:PREFIX_CHARS]
    key.key_hash = service_key_hash(raw)
    return raw


def service_key_create(*, name: str) -> tuple[ServiceKey, str]:
    """Create an active key named ``name``; returns the row and the raw key (shown once).
    Raises ServiceKeyNameTaken if the name is in use, ValueError if it is blank or too long."""
    name = name.strip()
    if not 1 <= len(name) <= NAME_MAX_CHARS:
        raise ValueError(f"a service key name is 1 to {NAME_MAX_CHARS} characters")
    key = ServiceKey(name=name)
    raw = service_key_new(key=key)
    try:
        with transaction.atomic():
            key.save()
    except IntegrityError:
        if ServiceKey.objects.filter(name=name).exists():
            raise ServiceKeyNameTaken(f"a service key named '{name}' already exists") from None
        raise
    logger.info("service key %s created", key.pk)
    return key, raw


def service_keys_revoke(*, keys: QuerySet[ServiceKey]) -> int:
    """Revoke the given keys at once (the next request with one gets 401); idempotent;
    returns how many were newly revoked."""
    count = keys.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
    logger.info("revoked %d service key(s)", count)
    return count
