"""The chat socket: translates frames into calls of services and selectors.

Each client frame makes at most one database_sync_to_async crossing (a join of a room
this process has not seen yet makes two: resolve the room, then recover). Channel-layer
events carry a frame already encoded by whoever sent it, and are forwarded as is.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from chatsite import metrics
from chatsite.batching import Batcher, per_loop
from chatsite.daphne_compat import SEND_NOW
from chatsite.realtime import agroup_send, apublish, room_group, user_group
from presence import runtime as presence_runtime
from presence import store as presence
from rooms import frames, policies, selectors, services
from rooms.errors import ChatError, forbidden
from rooms.events import (
    ClientFrame,
    CloseCode,
    ErrorCode,
    LayerEvent,
    ServerFrame,
    encode,
    error_frame,
    history_frame,
    joined_frame,
    kicked_frame,
    left_frame,
    pong_frame,
    presence_frame,
    room_presence_event,
    room_typing_event,
    rooms_frame,
    typing_frame,
    welcome_frame,
)
from rooms.hub import hub
from rooms.models import Room

logger = logging.getLogger(__name__)

# Rooms this process has resolved (public ones only: a private room's membership is
# checked on every join). Lets a join subscribe before its one database crossing.
ROOM_CACHE_SECONDS = 60.0
# A socket's chat frames being written at once; past this it is read again only when
# its oldest is stored.
CHATS_IN_FLIGHT = 64
_public_rooms: dict[str, tuple[Room, float]] = {}
# last_seen is kept on the monotonic clock (cheap, immune to clock steps); this converts.
_MONOTONIC_TO_WALL = time.time() - time.monotonic()


async def _publish_stored(results: list) -> None:
    await apublish([r.publish for r in results if isinstance(r, services.Stored) and r.publish is not None])


# Room messages are written by group commit: every chat frame that arrives while a batch
# is being written goes into the next one (chatsite/batching.py), then is published in
# id order. (Looked up at each write, so tests can replace the service.)
room_messages = per_loop(
    lambda: Batcher(lambda chats: services.room_messages_create(chats), name="room-messages", after=_publish_stored)
)


@dataclass
class Joined:
    """A room this socket is in."""

    room: Room
    # With `since`, the ids just recovered: live copies of them that were queued while
    # the join ran are dropped, so nothing arrives twice.
    recovered: set[int] = field(default_factory=set)
    recovered_max: int = 0
    # False after a join that answered `more`: the client must join again with `since`
    # before live messages resume, or it would skip the gap.
    live: bool = True
    # While a join runs: the room events that arrived meanwhile, sent after `joined`
    # and the recovered messages so that nothing overtakes them.
    pending: list[dict] | None = None


class ChatConsumer(AsyncWebsocketConsumer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.user = None
        self.connection_id = uuid.uuid4().hex
        self.joined: dict[str, Joined] = {}  # by room slug
        self.joined_by_id: dict[int, Joined] = {}
        self.bucket = policies.Bucket(tokens=float(settings.CHAT_RATE_BURST), updated=time.monotonic())
        self.strikes = 0
        self.runtime = None  # presence.runtime.Runtime once registered
        self.closing: tuple[int, str] | None = None  # (code, reason) of a close we started
        self.last_seen = time.monotonic()  # any frame from the client; for liveness
        self.rtt_ms: int | None = None
        self.dirty = True  # last_seen, rtt or rooms changed since the last registry flush
        # Daphne's direct send for prepared frames (chatsite/daphne_compat.py); None
        # under another server, where room events take the ASGI send like the rest.
        self.send_now = None
        self.chats_in_flight = 0  # chat frames of this socket queued for writing
        self._replies: set[asyncio.Task] = set()  # answers to those, being sent

    # --- dispatch ------------------------------------------------------------------

    async def dispatch(self, message):
        # Channels runs `aclose_old_connections()` (a hop to the ORM thread and back)
        # before every handler. Ours never touch the ORM outside database_sync_to_async,
        # which closes stale connections itself, so the hop is skipped (PITFALLS.md).
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        if message["type"].startswith("websocket."):
            await handler(message)
            return
        try:
            await handler(message)
        except Exception:
            # A channel-layer event must never end the consumer: an exception escaping
            # here would skip disconnect() and leave the registry and presence behind.
            # The usual cause is a send racing the socket's close; the disconnect follows.
            if self.closing is None and self.runtime is not None:
                logger.exception("event %s failed on connection %s", message["type"], self.connection_id)

    # --- lifecycle -----------------------------------------------------------------

    async def connect(self):
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            metrics.connect(False)
            await self.close()  # before accept: the client gets HTTP 403
            return
        # The per-user abuse count and block check, the Redis record and the registry row.
        opened = await presence_runtime.connection_open(self, user=user)
        if opened.refusal:
            metrics.connect(False)
            await self.close()
            return
        self.user = user
        self.send_now = (self.scope.get("extensions") or {}).get(SEND_NOW)
        self.runtime = opened.runtime
        metrics.connections_open(1)
        await self.channel_layer.group_add(user_group(user.pk), self.channel_name)
        await self.accept()
        metrics.connect(True)
        await self.send_frame(
            welcome_frame(connection_id=self.connection_id, user=user.get_username(), heartbeat=settings.CHAT_HEARTBEAT)
        )
        if opened.draining:
            # The load balancer has not noticed yet: send the client on at once.
            await self.connection_drain({"reason": "server draining"})

    async def disconnect(self, code):
        # It may never run (a killed process): presence/runtime.py sweeps up after that.
        code, reason = self.closing or (code, "closed by client" if code in (1000, 1001) else "connection lost")
        await self._forget(code=code, reason=reason)

    async def _forget(self, *, code: int | None, reason: str) -> None:
        """Leave every room and the registry. Idempotent, and safe after a refused connect."""
        if self.runtime is None:
            return
        runtime, self.runtime = self.runtime, None
        metrics.connections_open(-1)
        metrics.disconnect(code)
        # As _leave for every room, but presence and the Redis record go in one round trip.
        rooms = {}
        for joined in list(self.joined.values()):
            rooms[joined.room.id] = joined.room
            await self._unjoin(joined)
        await self.channel_layer.group_discard(user_group(self.user.pk), self.channel_name)
        last = await presence_runtime.connection_close(
            self, runtime=runtime, code=code, reason=reason, room_ids=list(rooms)
        )
        for room_id in last:
            await self._presence(rooms[room_id], "leave")

    async def close_with(self, *, code: int, reason: str, frame: dict | None = None) -> None:
        """Close from the server side, telling the client why first (daphne drops close reasons)."""
        if self.closing is not None:
            return
        self.closing = (code, reason)
        if frame is not None:
            await self.send_frame(frame)
        await self.close(code=int(code))  # autobahn refuses IntEnum members: a plain int

    def last_seen_at(self) -> datetime:
        return datetime.fromtimestamp(self.last_seen + _MONOTONIC_TO_WALL, UTC)

    def registry_update(self) -> dict | None:
        """What the registry should learn at the next heartbeat flush, or None if nothing."""
        if not self.dirty or self.runtime is None:
            return None
        self.dirty = False
        return {
            "id": self.connection_id,
            "last_seen": self.last_seen_at(),
            "rtt_ms": self.rtt_ms,
            "rooms": sorted(self.joined),
        }

    # --- client frames -------------------------------------------------------------

    async def receive(self, text_data=None, bytes_data=None):
        self.last_seen = time.monotonic()
        self.dirty = True
        limit = settings.CHAT_MAX_FRAME_BYTES
        if text_data is not None:
            # A character is at most 4 bytes: encode only when the text could be too large.
            size = len(text_data) if len(text_data) * 4 <= limit else len(text_data.encode())
        else:
            size = len(bytes_data or b"")
        if size > limit:
            await self.close_with(code=CloseCode.TOO_LARGE, reason="frame too large")
            return
        if not await self._rate_allow(text_data):
            return
        frame = None
        try:
            if text_data is None:
                raise ChatError(ErrorCode.BAD_JSON, "frames must be UTF-8 text, not binary")
            frame = frames.decode(text_data)
            metrics.frame_in(frame["type"])
            handler = self.handlers.get(frame["type"])
            if handler is None:
                raise ChatError(ErrorCode.UNKNOWN_TYPE, f"unknown frame type '{frame['type'][:64]}'")
            await handler(self, frame)
        except ChatError as exc:
            metrics.error(exc.code)
            await self.send_frame(error_frame(code=exc.code, message=exc.message, ref=frames.ref(frame)))
        except Exception:
            logger.exception("frame handling failed on connection %s", self.connection_id)
            metrics.error(ErrorCode.INTERNAL)
            await self.send_frame(
                error_frame(code=ErrorCode.INTERNAL, message="server error; try again", ref=frames.ref(frame))
            )

    async def _rate_allow(self, text_data: str | None) -> bool:
        allowed, self.bucket = policies.rate_take(
            bucket=self.bucket,
            now=time.monotonic(),
            rate=settings.CHAT_RATE_PER_SECOND,
            burst=settings.CHAT_RATE_BURST,
        )
        if allowed:
            self.strikes = 0
            return True
        self.strikes += 1
        metrics.error(ErrorCode.RATE_LIMITED)
        if policies.flood_close(strikes=self.strikes, limit=settings.CHAT_FLOOD_STRIKES):
            logger.info("closing flooding connection %s", self.connection_id)
            await self.close_with(code=CloseCode.FLOOD, reason="flood")
        elif self.strikes == 1 or self.strikes % 5 == 0:
            await self.send_frame(
                error_frame(
                    code=ErrorCode.RATE_LIMITED,
                    message="too many frames; slow down or the connection is closed",
                    ref=frames.ref_of_text(text_data),
                )
            )
        return False

    async def on_join(self, frame: dict) -> None:
        slug = frames.room_slug(frame)
        since = frames.optional_message_id(frame, "since")
        room = await self._room_for_join(slug)
        joined = self.joined_by_id.get(room.id)
        rejoin = joined is not None
        if joined is None:
            joined = self.joined_by_id[room.id] = Joined(room=room)
        joined.pending = []
        try:
            # Subscribe before reading: anything committed after the read arrives live.
            await hub().add(room.id, self)
            state = await hub().join_state(room, since=since, limit=settings.CHAT_RECOVERY_LIMIT)
        except BaseException:
            if rejoin:
                await self._release(joined)
            else:
                self.joined_by_id.pop(room.id, None)
                await hub().discard(room.id, self)
            raise
        joined.live = not state["more"]
        joined.recovered = {message_id for message_id, _ in state["messages"]}
        joined.recovered_max = max(joined.recovered, default=0)
        self.joined[slug] = joined
        first, online = await presence.room_enter(
            room_id=room.id,
            room_slug=room.slug,
            user_id=self.user.pk,
            username=self.user.get_username(),
            channel=self.channel_name,
        )
        await self.send_frame(joined_frame(room=slug, online=online, last_id=state["last_id"], more=state["more"]))
        for _, text in state["messages"]:
            await self._forward(text, None)
        metrics.frame_out(ServerFrame.CHAT, len(state["messages"]))
        await self._release(joined)
        if first:
            await self._presence(room, "join")

    async def _release(self, joined: Joined) -> None:
        """End a join's hold: send what arrived meanwhile, then deliver live."""
        pending, joined.pending = joined.pending or [], None
        for event in pending:
            await self.room_event(event)

    async def _room_for_join(self, slug: str) -> Room:
        cached = _public_rooms.get(slug)
        if cached and time.monotonic() - cached[1] < ROOM_CACHE_SECONDS:
            return cached[0]
        room = await database_sync_to_async(services.room_resolve)(user=self.user, slug=slug)
        if room.is_public:
            _public_rooms[slug] = (room, time.monotonic())
        return room

    async def on_leave(self, frame: dict) -> None:
        slug = frames.room_slug(frame)
        joined = self.joined.get(slug)
        if joined is not None:
            await self._leave(joined)
        await self.send_frame(left_frame(room=slug))

    async def _unjoin(self, joined: Joined) -> None:
        """This socket's side of leaving a room: its tables and the hub (not presence)."""
        self.joined.pop(joined.room.slug, None)
        self.joined_by_id.pop(joined.room.id, None)
        await hub().discard(joined.room.id, self)

    async def _leave(self, joined: Joined) -> None:
        room = joined.room
        await self._unjoin(joined)
        last = await presence.room_exit(
            room_id=room.id,
            room_slug=room.slug,
            user_id=self.user.pk,
            username=self.user.get_username(),
            channel=self.channel_name,
        )
        if last:
            await self._presence(room, "leave")

    async def _presence(self, room: Room, event: str) -> None:
        text = encode(presence_frame(room=room.slug, user=self.user.get_username(), event=event))
        await agroup_send(room_group(room.id), room_presence_event(room_id=room.id, text=text))

    def _joined_room(self, frame: dict) -> Joined:
        slug = frames.room_slug(frame)
        joined = self.joined.get(slug)
        if joined is None:
            raise forbidden(f"join room '{slug}' first")
        return joined

    async def on_chat(self, frame: dict) -> None:
        joined = self._joined_room(frame)
        body = frames.body(frame)
        client_id = frames.client_id(frame)
        # Not awaited: the socket's next frames are read while this one is written, so a
        # busy sender's messages share batches. Order is kept (one queue per process);
        # only a resend's original or a failure is answered, when the write is done.
        stored = room_messages().enqueue(
            services.RoomChat(room=joined.room, sender=self.user, body=body, client_id=client_id)
        )
        self.chats_in_flight += 1
        stored.add_done_callback(functools.partial(self._chat_stored, ref=frames.ref(frame)))
        if self.chats_in_flight > CHATS_IN_FLIGHT:
            await asyncio.wait([stored])  # back-pressure: stop reading this socket meanwhile

    def _chat_stored(self, stored: asyncio.Future, *, ref: str | None) -> None:
        self.chats_in_flight -= 1
        if stored.cancelled():
            return
        if (exc := stored.exception()) is not None:
            logger.error("storing a chat message failed on connection %s", self.connection_id, exc_info=exc)
            metrics.error(ErrorCode.INTERNAL)
            reply = error_frame(code=ErrorCode.INTERNAL, message="server error; try again", ref=ref)
        elif not stored.result().created:
            reply = stored.result().frame  # a resend: the original, to this socket only
        else:
            return
        if self.closing is None and self.runtime is not None:
            self._replies.add(task := asyncio.ensure_future(self.send_frame(reply)))
            task.add_done_callback(self._replies.discard)

    async def on_private(self, frame: dict) -> None:
        to = frames.username(frame, "to")
        body = frames.body(frame)
        client_id = frames.client_id(frame)
        message, created = await database_sync_to_async(services.private_message_create)(
            sender=self.user, to=to, body=body, client_id=client_id
        )
        if not created:
            await self.send_frame(message)

    async def on_history(self, frame: dict) -> None:
        before = frames.optional_message_id(frame, "before")
        limit = frames.history_limit(frame)
        if ("room" in frame) == ("with" in frame):
            raise ChatError(ErrorCode.INVALID, "history needs exactly one of 'room' or 'with'")
        if "room" in frame:
            key, value = "room", frames.room_slug(frame)
            read, kwargs = selectors.room_history, {"slug": value}
        else:
            key, value = "with", frames.username(frame, "with")
            read, kwargs = selectors.conversation_history, {"with_username": value}
        messages, has_more = await database_sync_to_async(read)(user=self.user, before=before, limit=limit, **kwargs)
        await self.send_frame(history_frame(key=key, value=value, messages=messages, has_more=has_more))

    async def on_rooms(self, frame: dict) -> None:
        rooms = await database_sync_to_async(selectors.rooms_visible)(user=self.user)
        counts = await presence.rooms_online_counts(room_ids=[r["id"] for r in rooms])
        await self.send_frame(
            rooms_frame(rooms=[{"room": r["room"], "title": r["title"], "online": counts[r["id"]]} for r in rooms])
        )

    async def on_typing(self, frame: dict) -> None:
        room = self._joined_room(frame).room
        text = encode(typing_frame(room=room.slug, user=self.user.get_username()))
        await agroup_send(room_group(room.id), room_typing_event(room_id=room.id, user_id=self.user.pk, text=text))

    async def on_ping(self, frame: dict) -> None:
        self.rtt_ms = frames.optional_rtt(frame)
        await self.send_frame(pong_frame())

    handlers = {
        ClientFrame.JOIN: on_join,
        ClientFrame.LEAVE: on_leave,
        ClientFrame.CHAT: on_chat,
        ClientFrame.PRIVATE: on_private,
        ClientFrame.HISTORY: on_history,
        ClientFrame.ROOMS: on_rooms,
        ClientFrame.TYPING: on_typing,
        ClientFrame.PING: on_ping,
    }

    async def send_frame(self, frame: dict) -> None:
        await self.send(text_data=encode(frame))
        metrics.frame_out(frame["type"])

    # --- room events, from this process's RoomHub (rooms/hub.py) ---------------------

    async def room_event(self, event: dict, payload: bytes | None = None) -> None:
        """A room event for this socket: forward its prepared frame (``payload``: the same,
        UTF-8 encoded once by the hub for every local member). Called by the hub, not
        through this consumer's queue, so it checks the socket's state itself."""
        joined = self.joined_by_id.get(event["room_id"])
        if joined is None or self.closing is not None:
            return
        if joined.pending is not None:
            joined.pending.append(event)
            return
        kind = event["type"]
        if kind == LayerEvent.ROOM_MESSAGE:
            if not joined.live:
                return
            if joined.recovered:
                if event["id"] in joined.recovered:
                    return  # already sent by the join's recovery
                if event["id"] > joined.recovered_max:
                    joined.recovered = set()  # past the recovered range: nothing more to drop
            await self._forward(event["text"], payload)
            metrics.frame_out(ServerFrame.CHAT)
            metrics.event_delivered(event)
        elif kind == LayerEvent.ROOM_TYPING:
            if event["user_id"] != self.user.pk:
                await self._forward(event["text"], payload)
                metrics.frame_out(ServerFrame.TYPING)
        else:  # presence, pushes to a room
            await self._forward(event["text"], payload)
            metrics.frame_out_text(event["text"])

    async def _forward(self, text: str, payload: bytes | None) -> None:
        """Send a prepared frame: under daphne directly, and not at all once the socket is
        no longer open (its disconnect follows); under another server through the ASGI send."""
        send_now = self.send_now
        if send_now is None:
            await self.send(text_data=text)
        else:
            send_now(payload if payload is not None else text.encode())

    # --- channel-layer events for this socket: forward the prepared frame --------------

    async def user_frame(self, event: dict) -> None:
        await self.send(text_data=event["text"])
        metrics.frame_out_text(event["text"])
        metrics.event_delivered(event)

    async def connection_kick(self, event: dict) -> None:
        await self.close_with(
            code=CloseCode.KICKED, reason=f"kicked: {event['reason']}"[:200], frame=kicked_frame(reason=event["reason"])
        )

    async def connection_abuse(self, event: dict) -> None:
        await self.close_with(
            code=CloseCode.RECONNECT_ABUSE,
            reason="reconnect abuse",
            frame=error_frame(code=ErrorCode.FORBIDDEN, message=event["message"], ref=None),
        )

    async def connection_drain(self, event: dict) -> None:
        """This process is draining (or Redis restarted): reconnect elsewhere, soon. The
        server ended the socket, so the reconnect does not count as abuse."""
        try:
            await presence_runtime.connection_credit(self)
        except Exception:
            # Redis failing (it may be the reason for the drain) must not keep the
            # socket here: it goes uncredited.
            logger.warning("could not credit connection %s before its drain", self.connection_id, exc_info=True)
        await self.close_with(code=CloseCode.SERVICE_RESTART, reason=f"drain: {event['reason']}"[:200])

    async def expire_now(self) -> None:
        """Forget this socket without its own event loop turn (see presence/runtime.py)."""
        await self._forget(code=CloseCode.GOING_AWAY, reason="unresponsive")
        self.closing = (CloseCode.GOING_AWAY, "unresponsive")

    async def connection_expire(self, event: dict) -> None:
        """Silent for three heartbeats: forget it now (the socket is likely dead, so its
        disconnect may come late or never), then close it."""
        await self._forget(code=CloseCode.GOING_AWAY, reason="silent for three heartbeats")
        self.closing = (CloseCode.GOING_AWAY, "silent")
        await self.close(code=int(CloseCode.GOING_AWAY))
