"""Writes for rooms and messages. Broadcasts go through chatsite.realtime after commit."""

from __future__ import annotations

from dataclasses import dataclass
from functools import reduce
from operator import or_

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.db.models import Q

from accounts.selectors import user_by_username
from chatsite import realtime
from rooms import selectors
from rooms.errors import forbidden, not_found
from rooms.events import encode, message_frame, room_message_event, user_frame_event
from rooms.models import Conversation, Message, Room


def room_resolve(*, user: AbstractBaseUser, slug: str) -> Room:
    """The room named ``slug``, created (public, by ``user``) if it does not exist yet.
    Raises forbidden for a private room ``user`` may not join. Idempotent under races."""
    room = Room.objects.filter(slug=slug).first()
    if room is None:
        try:
            with transaction.atomic():
                room = Room.objects.create(slug=slug, title=slug, created_by=user)
        except IntegrityError:
            room = Room.objects.get(slug=slug)
    if not selectors.room_accessible(room=room, user=user):
        raise forbidden(f"room '{slug}' is private")
    return room


def room_join_state(*, room: Room, since: int | None, recovery_limit: int) -> dict:
    """What a `joined` reply needs: the newest id, and with ``since`` the missed messages."""
    if since is None:
        return {"last_id": selectors.room_last_id(room=room), "messages": [], "more": False}
    messages, more = selectors.room_messages_since(room=room, since=since, limit=recovery_limit)
    last_id = selectors.room_last_id(room=room) if more or not messages else messages[-1]["id"]
    return {"last_id": last_id, "messages": messages, "more": more}


def _message_create_idempotent(*, fields: dict, related: tuple[str, ...]) -> tuple[Message, bool]:
    """Insert, or on a (sender, client_id) conflict return the stored original.
    The unique constraint decides, so two racing resends cannot both insert."""
    try:
        with transaction.atomic():
            return Message.objects.create(**fields), True
    except IntegrityError:
        if fields.get("client_id") is None:
            raise
        original = Message.objects.select_related(*related).get(sender=fields["sender"], client_id=fields["client_id"])
        return original, False


@transaction.atomic
def room_message_create(*, room: Room, sender: AbstractBaseUser, body: str, client_id: str | None) -> tuple[dict, bool]:
    """Persist one room message, then (on commit) broadcast it to the room group: for
    sync callers (scripts, the shell, tests). The chat socket writes in batches through
    room_messages_create. Returns the `chat` frame and whether it is new; a resend
    returns the original."""
    (stored,) = room_messages_create([RoomChat(room=room, sender=sender, body=body, client_id=client_id)])
    if stored.publish is not None:
        realtime.send_on_commit(*stored.publish)
    return stored.frame, stored.created


@dataclass(frozen=True)
class RoomChat:
    """One `chat` frame to persist (see room_messages_create)."""

    room: Room
    sender: AbstractBaseUser
    body: str
    client_id: str | None


@dataclass(frozen=True)
class Stored:
    """What room_messages_create made of one RoomChat: its `chat` frame, whether it is new
    (False: a resend, and ``frame`` is the original), and for a new one the room event to
    publish once the transaction has committed."""

    frame: dict
    created: bool
    publish: tuple[str, dict] | None = None


def room_messages_create(chats: list[RoomChat]) -> list[Stored]:
    """Persist many room messages in one transaction (a Batcher's write: one ORM-thread
    crossing for every chat frame that arrived meanwhile). The caller publishes each
    ``Stored.publish`` after this returns, in order (ids ascend with the list).

    Resends are answered with the stored original: one query finds the (sender,
    client_id) pairs already stored, a repeat within the batch is a resend of its first
    occurrence, and the rest is one multi-row INSERT. If another process inserted one of
    the pairs in between, the unique constraint refuses the INSERT and the batch falls
    back to one savepoint per message (room_message_create's path)."""
    with transaction.atomic():
        try:
            with transaction.atomic():
                return _room_messages_insert(chats)
        except IntegrityError:
            return [_room_message_store(chat) for chat in chats]


def _room_messages_insert(chats: list[RoomChat]) -> list[Stored]:
    keyed = [(chat.sender.pk, chat.client_id) for chat in chats if chat.client_id is not None]
    stored: dict[tuple[int, str], Message] = {}
    if keyed:
        pairs = reduce(or_, (Q(sender_id=sender, client_id=client_id) for sender, client_id in set(keyed)))
        stored = {(m.sender_id, m.client_id): m for m in Message.objects.filter(pairs).select_related("room", "sender")}
    rows: list[Message] = []
    first: dict[tuple[int, str], Message] = {}
    plan: list[tuple[Message, bool]] = []  # (message, created) per chat
    for chat in chats:
        key = (chat.sender.pk, chat.client_id) if chat.client_id is not None else None
        original = stored.get(key) or first.get(key) if key else None
        if original is not None:
            plan.append((original, False))
            continue
        row = Message(room=chat.room, sender=chat.sender, body=chat.body, client_id=chat.client_id)
        rows.append(row)
        if key:
            first[key] = row
        plan.append((row, True))
    Message.objects.bulk_create(rows)  # sets each row's id (RETURNING on SQLite and PostgreSQL)
    return [_stored(message, created) for message, created in plan]


def _room_message_store(chat: RoomChat) -> Stored:
    message, created = _message_create_idempotent(
        fields={"room": chat.room, "sender": chat.sender, "body": chat.body, "client_id": chat.client_id},
        related=("room", "sender", "recipient"),
    )
    return _stored(message, created)


def _stored(message: Message, created: bool) -> Stored:
    frame = message_frame(message)
    if not created:
        return Stored(frame=frame, created=False)
    event = room_message_event(room_id=message.room_id, message_id=message.id, text=encode(frame))
    return Stored(frame=frame, created=True, publish=(realtime.room_group(message.room_id), event))


def conversation_get_or_create(*, user: AbstractBaseUser, other: AbstractBaseUser) -> Conversation:
    low, high = sorted([user.pk, other.pk])
    conversation, _ = Conversation.objects.get_or_create(user_low_id=low, user_high_id=high)
    return conversation


@transaction.atomic
def private_message_create(*, sender: AbstractBaseUser, to: str, body: str, client_id: str | None) -> tuple[dict, bool]:
    """Persist a private message, then (on commit) deliver it to every open connection of
    the recipient and of the sender. Returns the `private` frame and whether it is new."""
    recipient = user_by_username(username=to)
    if recipient is None:
        raise not_found(f"no user '{to}'")
    conversation = conversation_get_or_create(user=sender, other=recipient)
    message, created = _message_create_idempotent(
        fields={
            "conversation": conversation,
            "sender": sender,
            "recipient": recipient,
            "body": body,
            "client_id": client_id,
        },
        related=("room", "sender", "recipient"),
    )
    frame = message_frame(message)
    if created:
        event = user_frame_event(text=encode(frame))
        for user_id in {sender.pk, recipient.pk}:
            realtime.send_on_commit(realtime.user_group(user_id), event)
    return frame, created
