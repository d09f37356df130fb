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

The hub also answers most joins without the database (``join_state``). While a room
is subscribed, the hub keeps the messages it delivers (the newest CHAT_RECENT_PER_ROOM,
already encoded). Once one join's database read has run after the subscription began,
the hub knows every message above that read's starting point: older ones came in the
read, newer ones as events. Later joins of that room, with or without `since`, are
answered from memory while that holds (RECENT_TTL seconds, then one read renews it),
and joins that arrive while such a read runs wait for it instead of reading too: a
reconnect storm of 1,000 clients costs one query, not 1,000.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from dataclasses import dataclass, field
from typing import Protocol

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings

from chatsite.realtime import room_group
from rooms import services
from rooms.events import LayerEvent, encode

logger = logging.getLogger(__name__)


class RoomMember(Protocol):
    async def room_event(self, event: dict, payload: bytes | None = None) -> None: ...


RECENT_TTL = 30.0  # seconds a read vouches for the kept messages (bounds any missed event)


@dataclass
class Recent:
    """The messages a subscribed room's events brought, by id (encoded frames)."""

    texts: dict[int, str] = field(default_factory=dict)
    # Every message with an id above ``base`` is in ``texts``; None until a read says so.
    base: int | None = None
    vouched_at: float = 0.0
    floor: int = 0  # the highest id dropped to keep within the cap
    reading: asyncio.Future | None = None  # a join's database read in flight

    def keep(self, message_id: int, text: str, cap: int) -> None:
        self.texts[message_id] = text
        if len(self.texts) > cap:
            for old in sorted(self.texts)[: len(self.texts) - cap]:
                del self.texts[old]
                self.floor = max(self.floor, old)
            if self.base is not None:
                self.base = max(self.base, self.floor)

    def answers(self, since: int | None, now: float) -> bool:
        return self.base is not None and now - self.vouched_at < RECENT_TTL and (since is None or since >= self.base)

    def state(self, since: int | None, limit: int) -> dict:
        """What room_join_state would answer, from memory; messages as (id, text)."""
        newest = max(max(self.texts, default=0), self.base or 0) or None
        if since is None:
            return {"last_id": newest, "messages": [], "more": False}
        ids = sorted(i for i in self.texts if i > since)
        more = len(ids) > limit
        messages = [(i, self.texts[i]) for i in ids[:limit]]
        last_id = messages[-1][0] if messages and not more else newest
        return {"last_id": last_id, "messages": messages, "more": more}

    def vouch(self, *, since: int | None, read: dict, started: float) -> None:
        """A read that began after the subscription (at ``started``) returned ``read``."""
        if read["more"]:
            return  # it did not see everything above `since`
        for message in read["messages"]:
            self.texts.setdefault(message["id"], encode(message))
        newest = read["last_id"] or 0
        base = newest if since is None else min(since, newest)
        self.base = max(base, self.floor)
        self.vouched_at = started


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
        self.reads = 0  # join reads that went to the database

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

    def forget_recent(self) -> None:
        """Stop answering joins from memory until a read vouches again (events may have been
        lost: after a Redis restart, say)."""
        for recent in self.recent.values():
            recent.base = None

    async def join_state(self, room, *, since: int | None, limit: int) -> dict:
        """What a `joined` reply needs (see services.room_join_state), messages as
        (id, encoded frame). Call after ``add`` returned for this room."""
        recent = self.recent.get(room.id)
        if recent is None:  # not subscribed (cannot happen after add): the database
            return _encoded(
                await database_sync_to_async(services.room_join_state)(room=room, since=since, recovery_limit=limit)
            )
        if not recent.answers(since, time.monotonic()) and recent.reading is not None:
            await asyncio.shield(recent.reading)  # a read is in flight: it may vouch for us
        if recent.answers(since, time.monotonic()):
            return recent.state(since, limit)
        started = time.monotonic()
        reading = recent.reading = asyncio.get_running_loop().create_future()
        try:
            read = await database_sync_to_async(services.room_join_state)(room=room, since=since, recovery_limit=limit)
            self.reads += 1
            if self.recent.get(room.id) is recent:
                recent.vouch(since=since, read=read, started=started)
        finally:
            if recent.reading is reading:
                recent.reading = None
            reading.set_result(None)
        return _encoded(read)

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
            recent.keep(event["id"], text, settings.CHAT_RECENT_PER_ROOM)
        payload = text.encode() if isinstance(text, str) else None  # once, for every member
        for member in list(members):  # a member may leave while we await its send
            try:
                await member.room_event(event, payload)
            except Exception:
                # One broken socket must not cost the others their message.
                logger.exception("delivery to a room member failed")
        self.deliveries += len(members)


def _encoded(state: dict) -> dict:
    return {**state, "messages": [(m["id"], encode(m)) for m in state["messages"]]}


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, RoomHub] = weakref.WeakKeyDictionary()


def hub() -> RoomHub:
    loop = asyncio.get_running_loop()
    current = _hubs.get(loop)
    if current is None:
        current = _hubs[loop] = RoomHub()
    return current
