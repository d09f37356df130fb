"""The connection registry: one row per socket, written at connect and at close;
last_seen, round-trip time and rooms arrive in one batch per process per heartbeat.
Opens and closes come in batches too (presence/runtime.py groups the sockets that
connect or close while the ORM thread is busy: chatsite/batching.py)."""

from __future__ import annotations

import socket
from datetime import datetime

from django.db import DatabaseError, connections, transaction
from django.utils import timezone

from presence.models import Connection, ServerProcess


def server_register(*, name: str, pid: int) -> int:
    """Record this process; returns its row id. Idempotent."""
    server, _ = ServerProcess.objects.get_or_create(
        name=name, defaults={"hostname": socket.gethostname()[:100], "pid": pid, "last_heartbeat": timezone.now()}
    )
    return server.pk


def connections_open(*, rows: list[dict]) -> list[BaseException | None]:
    """Insert the rows of sockets about to be accepted ({id, user_id, server_id, channel_name,
    ip, user_agent, now}): one transaction, one prepared INSERT executed per row. If it
    fails, each row is tried alone, so a bad row (say, a user deleted meanwhile) fails only
    its own connect. Returns None per row inserted, or the exception that row met.

    The INSERT is prepared once (executemany of every concrete field, each value prepared
    by its field as the ORM does): bulk_create's compilation cost the ORM thread about as
    much as the insert itself."""
    try:
        _connections_insert(rows)
        return [None] * len(rows)
    except DatabaseError as exc:
        if len(rows) == 1:
            return [exc]
    results: list[BaseException | None] = []
    for row in rows:
        try:
            _connections_insert([row])
            results.append(None)
        except DatabaseError as exc:
            results.append(exc)
    return results


def _connections_insert(rows: list[dict]) -> None:
    db = connections[Connection.objects.db]
    fields = Connection._meta.concrete_fields
    q = db.ops.quote_name
    sql = (
        f"INSERT INTO {q(Connection._meta.db_table)} ({', '.join(q(f.column) for f in fields)}) "
        f"VALUES ({', '.join(['%s'] * len(fields))})"
    )
    values = []
    for row in rows:
        connection = _connection(row)
        values.append([f.get_db_prep_save(f.pre_save(connection, add=True), connection=db) for f in fields])
    with transaction.atomic(using=db.alias), db.cursor() as cursor:
        cursor.executemany(sql, values)


def _connection(row: dict) -> Connection:
    return Connection(
        id=row["id"],
        user_id=row["user_id"],
        server_id=row["server_id"],
        channel_name=row["channel_name"],
        ip=row["ip"] or None,
        user_agent=row["user_agent"][:300],
        connected_at=row["now"],
        last_seen=row["now"],
    )


@transaction.atomic
def connections_close(*, closes: list[dict]) -> list[None]:
    """Mark sockets closed ({id, code, reason, last_seen}); idempotent (a closed row keeps
    its first close). One transaction, one prepared UPDATE executed per row (executemany)."""
    db = connections[Connection.objects.db]
    q, adapt = db.ops.quote_name, db.ops.adapt_datetimefield_value
    sql = (
        f"UPDATE {q(Connection._meta.db_table)} SET {q('closed_at')} = %s, {q('close_code')} = %s, "
        f"{q('close_reason')} = %s, {q('last_seen')} = %s WHERE {q('id')} = %s AND {q('closed_at')} IS NULL"
    )
    now = adapt(timezone.now())
    rows = [
        (now, c["code"], c["reason"][:200], adapt(c["last_seen"]) if c.get("last_seen") else now, c["id"])
        for c in closes
    ]
    with db.cursor() as cursor:
        cursor.executemany(sql, rows)
    return [None] * len(closes)


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
