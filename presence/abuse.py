"""Reconnect-abuse detection at the handshake: fetch (Redis counters), decide (policy),
record (service). Counting happens in Redis before any database work; the database is
written at most once per subject every few seconds, so a reconnect storm does not reach it."""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import replace
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


async def connect_admit(
    *,
    kind: str,
    user_id: int | None,
    ip: str | None,
    user_agent: str,
    registration: store.Registration | None = None,
) -> store.Admission:
    """Count this handshake for the user (kind "user") or the IP (kind "ip"), flag and cool
    down on abuse, and say why it must be refused (block or cool-down) in ``refusal``.
    With a ``registration`` (an authenticated socket), an admitted socket's Redis record is
    written in the same round trip. One Redis round trip unless abuse is detected."""
    key = str(user_id) if kind == "user" else (ip or "")
    count = bool(key) and not exempt(ip=ip)
    limit = getattr(settings, f"PRESENCE_ABUSE_{kind.upper()}_LIMIT")
    window = getattr(settings, f"PRESENCE_ABUSE_{kind.upper()}_WINDOW")
    now_ms = int(time.time() * 1000)
    admission = await store.connect_admit(
        kind=kind, key=key, count=count, now_ms=now_ms, window_ms=window * 1000, member=uuid.uuid4().hex if count else "",
        ip=ip or "", user_agent=user_agent, registration=registration,
    )  # fmt: skip
    if count and policies.reconnect_abuse(connects=admission.connects, limit=limit):
        await _flag(kind=kind, key=key, user_id=user_id, ip=ip, count=admission.connects, first_ms=admission.first_ms,
                    now_ms=now_ms, window=window)  # fmt: skip
        # The flag may have started a cool-down that refuses this very handshake.
        refusal = admission.refusal or await store.denial(
            user_id=user_id if kind == "user" else None, ip=ip if kind == "ip" else None
        )
        if refusal and admission.registered:
            await store.connection_forget(channel=registration.channel, server=registration.server)
        admission = replace(admission, refusal=refusal, registered=admission.registered and not refusal)
    return admission


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
