"""Reconnect-abuse detection at the handshake: fetch (Redis counters), decide (policy),
record (service). Counting happens in Redis before any database work; the database is
written at most once per subject every few seconds, so a reconnect storm does not reach it."""

from __future__ import annotations

import logging
import time
import uuid
from datetime import UTC, datetime

from channels.db import database_sync_to_async
from django.conf import settings

from chatsite.realtime import agroup_send, user_group
from presence import policies, store
from presence.models import AbuseFlag
from presence.services import moderation
from rooms.events import connection_abuse_event

logger = logging.getLogger(__name__)

FLAG_WRITE_EVERY = 5.0  # seconds between database updates of one subject's flag
ABUSE_MESSAGE = "blocked for reconnecting too often; try again later"


def exempt(*, ip: str | None) -> bool:
    networks = policies.networks_parse(values=settings.PRESENCE_ABUSE_EXEMPT_NETWORKS)
    return policies.ip_in_networks(ip=ip, networks=networks)


async def connect_admit(*, kind: str, user_id: int | None, ip: str | None, user_agent: str) -> str | None:
    """Count this handshake for the user (kind "user") or the IP (kind "ip"), flag and cool
    down on abuse, and return why it must be refused (block or cool-down), or None."""
    if exempt(ip=ip):
        return await store.denial(user_id=user_id, ip=None if kind == "user" else ip)
    key = str(user_id) if kind == "user" else (ip or "")
    if key:
        limit = getattr(settings, f"PRESENCE_ABUSE_{kind.upper()}_LIMIT")
        window = getattr(settings, f"PRESENCE_ABUSE_{kind.upper()}_WINDOW")
        now_ms = int(time.time() * 1000)
        count, first_ms, _ = await store.connect_count(
            kind=kind, key=key, now_ms=now_ms, window_ms=window * 1000, member=uuid.uuid4().hex,
            ip=ip or "", user_agent=user_agent,
        )  # fmt: skip
        if policies.reconnect_abuse(connects=count, limit=limit):
            await _flag(kind=kind, key=key, user_id=user_id, ip=ip, count=count, first_ms=first_ms, now_ms=now_ms,
                        window=window)  # fmt: skip
    return await store.denial(user_id=user_id if kind == "user" else None, ip=ip if kind == "ip" else None)


async def _flag(
    *, kind: str, key: str, user_id: int | None, ip: str | None, count: int, first_ms: int, now_ms: int, window: int
) -> None:
    cooldown = settings.PRESENCE_ABUSE_COOLDOWN
    newly = await store.once_per(name=f"cooldown:{kind}:{key}", ttl=max(cooldown, 1))
    if cooldown > 0 and newly:
        await store.deny(kind=kind, key=key, reason=ABUSE_MESSAGE, seconds=cooldown)
        if kind == "user" and user_id is not None:
            # Open sockets of the flagged user get an error frame and close 4029.
            await agroup_send(user_group(user_id), connection_abuse_event(message=ABUSE_MESSAGE))
    if not await store.once_per(name=f"flag:{kind}:{key}", ttl=FLAG_WRITE_EVERY):
        return
    ips, user_agents = await store.connect_window_sources(kind=kind, key=key)
    await database_sync_to_async(moderation.flag_record)(
        kind=AbuseFlag.Kind.USER if kind == "user" else AbuseFlag.Kind.IP,
        user_id=user_id if kind == "user" else None,
        ip=ip if kind == "ip" else None,
        connects=count,
        window_seconds=window,
        first_seen=datetime.fromtimestamp(first_ms / 1000, UTC),
        last_seen=datetime.fromtimestamp(now_ms / 1000, UTC),
        ips=ips,
        user_agents=user_agents,
    )
    logger.warning("reconnect abuse flagged: %s %s, %d connects in %ds", kind, key, count, window)
