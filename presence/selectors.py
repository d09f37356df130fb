"""Reads for presence: service keys and the open connections of the registry.

"Open" means a registry row that is not closed, on a process whose lease in Redis is
alive: a crashed process's rows stop counting as soon as its lease lapses, before the
sweep closes them (PROTOCOL.md §4).
"""

from __future__ import annotations

from datetime import timedelta

from asgiref.sync import async_to_sync
from django.db.models import Q, QuerySet
from django.utils import timezone

from presence import store
from presence.models import Connection, ServiceKey
from presence.services.keys import KEY_PREFIX, service_key_hash
from rooms.events import timestamp

# last_used_at is a hint for the admin ("is this key still in use?"), not an audit log:
# one write a minute per key at most, never one per request.
KEY_USED_RESOLUTION = timedelta(minutes=1)
RAW_KEY_MAX_CHARS = 200

CONNECTION_FIELDS = (
    "id",
    "user__username",
    "ip",
    "user_agent",
    "rooms",
    "connected_at",
    "last_seen",
    "server__name",
)


def service_key_authenticate(*, raw: str) -> ServiceKey | None:
    """The active key whose secret is ``raw``, or None. One indexed query; updates
    last_used_at at most once a minute (one more, conditional, UPDATE)."""
    if not raw or len(raw) > RAW_KEY_MAX_CHARS or not raw.startswith(KEY_PREFIX):
        return None
    key = ServiceKey.objects.filter(key_hash=service_key_hash(raw), revoked_at__isnull=True).first()
    if key is None:
        return None
    now = timezone.now()
    if key.last_used_at is None or now - key.last_used_at >= KEY_USED_RESOLUTION:
        stale = Q(last_used_at__isnull=True) | Q(last_used_at__lte=now - KEY_USED_RESOLUTION)
        ServiceKey.objects.filter(stale, pk=key.pk).update(last_used_at=now)
        key.last_used_at = now
    return key


def connections_open() -> QuerySet[Connection]:
    """Open connections: not closed, on a process whose lease is alive. One Redis read
    now; the queryset is lazy."""
    alive = async_to_sync(store.servers_alive)()
    return Connection.objects.filter(closed_at__isnull=True, server__name__in=alive)


def connection_data(row: dict) -> dict:
    """A row of ``.values(*CONNECTION_FIELDS)`` as the API shows it (PROTOCOL.md §5)."""
    return {
        "id": row["id"],
        "user": row["user__username"],
        "ip": row["ip"],
        "user_agent": row["user_agent"],
        "rooms": row["rooms"].split(),
        "connected_at": timestamp(row["connected_at"]),
        "last_seen": timestamp(row["last_seen"]),
        "server": row["server__name"],
    }


def connections_list(*, user_id: int | None, limit: int) -> tuple[list[dict], bool]:
    """Open connections, newest first, optionally of one user: (at most ``limit`` of them,
    whether there are more). One query."""
    rows = connections_open()
    if user_id is not None:
        rows = rows.filter(user_id=user_id)
    found = [connection_data(r) for r in rows.order_by("-connected_at").values(*CONNECTION_FIELDS)[: limit + 1]]
    return found[:limit], len(found) > limit


def connection_detail(*, id: str) -> dict | None:
    """One open connection as the API shows it, or None. One query."""
    row = connections_open().filter(pk=id).values(*CONNECTION_FIELDS).first()
    return connection_data(row) if row else None
