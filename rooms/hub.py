"""The per-process fan-out of room events.

With one channel-layer group membership per socket, every room event costs each
receiving socket a queue put, a msgpack decode, an asyncio task and a dispatch
(PITFALLS.md measured 180-260 µs of daphne CPU per delivery). Here each process
subscribes to a room group ONCE, on behalf of all its sockets in that room, decodes
each event once, and hands the already-encoded frame (UTF-8 encoded once here) to every local socket in
a plain loop. Per delivery that leaves a method call and daphne's direct send
(chatsite/daphne_compat.py).

Everything runs on the process's one event loop, so the member sets need no locks;
a socket that is in the middle of a `join` buffers what arrives (see
ChatConsumer.room_event) so that nothing overtakes its `joined` reply.

The hub also spares joins most of their database work (``join_state``). While a room
is subscribed, the hub keeps the newest CHAT_RECENT_PER_ROOM messages it delivered,
already encoded. A join still asks the database which messages it missed, but only
their ids (one index-only range query; joins of the same room and `since` that arrive
while it runs share it); if the hub holds every one of them, their frames come from
memory, else the join reads the messages as before. The database stays the record: a
message whose broadcast was lost (its process died between commit and publish, or
Redis dropped it) is missing from memory, so its id sends that join to the full read.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Protocol

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings

from chatsite.batching import per_loop
from chatsite.realtime import room_group
from rooms import selectors, services
from rooms.events import LayerEvent, encode

logger = logging.getLogger(__name__)


class RoomMember(Protocol):
    async def room_event(self, event: dict, payload: bytes | None = None) -> None: ...


@dataclass
class Recent:
    """The messages a subscribed room's events brought, by id (encoded frames), and the
    id checks of joins in flight, by `since`."""

    texts: dict[int, str] = field(default_factory=dict)
    checks: dict[int | None, asyncio.Future] = field(default_factory=dict)  # running, by since
    next_checks: dict[int | None, asyncio.Future] = field(default_factory=dict)  # waiting to run

    def keep(self, message_id: int, text: str, cap: int) -> None:
        self.texts[message_id] = text
        while len(self.texts) > cap:
            del self.texts[min(self.texts)]


class RoomHub:
    """One per event loop: the local members of each room, and one subscription per room."""

    def __init__(self) -> None:
        self.members: dict[int, set[RoomMember]] = {}
        # Rooms whose subscription is being made: later joiners wait for it too, so no
        # member reads the database before the process is subscribed.
        self.subscribing: dict[int, asyncio.Future] = {}
        self.channel: str | None = None
        self.task: asyncio.Task | None = None
        self._ready = asyncio.Lock()
        self._groups: set[int] = set()  # rooms this process is subscribed to
        self.recent: dict[int, Recent] = {}  # by room id, while subscribed
        self.deliveries = 0  # for benchmarks and tests
        self.checks = 0  # join id checks (one query each)
        self.reads = 0  # joins that read the messages from the database

    async def _start(self) -> None:
        async with self._ready:
            if self.channel is None:
                layer = get_channel_layer()
                self.channel = await layer.new_channel(prefix="hub.")
                self.task = asyncio.get_running_loop().create_task(self._run(layer), name="room-hub")

    async def add(self, room_id: int, member: RoomMember) -> None:
        """Deliver this room's events to ``member`` from now on (subscribed when this
        returns). Idempotent."""
        if self.channel is None:
            await self._start()
        members = self.members.setdefault(room_id, set())
        members.add(member)
        pending = self.subscribing.get(room_id)
        if pending is not None:
            await asyncio.shield(pending)
        elif len(members) == 1 and not self._subscribed(room_id):
            pending = self.subscribing[room_id] = asyncio.get_running_loop().create_future()
            try:
                await get_channel_layer().group_add(room_group(room_id), self.channel)
                self._groups.add(room_id)
                self.recent[room_id] = Recent()
                pending.set_result(None)
            except BaseException as exc:
                pending.set_exception(exc)
                pending.exception()  # retrieved: waiters re-raise it themselves
                raise
            finally:
                del self.subscribing[room_id]

    def _subscribed(self, room_id: int) -> bool:
        return room_id in self._groups

    async def discard(self, room_id: int, member: RoomMember) -> None:
        """Stop delivering to ``member``; the last local member unsubscribes the process."""
        members = self.members.get(room_id)
        if members is None or member not in members:
            return
        members.discard(member)
        if not members:
            del self.members[room_id]
            if room_id in self._groups and room_id not in self.subscribing:
                self._groups.discard(room_id)
                self.recent.pop(room_id, None)
                await get_channel_layer().group_discard(room_group(room_id), self.channel)

    async def join_state(self, room, *, since: int | None, limit: int) -> dict:
        """What a `joined` reply needs (services.room_join_state), messages as (id, encoded
        frame). Call after ``add`` returned for this room, so that anything committed after
        the database answered arrives live."""
        recent = self.recent.get(room.id)
        if recent is not None:
            newest, ids = await self._check(recent, room, since=since, limit=limit)
            if since is None:
                return {"last_id": newest, "messages": [], "more": False}
            if len(ids) <= limit and all(i in recent.texts for i in ids):
                last_id = ids[-1] if ids else newest
                return {"last_id": last_id, "messages": [(i, recent.texts[i]) for i in ids], "more": False}
        self.reads += 1
        read = await database_sync_to_async(services.room_join_state)(room=room, since=since, recovery_limit=limit)
        if recent is not None and self.recent.get(room.id) is recent:
            for message in read["messages"]:
                recent.keep(message["id"], encode(message), settings.CHAT_RECENT_PER_ROOM)
        return {**read, "messages": [(m["id"], encode(m)) for m in read["messages"]]}

    async def _check(self, recent: Recent, room, *, since: int | None, limit: int) -> tuple[int | None, list[int]]:
        """The room's newest id and the ids after ``since`` (at most limit + 1), from the
        database, by a query that starts after the caller registered with the hub.
        Callers asking the same while a check runs share the NEXT one, which starts when
        the running one ends (sharing the running one could miss what was delivered
        between its start and their registration)."""
        waiting = recent.next_checks.get(since)
        if waiting is not None:
            return await asyncio.shield(waiting)
        mine = recent.next_checks[since] = asyncio.get_running_loop().create_future()
        try:
            running = recent.checks.get(since)
            if running is not None:
                await asyncio.wait([running])
            del recent.next_checks[since]
            recent.checks[since] = mine
            result = await database_sync_to_async(selectors.room_ids_after)(
                room_id=room.id, since=since, limit=limit + 1
            )
            self.checks += 1
            mine.set_result(result)
            return result
        except BaseException as exc:
            if not mine.done():
                mine.set_exception(exc)
                mine.exception()  # retrieved: sharers re-raise it themselves
            raise
        finally:
            if recent.next_checks.get(since) is mine:
                del recent.next_checks[since]
            if recent.checks.get(since) is mine:
                del recent.checks[since]

    async def _run(self, layer) -> None:
        while True:
            event = await layer.receive(self.channel)
            try:
                await self.deliver(event)
            except Exception:
                logger.exception("room hub delivery failed for %s", event.get("type"))

    async def deliver(self, event: dict) -> None:
        members = self.members.get(event.get("room_id"))
        if not members:
            return
        text = event.get("text")
        if event.get("type") == LayerEvent.ROOM_MESSAGE and (recent := self.recent.get(event["room_id"])):
            if event.get("replay") and (
                event["id"] in recent.texts or (recent.texts and event["id"] < min(recent.texts))
            ):
                return  # a replay after a dead process's sweep: delivered here already (or too old to tell)
            recent.keep(event["id"], text, settings.CHAT_RECENT_PER_ROOM)
        payload = text.encode() if isinstance(text, str) else None  # once, for every member
        for member in list(members):  # a member may leave while we await its send
            try:
                await member.room_event(event, payload)
            except Exception:
                # One broken socket must not cost the others their message.
                logger.exception("delivery to a room member failed")
        self.deliveries += len(members)


# One hub per event loop (tests run several loops; daphne runs one).
hub = per_loop(RoomHub)
