"""Server pushes from backend services (PROTOCOL.md §5): a `notify` frame to a user's
open connections, to everyone in a room, or to one connection."""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import async_to_sync

from accounts.selectors import user_by_username
from chatsite import realtime
from presence import store
from presence.selectors import connections_open
from rooms.events import ErrorCode, encode, notify_frame, room_frame_event, user_frame_event
from rooms.models import Room
from rooms.policies import room_slug_valid

logger = logging.getLogger(__name__)

TARGETS = ("user", "room", "connection")


class PushError(Exception):
    """A push that cannot be made: ``code`` is ErrorCode.INVALID or ErrorCode.NOT_FOUND."""

    def __init__(self, code: ErrorCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def push_send(*, target: dict[str, Any], topic: str, data: Any) -> dict:
    """Send `notify` {topic, data} to the target's sockets now, on every process; at most
    once (the channel layer may drop it while Redis reconnects). Writes nothing.
    ``target`` is {"user": username}, {"room": slug} or {"connection": id}. Returns
    {"delivered": sockets reached, "offline": [the targeted user, if they have none]}.
    Raises PushError(NOT_FOUND) for an unknown user, room or (open) connection."""
    if len(target) != 1 or next(iter(target)) not in TARGETS:
        raise PushError(ErrorCode.INVALID, "the target is exactly one of 'user', 'room' or 'connection'")
    kind, value = next(iter(target.items()))
    text = encode(notify_frame(topic=topic, data=data))
    if kind == "user":
        result = _push_user(username=value, text=text)
    elif kind == "room":
        result = _push_room(slug=value, text=text)
    else:
        result = _push_connection(id=value, text=text)
    logger.info("push to %s: delivered %d, offline %d", kind, result["delivered"], len(result["offline"]))
    return result


def _push_user(*, username: str, text: str) -> dict:
    user = user_by_username(username=username) if isinstance(username, str) else None
    if user is None:
        raise PushError(ErrorCode.NOT_FOUND, "no such user")
    delivered = connections_open().filter(user_id=user.pk).count()
    # Sent even when the registry has none: the user group is the truth of who receives.
    realtime.group_send(realtime.user_group(user.pk), user_frame_event(text=text))
    return {"delivered": delivered, "offline": [] if delivered else [user.get_username()]}


def _push_room(*, slug: str, text: str) -> dict:
    room = Room.objects.filter(slug=slug).only("id").first() if room_slug_valid(slug=slug) else None
    if room is None:
        raise PushError(ErrorCode.NOT_FOUND, "no such room")
    delivered = async_to_sync(store.room_channel_count)(room_id=room.id)
    realtime.group_send(realtime.room_group(room.id), room_frame_event(room_id=room.id, text=text))
    return {"delivered": delivered, "offline": []}


def _push_connection(*, id: str, text: str) -> dict:
    channel = None
    if isinstance(id, str):
        channel = connections_open().filter(pk=id).values_list("channel_name", flat=True).first()
    if channel is None:
        raise PushError(ErrorCode.NOT_FOUND, "no such open connection")
    realtime.channel_send(channel, user_frame_event(text=text))
    return {"delivered": 1, "offline": []}
