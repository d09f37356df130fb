"""Reads for accounts."""

import copy
import functools

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import connections

from accounts.models import ApiToken
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
    User = get_user_model()
    # A raw query: building this join with the ORM cost ~0.45 ms of the ORM thread per
    # handshake batch, four times the query itself. Django still makes the instances
    # (with its converters: aware datetimes, booleans).
    found = {
        user.token_key_hash: user
        for user in User.objects.raw(_tokens_users_sql(User.objects.db, len(wanted)), [*wanted, True])
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


@functools.lru_cache(maxsize=256)
def _tokens_users_sql(alias: str, count: int) -> str:
    User = get_user_model()
    q = connections[alias].ops.quote_name
    columns = ", ".join(f"u.{q(f.column)}" for f in User._meta.concrete_fields)
    token_fk = ApiToken._meta.get_field("user").column
    return (
        f"SELECT {columns}, t.{q('key_hash')} AS token_key_hash "
        f"FROM {q(User._meta.db_table)} u INNER JOIN {q(ApiToken._meta.db_table)} t "
        f"ON t.{q(token_fk)} = u.{q(User._meta.pk.column)} "
        f"WHERE t.{q('key_hash')} IN ({', '.join(['%s'] * count)}) AND t.{q('revoked_at')} IS NULL "
        f"AND u.{q('is_active')} = %s"
    )


def user_by_username(*, username: str) -> AbstractBaseUser | None:
    return get_user_model().objects.filter(username=username, is_active=True).first()
