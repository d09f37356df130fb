"""Kicks, blocks and abuse flags. Every action is recorded (who, whom, when, why) and
reaches the socket on whichever process holds it, after the transaction commits."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from asgiref.sync import async_to_sync
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from chatsite import realtime
from presence import store
from presence.models import AbuseFlag, Block, Connection, ModerationAction
from rooms.events import connection_kick_event

KICK_REASON_DEFAULT = "disconnected by a moderator"


@transaction.atomic
def connections_kick(*, connections: QuerySet[Connection], by: AbstractBaseUser | None, reason: str = "") -> int:
    """Kick the given connections that are still open: each gets `kicked` then close 4003.
    Idempotent (closed ones are skipped); records one action per connection; returns the count."""
    reason = reason or KICK_REASON_DEFAULT
    open_rows = list(connections.filter(closed_at__isnull=True).values("id", "user_id", "ip", "channel_name"))
    ModerationAction.objects.bulk_create(
        [
            ModerationAction(
                kind=ModerationAction.Kind.KICK, by=by, user_id=r["user_id"], ip=r["ip"], connection_id=r["id"],
                reason=reason,
            )
            for r in open_rows
        ]
    )  # fmt: skip
    event = connection_kick_event(reason=reason)
    for row in open_rows:
        realtime.channel_send_on_commit(row["channel_name"], event)
    return len(open_rows)


def users_kick(*, users: Iterable[AbstractBaseUser], by: AbstractBaseUser | None, reason: str = "") -> int:
    """Kick every open connection of these users, on every process. Returns the count."""
    return connections_kick(connections=Connection.objects.filter(user__in=list(users)), by=by, reason=reason)


def room_kick(*, room_id: int, by: AbstractBaseUser | None, reason: str = "") -> int:
    """Kick every connection that is in the room now (as presence knows it). Returns the count."""
    channels = async_to_sync(store.room_channels)(room_id=room_id)
    return connections_kick(connections=Connection.objects.filter(channel_name__in=channels), by=by, reason=reason)


def user_sockets_close(*, user: AbstractBaseUser, reason: str) -> None:
    """Close a user's sockets without recording a moderation action (logout, password
    change, deactivation): their `scope["user"]` is frozen at connect."""
    transaction.on_commit(
        lambda: realtime.group_send(realtime.user_group(user.pk), connection_kick_event(reason=reason))
    )


@transaction.atomic
def users_block(
    *, users: Iterable[AbstractBaseUser], by: AbstractBaseUser | None, minutes: int, reason: str = ""
) -> int:
    """Block users for ``minutes`` (refused at the handshake) and kick their open sockets.
    Records a block and an action per user; returns how many users were blocked."""
    users = list(users)
    until = timezone.now() + timedelta(minutes=minutes)
    reason = reason or f"blocked by a moderator for {minutes} min"
    for user in users:
        Block.objects.create(user=user, until=until, reason=reason, created_by=by)
        ModerationAction.objects.create(kind=ModerationAction.Kind.BLOCK, by=by, user=user, reason=reason, until=until)
        _deny_on_commit(kind="user", key=str(user.pk), reason=reason, until=until)
    connections_kick(connections=Connection.objects.filter(user__in=users), by=by, reason=reason)
    return len(users)


@transaction.atomic
def ips_block(*, ips: Iterable[str], by: AbstractBaseUser | None, minutes: int, reason: str = "") -> int:
    """Block IP addresses for ``minutes`` and kick their open sockets. Returns the count."""
    ips = sorted(set(ips))
    until = timezone.now() + timedelta(minutes=minutes)
    reason = reason or f"blocked by a moderator for {minutes} min"
    for ip in ips:
        Block.objects.create(ip=ip, until=until, reason=reason, created_by=by)
        ModerationAction.objects.create(kind=ModerationAction.Kind.BLOCK, by=by, ip=ip, reason=reason, until=until)
        _deny_on_commit(kind="ip", key=ip, reason=reason, until=until)
    connections_kick(connections=Connection.objects.filter(ip__in=ips), by=by, reason=reason)
    return len(ips)


@transaction.atomic
def blocks_lift(*, blocks: QuerySet[Block], by: AbstractBaseUser | None) -> int:
    """End blocks early (also any abuse cool-down of the same subject). Idempotent; returns the count."""
    now = timezone.now()
    lifted = list(blocks.filter(lifted_at__isnull=True, until__gt=now))
    for block in lifted:
        block.lifted_at = now
        block.save(update_fields=["lifted_at"])
        ModerationAction.objects.create(
            kind=ModerationAction.Kind.UNBLOCK, by=by, user=block.user, ip=block.ip, reason="lifted"
        )
        kind, key = ("user", str(block.user_id)) if block.user_id else ("ip", block.ip)
        transaction.on_commit(lambda kind=kind, key=key: async_to_sync(store.undeny)(kind=kind, key=key))
    return len(lifted)


def blocks_active() -> list[tuple[str, str, str, float]]:
    """(kind, key, reason, seconds left) of every block in force, for restoring Redis."""
    now = timezone.now()
    rows = Block.objects.filter(lifted_at__isnull=True, until__gt=now).values_list("user_id", "ip", "reason", "until")
    return [
        ("user", str(user_id), reason, (until - now).total_seconds())
        if user_id
        else ("ip", ip, reason, (until - now).total_seconds())
        for user_id, ip, reason, until in rows
    ]


def _deny_on_commit(*, kind: str, key: str, reason: str, until: datetime) -> None:
    seconds = (until - timezone.now()).total_seconds()
    transaction.on_commit(lambda: async_to_sync(store.deny)(kind=kind, key=key, reason=reason, seconds=seconds))


# --- Abuse flags ------------------------------------------------------------------------


def flag_record(
    *,
    kind: str,
    user_id: int | None,
    ip: str | None,
    connects: int,
    window_seconds: int,
    first_seen: datetime,
    last_seen: datetime,
    ips: list[str],
    user_agents: list[str],
) -> AbuseFlag:
    """Raise a flag, or update the open one of the same subject. Returns it."""
    subject = {"user_id": user_id} if kind == AbuseFlag.Kind.USER else {"ip": ip}
    flag = AbuseFlag.objects.filter(kind=kind, cleared_at__isnull=True, **subject).first()
    if flag is None:
        return AbuseFlag.objects.create(
            kind=kind,
            connects=connects,
            window_seconds=window_seconds,
            first_seen=first_seen,
            last_seen=last_seen,
            ips=ips,
            user_agents=user_agents,
            **subject,
        )
    flag.connects = max(flag.connects, connects)
    flag.last_seen = last_seen
    flag.ips = list(dict.fromkeys([*flag.ips, *ips]))[:50]
    flag.user_agents = list(dict.fromkeys([*flag.user_agents, *user_agents]))[:50]
    flag.save(update_fields=["connects", "last_seen", "ips", "user_agents"])
    return flag


def flags_clear(*, flags: QuerySet[AbuseFlag], by: AbstractBaseUser | None) -> int:
    """Close flags (and end their cool-downs). Idempotent; returns how many were open."""
    open_flags = list(flags.filter(cleared_at__isnull=True))
    AbuseFlag.objects.filter(pk__in=[f.pk for f in open_flags]).update(cleared_at=timezone.now(), cleared_by=by)
    for flag in open_flags:
        kind, key = ("user", str(flag.user_id)) if flag.kind == AbuseFlag.Kind.USER else ("ip", flag.ip)
        async_to_sync(store.undeny)(kind=kind, key=key)
    return len(open_flags)


def flags_block(*, flags: QuerySet[AbuseFlag], by: AbstractBaseUser | None, minutes: int) -> int:
    """Block the subjects of these flags for ``minutes``. Returns how many subjects."""
    flags = list(flags.select_related("user"))
    users = {f.user for f in flags if f.kind == AbuseFlag.Kind.USER and f.user is not None}
    ips = {f.ip for f in flags if f.kind == AbuseFlag.Kind.IP and f.ip}
    reason = f"blocked for reconnect abuse for {minutes} min"
    count = users_block(users=users, by=by, minutes=minutes, reason=reason) if users else 0
    return count + (ips_block(ips=ips, by=by, minutes=minutes, reason=reason) if ips else 0)


def blocks_unblock_subjects(*, flags: QuerySet[AbuseFlag], by: AbstractBaseUser | None) -> int:
    """Lift the active blocks of these flags' subjects. Returns how many blocks were lifted."""
    flags = list(flags)
    user_ids = [f.user_id for f in flags if f.user_id]
    ips = [f.ip for f in flags if f.ip and f.kind == AbuseFlag.Kind.IP]
    blocks = Block.objects.filter(user_id__in=user_ids) | Block.objects.filter(ip__in=ips)
    return blocks_lift(blocks=blocks, by=by)
