"""The one event vocabulary: frame types, channel-layer event types, payload builders
and close codes (PROTOCOL.md §2-3). No event-type string literal appears elsewhere."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import IntEnum, StrEnum
from typing import TYPE_CHECKING, Any, TypedDict

if TYPE_CHECKING:
    from rooms.models import Message

PROTOCOL_VERSION = 1


class ClientFrame(StrEnum):
    """Frame types a client sends."""

    JOIN = "join"
    LEAVE = "leave"
    CHAT = "chat"
    PRIVATE = "private"
    HISTORY = "history"
    ROOMS = "rooms"
    TYPING = "typing"
    PING = "ping"


class ServerFrame(StrEnum):
    """Frame types the server sends."""

    WELCOME = "welcome"
    JOINED = "joined"
    LEFT = "left"
    CHAT = "chat"
    PRIVATE = "private"
    HISTORY = "history"
    ROOMS = "rooms"
    PRESENCE = "presence"
    TYPING = "typing"
    PONG = "pong"
    NOTIFY = "notify"
    JOB = "job"
    ERROR = "error"
    KICKED = "kicked"


class ErrorCode(StrEnum):
    BAD_JSON = "bad_json"
    UNKNOWN_TYPE = "unknown_type"
    INVALID = "invalid"
    NOT_FOUND = "not_found"
    FORBIDDEN = "forbidden"
    RATE_LIMITED = "rate_limited"
    INTERNAL = "internal"  # extension: an unexpected server fault; the socket stays open


class CloseCode(IntEnum):
    NORMAL = 1000
    GOING_AWAY = 1001
    TOO_LARGE = 1009
    SERVICE_RESTART = 1012
    KICKED = 4003
    FLOOD = 4008
    RECONNECT_ABUSE = 4029


class LayerEvent(StrEnum):
    """Channel-layer event types; each maps to a ChatConsumer handler of the same name
    with the dot replaced by an underscore. Every one carries a prepared frame."""

    ROOM_MESSAGE = "room.message"  # a `chat` frame for a room group
    ROOM_TYPING = "room.typing"  # a `typing` frame; skipped by the typist's own sockets
    ROOM_PRESENCE = "room.presence"  # a `presence` frame
    USER_FRAME = "user.frame"  # any frame for one user's sockets, or one socket (private, notify)
    ROOM_FRAME = "room.frame"  # any frame for everyone in a room (notify)
    CONNECTION_KICK = "connection.kick"  # send `kicked`, close 4003
    CONNECTION_ABUSE = "connection.abuse"  # send `error`, close 4029
    CONNECTION_DRAIN = "connection.drain"  # close 1012: reconnect elsewhere, soon


def encode(frame: dict[str, Any]) -> str:
    """Encode a frame once; the text is what every receiving socket sends as is."""
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False)


def timestamp(value: datetime) -> str:
    """ISO 8601 UTC with milliseconds, e.g. 2026-11-23T10:33:00.123Z."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- Server frames ---------------------------------------------------------------


class ChatFrame(TypedDict):
    type: str
    id: int
    room: str
    sender: str
    body: str
    created_at: str
    client_id: str | None


class PrivateFrame(TypedDict):
    type: str
    id: int
    sender: str
    to: str
    body: str
    created_at: str
    client_id: str | None


def message_frame(message: Message) -> ChatFrame | PrivateFrame:
    """The `chat` or `private` frame of a stored message (sender, recipient, room loaded)."""
    if message.room_id is not None:
        return ChatFrame(
            type=ServerFrame.CHAT,
            id=message.id,
            room=message.room.slug,
            sender=message.sender.username,
            body=message.body,
            created_at=timestamp(message.created_at),
            client_id=message.client_id,
        )
    return PrivateFrame(
        type=ServerFrame.PRIVATE,
        id=message.id,
        sender=message.sender.username,
        to=message.recipient.username,
        body=message.body,
        created_at=timestamp(message.created_at),
        client_id=message.client_id,
    )


def welcome_frame(*, connection_id: str, user: str, heartbeat: int) -> dict:
    return {
        "type": ServerFrame.WELCOME,
        "protocol": PROTOCOL_VERSION,
        "connection_id": connection_id,
        "user": user,
        "heartbeat": heartbeat,
    }


def joined_frame(*, room: str, online: list[str], last_id: int | None, more: bool) -> dict:
    return {"type": ServerFrame.JOINED, "room": room, "online": online, "last_id": last_id, "more": more}


def left_frame(*, room: str) -> dict:
    return {"type": ServerFrame.LEFT, "room": room}


def history_frame(*, key: str, value: str, messages: list, has_more: bool) -> dict:
    """`key` is "room" or "with"."""
    return {"type": ServerFrame.HISTORY, key: value, "messages": messages, "has_more": has_more}


def rooms_frame(*, rooms: list[dict]) -> dict:
    return {"type": ServerFrame.ROOMS, "rooms": rooms}


def presence_frame(*, room: str, user: str, event: str) -> dict:
    return {"type": ServerFrame.PRESENCE, "room": room, "user": user, "event": event}


def typing_frame(*, room: str, user: str) -> dict:
    return {"type": ServerFrame.TYPING, "room": room, "user": user}


def pong_frame() -> dict:
    return {"type": ServerFrame.PONG}


def notify_frame(*, topic: str, data: object) -> dict:
    return {"type": ServerFrame.NOTIFY, "topic": topic, "data": data}


def kicked_frame(*, reason: str) -> dict:
    return {"type": ServerFrame.KICKED, "reason": reason}


def error_frame(*, code: str, message: str, ref: str | None) -> dict:
    return {"type": ServerFrame.ERROR, "code": code, "message": message, "ref": ref}


# --- Channel-layer events ------------------------------------------------------------
# Each carries `text`, the frame encoded once by the sender of the event.


def room_message_event(*, room_id: int, message_id: int, text: str) -> dict:
    return {"type": LayerEvent.ROOM_MESSAGE, "room_id": room_id, "id": message_id, "text": text}


def room_typing_event(*, room_id: int, user_id: int, text: str) -> dict:
    return {"type": LayerEvent.ROOM_TYPING, "room_id": room_id, "user_id": user_id, "text": text}


def room_presence_event(*, room_id: int, text: str) -> dict:
    return {"type": LayerEvent.ROOM_PRESENCE, "room_id": room_id, "text": text}


def user_frame_event(*, text: str) -> dict:
    return {"type": LayerEvent.USER_FRAME, "text": text}


def room_frame_event(*, room_id: int, text: str) -> dict:
    return {"type": LayerEvent.ROOM_FRAME, "room_id": room_id, "text": text}


def connection_kick_event(*, reason: str) -> dict:
    """For a user group, a room group or one channel: every socket reached is kicked."""
    return {"type": LayerEvent.CONNECTION_KICK, "reason": reason}


def connection_abuse_event(*, message: str) -> dict:
    return {"type": LayerEvent.CONNECTION_ABUSE, "message": message}


def connection_drain_event(*, reason: str) -> dict:
    return {"type": LayerEvent.CONNECTION_DRAIN, "reason": reason}
