"""Writes for rooms and messages. Broadcasts go through chatsite.realtime after commit."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction

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
    """Persist a room message, then (on commit) broadcast it to the room group.
    Returns the `chat` frame and whether it is new; a resend returns the original."""
    message, created = _message_create_idempotent(
        fields={"room": room, "sender": sender, "body": body, "client_id": client_id},
        related=("room", "sender", "recipient"),
    )
    frame = message_frame(message)
    if created:
        realtime.send_on_commit(
            realtime.room_group(room.id),
            room_message_event(room_id=room.id, message_id=message.id, text=encode(frame)),
        )
    return frame, created


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
