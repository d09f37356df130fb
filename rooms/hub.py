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
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Protocol

from channels.layers import get_channel_layer

from chatsite.realtime import room_group

logger = logging.getLogger(__name__)


class RoomMember(Protocol):
    async def room_event(self, event: dict, payload: bytes | None = None) -> None: ...


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
        self.deliveries = 0  # for benchmarks and tests

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
                await get_channel_layer().group_discard(room_group(room_id), self.channel)

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
        payload = text.encode() if isinstance(text, str) else None  # once, for every member
        for member in list(members):  # a member may leave while we await its send
            try:
                await member.room_event(event, payload)
            except Exception:
                # One broken socket must not cost the others their message.
                logger.exception("delivery to a room member failed")
        self.deliveries += len(members)


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, RoomHub] = weakref.WeakKeyDictionary()


def hub() -> RoomHub:
    loop = asyncio.get_running_loop()
    current = _hubs.get(loop)
    if current is None:
        current = _hubs[loop] = RoomHub()
    return current
