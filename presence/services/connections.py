"""The connection registry: one row per socket, written at connect and at close;
last_seen, round-trip time and rooms arrive in one batch per process per heartbeat."""

from __future__ import annotations

import socket
from datetime import datetime

from django.db import connections, transaction
from django.utils import timezone

from presence.models import Connection, ServerProcess


def server_register(*, name: str, pid: int) -> int:
    """Record this process; returns its row id. Idempotent."""
    server, _ = ServerProcess.objects.get_or_create(
        name=name, defaults={"hostname": socket.gethostname()[:100], "pid": pid, "last_heartbeat": timezone.now()}
    )
    return server.pk


def connection_open(
    *, id: str, user_id: int, server_id: int, channel_name: str, ip: str | None, user_agent: str, now: datetime
) -> None:
    """Insert the row of a socket that is about to be accepted. One INSERT."""
    Connection.objects.create(
        id=id,
        user_id=user_id,
        server_id=server_id,
        channel_name=channel_name,
        ip=ip or None,
        user_agent=user_agent[:300],
        connected_at=now,
        last_seen=now,
    )


def connection_close(*, id: str, code: int | None, reason: str = "", last_seen: datetime | None = None) -> int:
    """Mark a socket closed; idempotent (a closed row keeps its first close). Returns 0 or 1."""
    now = timezone.now()
    return Connection.objects.filter(id=id, closed_at__isnull=True).update(
        closed_at=now, close_code=code, close_reason=reason[:200], last_seen=last_seen or now
    )


@transaction.atomic
def server_heartbeat(*, server_id: int, updates: list[dict]) -> None:
    """One batch per process per heartbeat: the process's own heartbeat time, and for each
    socket that changed {id, last_seen, rtt_ms, rooms (list of names)}.

    The rows go out as one prepared UPDATE executed for each socket (executemany): the
    ORM's bulk_update builds a CASE expression per field and row, which for 1,000 sockets
    held the process's one ORM thread for about a third of a second, and every chat
    message waited behind it."""
    ServerProcess.objects.filter(pk=server_id).update(last_heartbeat=timezone.now(), stopped_at=None)
    if not updates:
        return
    db = connections[Connection.objects.db]
    q, adapt = db.ops.quote_name, db.ops.adapt_datetimefield_value
    sql = (
        f"UPDATE {q(Connection._meta.db_table)} SET {q('last_seen')} = %s, {q('rtt_ms')} = %s, {q('rooms')} = %s "
        f"WHERE {q('id')} = %s"
    )
    rows = [(adapt(u["last_seen"]), u.get("rtt_ms"), " " + " ".join(u["rooms"]) + " ", u["id"]) for u in updates]
    with db.cursor() as cursor:
        cursor.executemany(sql, rows)


def server_connections_close(*, server: str, code: int, reason: str) -> list[dict]:
    """Close every open connection a dead process left behind. Idempotent.
    Returns the closed ones as {id, user_id, ip}."""
    now = timezone.now()
    with transaction.atomic():
        rows = list(
            Connection.objects.select_for_update()
            .filter(server__name=server, closed_at__isnull=True)
            .values("id", "user_id", "ip")
        )
        Connection.objects.filter(id__in=[r["id"] for r in rows]).update(
            closed_at=now, close_code=code, close_reason=reason
        )
        ServerProcess.objects.filter(name=server, stopped_at__isnull=True).update(stopped_at=now)
    return rows


def servers_stale(*, before: datetime, exclude: str) -> list[str]:
    """Processes that have not heartbeated since ``before`` and still have open connections
    (found in the database, for when Redis lost the leases, e.g. a Redis restart)."""
    return list(
        ServerProcess.objects.filter(stopped_at__isnull=True, last_heartbeat__lt=before)
        .exclude(name=exclude)
        .values_list("name", flat=True)
    )
