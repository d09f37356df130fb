"""The moderators' live dashboard: one snapshot of the registry, in aggregates."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta

from asgiref.sync import async_to_sync
from django.conf import settings
from django.db.models import Count, Q
from django.utils import timezone

from presence import store
from presence.models import AbuseFlag, Block, Connection, ModerationAction, ServerProcess
from presence.selectors import connections_open

# Distinct `rooms` values read per snapshot (each is one combination of rooms that some
# open connections share); past it, the per-room counts are marked incomplete.
ROOM_COMBINATIONS_READ = 2000
ROOMS_SHOWN = 50
SERVERS_SHOWN = 50
ACTIONS_SHOWN = 10


def dashboard_snapshot(*, now: datetime | None = None) -> dict:
    """Users online, connections (in all, per room, per process), connects per minute,
    open flags, active blocks, recent actions. Seven aggregate queries and two Redis
    reads, whatever the number of connections; returns plain JSON-ready values."""
    now = now or timezone.now()
    alive = set(async_to_sync(store.servers_alive)())
    open_connections = connections_open()

    totals = open_connections.aggregate(connections=Count("pk"), users=Count("user", distinct=True))

    per_rooms = open_connections.values("rooms").annotate(n=Count("pk")).order_by("-n")[: ROOM_COMBINATIONS_READ + 1]
    per_rooms = list(per_rooms)
    rooms: Counter[str] = Counter()
    for row in per_rooms[:ROOM_COMBINATIONS_READ]:
        for slug in row["rooms"].split():
            rooms[slug] += row["n"]

    servers = (
        ServerProcess.objects.filter(stopped_at__isnull=True)
        .annotate(open=Count("connections", filter=Q(connections__closed_at__isnull=True)))
        .order_by("name")
        .values("id", "name", "hostname", "pid", "last_heartbeat", "open")[:SERVERS_SHOWN]
    )

    windows = {1: now - timedelta(minutes=1), 5: now - timedelta(minutes=5), 15: now - timedelta(minutes=15)}
    connects = Connection.objects.filter(connected_at__gte=windows[15], connected_at__lte=now).aggregate(
        **{f"m{m}": Count("pk", filter=Q(connected_at__gte=since)) for m, since in windows.items()}
    )

    actions = ModerationAction.objects.order_by("-created_at").values(
        "id", "kind", "created_at", "reason", "ip", "until", "by__username", "user__username"
    )[:ACTIONS_SHOWN]

    return {
        "generated_at": now.isoformat(),
        "heartbeat": settings.CHAT_HEARTBEAT,
        "users_online": totals["users"],
        "connections_open": totals["connections"],
        "rooms": [{"room": slug, "connections": n} for slug, n in rooms.most_common(ROOMS_SHOWN)],
        "rooms_total": len(rooms),
        "rooms_complete": len(per_rooms) <= ROOM_COMBINATIONS_READ,
        "servers": [
            {
                "id": s["id"],
                "name": s["name"],
                "hostname": s["hostname"],
                "pid": s["pid"],
                "last_heartbeat": _iso(s["last_heartbeat"]),
                "alive": s["name"] in alive,
                "connections": s["open"],
            }
            for s in servers
        ],
        "connects": {
            str(minutes): {"count": connects[f"m{minutes}"], "per_minute": round(connects[f"m{minutes}"] / minutes, 1)}
            for minutes in windows
        },
        "flags_open": AbuseFlag.objects.filter(cleared_at__isnull=True).count(),
        "blocks_active": Block.objects.filter(lifted_at__isnull=True, until__gt=now).count(),
        "actions": [
            {
                "id": a["id"],
                "kind": a["kind"],
                "at": _iso(a["created_at"]),
                "by": a["by__username"],
                "whom": a["user__username"] or a["ip"],
                "reason": a["reason"],
                "until": _iso(a["until"]),
            }
            for a in actions
        ],
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None
