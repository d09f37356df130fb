"""Reads for accounts."""

import copy

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db.models import F

from accounts.services import token_hash

TOKEN_MAX_LENGTH = 200


def token_plausible(raw: str | None) -> bool:
    """Whether ``raw`` is worth looking up (tokens are never empty nor this long)."""
    return bool(raw) and len(raw) <= TOKEN_MAX_LENGTH


def token_user(*, raw: str) -> AbstractBaseUser | None:
    """The active user owning the unrevoked token ``raw``, or None. One indexed query."""
    return tokens_users(raws=[raw])[0]


def tokens_users(*, raws: list[str]) -> list[AbstractBaseUser | None]:
    """For each raw token, the active user owning it if it is unrevoked, else None: one
    indexed query for the lot (the handshakes of a busy process share it). Each entry is
    its own user instance, even where two handshakes used the same token."""
    hashes = [token_hash(raw) if token_plausible(raw) else None for raw in raws]
    wanted = sorted({h for h in hashes if h})
    if not wanted:
        return [None] * len(raws)
    found = {
        user.token_key_hash: user
        for user in get_user_model()
        .objects.filter(api_tokens__key_hash__in=wanted, api_tokens__revoked_at__isnull=True, is_active=True)
        .annotate(token_key_hash=F("api_tokens__key_hash"))
        .order_by()
    }
    results: list[AbstractBaseUser | None] = []
    handed_out: set[str] = set()
    for h in hashes:
        user = found.get(h) if h else None
        if user is not None and h in handed_out:
            user = copy.copy(user)
        handed_out.add(h)
        results.append(user)
    return results


def user_by_username(*, username: str) -> AbstractBaseUser | None:
    return get_user_model().objects.filter(username=username, is_active=True).first()
