"""Writes for accounts: API tokens."""

import hashlib
import secrets

from django.contrib.auth.models import AbstractBaseUser
from django.utils import timezone

from accounts.models import ApiToken

TOKEN_PREFIX = "ct_"


def token_hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def token_key_new(*, token: ApiToken) -> str:
    """Give an unsaved token a fresh key; returns the raw key, which is never stored."""
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token.prefix = raw[:10]
    token.key_hash = token_hash(raw)
    return raw


def token_create(*, user: AbstractBaseUser, name: str = "") -> tuple[ApiToken, str]:
    """Create a token for ``user``; returns the row and the raw key."""
    token = ApiToken(user=user, name=name)
    raw = token_key_new(token=token)
    token.save()
    return token, raw


def tokens_revoke(*, tokens) -> int:
    """Revoke the given tokens (a queryset); idempotent; returns how many were newly revoked."""
    return tokens.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
