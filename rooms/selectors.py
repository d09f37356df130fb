"""Reads for rooms and messages. Each returns concrete values (lists, dicts), never a
lazy QuerySet, so it can be called across database_sync_to_async."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db import connections
from django.db.models import Q

from accounts.selectors import user_by_username
from rooms import policies
from rooms.errors import forbidden, not_found
from rooms.events import message_frame
from rooms.models import Conversation, Message, Room

ROOMS_LIST_MAX = 500


def room_accessible(*, room: Room, user: AbstractBaseUser) -> bool:
    """Whether ``user`` may read and join ``room`` (a query only for private rooms)."""
    is_member = not room.is_public and room.members.filter(pk=user.pk).exists()
    return policies.room_access(is_public=room.is_public, is_member=is_member, is_creator=room.created_by_id == user.pk)


def _page(messages: list[Message], limit: int) -> tuple[list[dict], bool]:
    """Newest-first rows fetched with limit+1 -> (frames oldest first, has_more)."""
    has_more = len(messages) > limit
    return [message_frame(m) for m in reversed(messages[:limit])], has_more


def room_history(*, user: AbstractBaseUser, slug: str, before: int | None, limit: int) -> tuple[list[dict], bool]:
    """Up to ``limit`` messages of a room before id ``before`` (newest if None), oldest first,
    and whether older ones exist. Two indexed queries; raises not_found / forbidden."""
    room = Room.objects.filter(slug=slug).first()
    if room is None:
        raise not_found(f"no room '{slug}'")
    if not room_accessible(room=room, user=user):
        raise forbidden(f"room '{slug}' is private")
    rows = room.messages.select_related("sender")
    if before is not None:
        rows = rows.filter(id__lt=before)
    return _page(list(rows.order_by("-id")[: limit + 1]), limit)


def conversation_find(*, user: AbstractBaseUser, other: AbstractBaseUser) -> Conversation | None:
    low, high = sorted([user.pk, other.pk])
    return Conversation.objects.filter(user_low_id=low, user_high_id=high).first()


def conversation_history(
    *, user: AbstractBaseUser, with_username: str, before: int | None, limit: int
) -> tuple[list[dict], bool]:
    """Private messages between ``user`` and another user, like room_history."""
    other = user_by_username(username=with_username)
    if other is None:
        raise not_found(f"no user '{with_username}'")
    conversation = conversation_find(user=user, other=other)
    if conversation is None:
        return [], False
    rows = conversation.messages.select_related("sender", "recipient")
    if before is not None:
        rows = rows.filter(id__lt=before)
    return _page(list(rows.order_by("-id")[: limit + 1]), limit)


def room_messages_since(*, room: Room, since: int, limit: int) -> tuple[list[dict], bool]:
    """Messages of ``room`` after id ``since``, oldest first, at most ``limit``, and whether
    more were missed. One indexed range query."""
    rows = list(room.messages.select_related("sender").filter(id__gt=since).order_by("id")[: limit + 1])
    return [message_frame(m) for m in rows[:limit]], len(rows) > limit


def room_ids_after(*, room_id: int, since: int | None, limit: int) -> tuple[int | None, list[int]]:
    """The room's newest message id, and the ids after ``since`` oldest first (at most
    ``limit``; none without ``since``). Raw SQL on the (room, id) index, no row loaded:
    the RoomHub runs it for every join, so it skips the ORM's query compilation."""
    db = connections[Message.objects.db]
    q = db.ops.quote_name
    table, room_col, id_col = q(Message._meta.db_table), q("room_id"), q("id")
    with db.cursor() as cursor:
        cursor.execute(f"SELECT MAX({id_col}) FROM {table} WHERE {room_col} = %s", [room_id])
        newest = cursor.fetchone()[0]
        if since is None or newest is None or newest <= since:
            return newest, []
        cursor.execute(
            f"SELECT {id_col} FROM {table} WHERE {room_col} = %s AND {id_col} > %s ORDER BY {id_col} LIMIT %s",
            [room_id, since, limit],
        )
        return newest, [row[0] for row in cursor.fetchall()]


def room_messages_created_since(*, room_ids: list[int], since, limit: int) -> list[tuple[int, dict]]:
    """(room id, `chat` frame) of the messages of those rooms created at or after ``since``,
    oldest first, at most ``limit`` (the newest ones if there are more)."""
    rows = list(
        Message.objects.select_related("room", "sender")
        .filter(room_id__in=room_ids, created_at__gte=since)
        .order_by("-id")[:limit]
    )
    return [(m.room_id, message_frame(m)) for m in reversed(rows)]


def room_last_id(*, room: Room) -> int | None:
    return room.messages.order_by("-id").values_list("id", flat=True).first()


def rooms_visible(*, user: AbstractBaseUser) -> list[dict]:
    """The rooms ``user`` may join: {id, room, title}, by name."""
    rows = (
        Room.objects.filter(Q(is_public=True) | Q(members=user) | Q(created_by=user))
        .distinct()
        .order_by("slug")
        .values("id", "slug", "title")[:ROOMS_LIST_MAX]
    )
    return [{"id": r["id"], "room": r["slug"], "title": r["title"] or r["slug"]} for r in rows]
