"""This process's side of liveness: its name, its lease, its sockets, its heartbeat task.

Every half ``CHAT_HEARTBEAT`` each process (``tick``):
1. renews its lease in Redis (it lapses after 2.5 heartbeats without renewal, so a dead
   process is noticed by a survivor within three heartbeats, while one that stalls for
   two heartbeats is not declared dead);
2. writes last_seen, round-trip time and rooms of its sockets to the registry in one
   batch (never a database write per frame);
3. expires its own sockets that have been silent for three heartbeats;
4. sweeps processes whose lease lapsed (killed, powered off, cut off): closes their
   connections in the registry, removes them from room presence with `presence` leave
   events, and credits their users so the reconnect does not count as abuse.
Daphne has no lifespan events, so the task starts with the first socket.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import secrets
import socket
import time
import weakref
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.utils import timezone

from chatsite import metrics
from chatsite.batching import Batcher, per_loop
from chatsite.realtime import agroup_send, apublish, room_group
from presence import abuse, policies, store
from presence.services import connections as registry
from presence.services import moderation
from rooms import selectors as room_selectors
from rooms.events import connection_drain_event, encode, presence_frame, room_message_event, room_presence_event

if TYPE_CHECKING:
    from rooms.consumers import ChatConsumer

logger = logging.getLogger(__name__)

CLOSE_SERVER_LOST = 1006
LEASE_HEARTBEATS = 2.5  # a lease outlives its last renewal by this many heartbeats
TICKS_PER_HEARTBEAT = 2
EXPIRE_EVENT = "connection.expire"


@functools.cache
def _generated_name(pid: int) -> str:
    return f"{socket.gethostname()}-{pid}-{secrets.token_hex(3)}"


def server_name() -> str:
    """This process's name: PRESENCE_SERVER_NAME, else host-pid-random (stable per process)."""
    return settings.PRESENCE_SERVER_NAME or _generated_name(os.getpid())


@dataclass
class Runtime:
    name: str
    server_id: int = 0
    task: asyncio.Task | None = None
    epoch: str = ""  # the Redis epoch this process registered its sockets under

    def __post_init__(self):
        self.sockets: dict[str, ChatConsumer] = {}  # by connection id

    # --- sockets ---------------------------------------------------------------------

    def add(self, consumer: ChatConsumer) -> None:
        self.sockets[consumer.connection_id] = consumer

    def remove(self, consumer: ChatConsumer) -> None:
        self.sockets.pop(consumer.connection_id, None)

    # --- the heartbeat ---------------------------------------------------------------

    async def run(self) -> None:
        while True:
            await asyncio.sleep(settings.CHAT_HEARTBEAT / TICKS_PER_HEARTBEAT)
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("presence heartbeat failed on %s", self.name)

    async def tick(self) -> None:
        heartbeat = float(settings.CHAT_HEARTBEAT)
        await self.check_epoch()
        await store.server_lease(server=self.name, ttl=LEASE_HEARTBEATS * heartbeat)
        await self.flush()
        await self.expire_silent(now=time.monotonic(), heartbeat=heartbeat)
        await self.sweep(heartbeat=heartbeat)

    async def check_epoch(self) -> None:
        """After a Redis restart everything Redis held is gone: presence, leases, blocks'
        deny keys, and any broadcast published while it was down. The first process to
        notice restores the blocks; every process sends its sockets away with 1012 in
        batches (and credits them), so clients come back, rebuild presence by joining, and
        recover what they missed with `since`."""
        current = await store.epoch(candidate=secrets.token_hex(8))
        if not self.epoch:
            self.epoch = current
            return
        if current == self.epoch:
            return
        logger.warning("Redis epoch changed (%s -> %s): Redis restarted; resyncing clients", self.epoch, current)
        if await store.once_per(name=f"restore-blocks:{current}", ttl=3600):
            await blocks_restore()
        # The clients come straight back: first make sure this process hears Redis again,
        # or what they send at once would be published to no one.
        if not await layer_echo(within=EPOCH_ECHO_TIMEOUT):
            logger.warning(
                "the channel layer did not hear this process within %s s; draining anyway", EPOCH_ECHO_TIMEOUT
            )
        # Only once every socket was sent on does this process move to the new epoch: if
        # Redis fails again half-way, the next tick starts over with whoever is left.
        await drain(list(self.sockets.values()), reason="redis restarted")
        self.epoch = current

    async def flush(self) -> None:
        """One registry write for every socket of this process that changed."""
        updates = [u for consumer in list(self.sockets.values()) if (u := consumer.registry_update()) is not None]
        await database_sync_to_async(registry.server_heartbeat)(server_id=self.server_id, updates=updates)

    async def expire_silent(self, *, now: float, heartbeat: float) -> None:
        layer = get_channel_layer()
        for consumer in list(self.sockets.values()):
            if not policies.connection_silent(now=now, last_seen=consumer.last_seen, heartbeat=heartbeat):
                continue
            if policies.connection_silent(now=now, last_seen=consumer.last_seen, heartbeat=heartbeat + heartbeat / 3):
                # A heartbeat after the expire event and still here: the consumer is not
                # handling events any more (its task ended without disconnect()). Forget
                # it directly, or its registry row and presence would stay until restart.
                logger.warning("forgetting unresponsive connection %s", consumer.connection_id)
                await consumer.expire_now()
            else:
                # Handled in the consumer's own queue, so it never races a frame it is handling.
                await layer.send(consumer.channel_name, {"type": EXPIRE_EVENT})

    async def sweep(self, *, heartbeat: float) -> None:
        lapsed = [s for s in await store.servers_lapsed() if s != self.name]
        stale_before = timezone.now() - timedelta(seconds=3 * heartbeat)
        stale = await database_sync_to_async(registry.servers_stale)(before=stale_before, exclude=self.name)
        for server in sorted(set(lapsed) | set(stale)):
            if await store.sweep_claim(server=server, ttl=3 * heartbeat):
                await server_sweep(server=server)


async def server_sweep(*, server: str) -> int:
    """Clean up after a dead process: registry, room presence, groups, abuse credit.
    Idempotent; returns how many of its connections were closed."""
    sockets = await store.server_connections(server=server)
    for sock in sockets:
        slugs = dict(sock["rooms"])
        last = await store.connection_forget(
            channel=sock["channel"], server=server, user_id=sock["user_id"], username=sock["username"],
            room_ids=list(slugs),
        )  # fmt: skip
        for room_id in last:
            text = encode(presence_frame(room=slugs[room_id], user=sock["username"], event="leave"))
            await agroup_send(room_group(room_id), room_presence_event(room_id=room_id, text=text))
        # The server closed these sockets, not the client: the reconnect is free.
        await reconnect_credit(user_id=sock["user_id"], ip=sock["ip"])
    await replay_rooms(room_ids=sorted({room_id for sock in sockets for room_id, _ in sock["rooms"]}))
    closed = await database_sync_to_async(registry.server_connections_close)(
        server=server, code=CLOSE_SERVER_LOST, reason="server process lost"
    )
    await store.server_forget(server=server)
    logger.info("swept server %s: %d sockets in presence, %d open in the registry", server, len(sockets), len(closed))
    return len(closed)


REPLAY_MAX = 1000


async def replay_rooms(*, room_ids: list[int]) -> None:
    """A process killed between committing a message and publishing it leaves a message
    that the sockets elsewhere never got (they recover only when they rejoin). So the
    survivor that sweeps it publishes again the recent messages of the rooms its sockets
    were in (since a little before its lease could have lapsed), marked ``replay``: each
    process's RoomHub delivers only those it never delivered (rooms/hub.py), and clients
    drop any id they already have."""
    if not room_ids:
        return
    heartbeat = float(settings.CHAT_HEARTBEAT)
    since = timezone.now() - timedelta(seconds=(LEASE_HEARTBEATS + 2) * heartbeat)
    recent = await database_sync_to_async(room_selectors.room_messages_created_since)(
        room_ids=room_ids, since=since, limit=REPLAY_MAX
    )
    await apublish(
        [
            (
                room_group(room_id),
                {**room_message_event(room_id=room_id, message_id=frame["id"], text=encode(frame)), "replay": True},
            )
            for room_id, frame in recent
        ]
    )


DRAIN_BATCH = 100
DRAIN_PAUSE = 0.2  # seconds between batches: clients come back spread out, not all at once
EPOCH_ECHO_TIMEOUT = 5.0  # seconds to wait for the channel layer to hear this process after a Redis restart


async def drain(consumers: list, *, reason: str) -> None:
    """Close sockets of this process with 1012 in batches (they reconnect elsewhere)."""
    layer = get_channel_layer()
    for start in range(0, len(consumers), DRAIN_BATCH):
        for consumer in consumers[start : start + DRAIN_BATCH]:
            await layer.send(consumer.channel_name, connection_drain_event(reason=reason))
        await asyncio.sleep(DRAIN_PAUSE)


async def layer_echo(*, within: float) -> bool:
    """The channel layer's own round trip (chatsite/layers.py); True under a layer without one."""
    echo = getattr(get_channel_layer(), "echo", None)
    return True if echo is None else await echo(within=within)


async def blocks_restore() -> None:
    """Put the deny keys of active blocks back into Redis (after a Redis restart)."""
    for kind, key, reason, seconds in await database_sync_to_async(moderation.blocks_active)():
        await store.deny(kind=kind, key=key, reason=reason, seconds=seconds)


_runtimes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Runtime] = weakref.WeakKeyDictionary()
_starting: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()


async def current() -> Runtime:
    """This process's runtime (one per event loop), registered and leased on first use."""
    loop = asyncio.get_running_loop()
    runtime = _runtimes.get(loop)
    if runtime is not None:
        return runtime
    lock = _starting.setdefault(loop, asyncio.Lock())
    async with lock:
        runtime = _runtimes.get(loop)
        if runtime is None:
            runtime = Runtime(name=server_name())
            runtime.server_id = await database_sync_to_async(registry.server_register)(
                name=runtime.name, pid=os.getpid()
            )
            await store.server_lease(server=runtime.name, ttl=LEASE_HEARTBEATS * float(settings.CHAT_HEARTBEAT))
            runtime.epoch = await store.epoch(candidate=secrets.token_hex(8))
            if settings.PRESENCE_HEARTBEAT_TASK:
                runtime.task = loop.create_task(runtime.run(), name="presence-heartbeat")
            _runtimes[loop] = runtime
            logger.info("server process %s registered", runtime.name)
            metrics.server_info(name=runtime.name)
    return runtime


# Registry writes of sockets that open or close while the ORM thread is busy share one
# crossing and one transaction (group commit). A connect still awaits its own row, so the
# admin and the API list every accepted socket; a close awaits its row's update.
_opens = per_loop(lambda: Batcher(lambda rows: registry.connections_open(rows=rows), name="connection-open"))
_closes = per_loop(lambda: Batcher(lambda rows: registry.connections_close(closes=rows), name="connection-close"))


@dataclass(frozen=True)
class Opened:
    """What ``connection_open`` decided: refused (why), or recorded under ``runtime``."""

    refusal: str | None = None
    runtime: Runtime | None = None
    draining: bool = False  # this process is draining: send the socket on at once


async def connection_open(consumer: ChatConsumer, *, user) -> Opened:
    """Admit an authenticated socket about to be accepted, and record it: the per-user
    abuse count, block check, Redis record and draining flag in one Redis round trip
    (presence/abuse.py), then the registry row (batched with concurrent connects), then
    this process's socket table. A refused socket leaves nothing recorded."""
    runtime = await current()
    scope = consumer.scope
    ip = scope.get("client_ip")
    registration = store.Registration(
        channel=consumer.channel_name,
        connection_id=consumer.connection_id,
        user_id=user.pk,
        username=user.get_username(),
        ip=ip or "",
        server=runtime.name,
    )
    admission = await abuse.connect_admit(
        kind="user", user_id=user.pk, ip=ip, user_agent=scope.get("user_agent", ""), registration=registration
    )
    if admission.refusal:
        return Opened(refusal=admission.refusal)
    try:
        await _opens().submit(
            {
                "id": consumer.connection_id,
                "user_id": user.pk,
                "server_id": runtime.server_id,
                "channel_name": consumer.channel_name,
                "ip": ip,
                "user_agent": scope.get("user_agent", ""),
                "now": timezone.now(),
            }
        )
    except BaseException:
        # No row, no socket: take the Redis record back (shielded: a cancelled connect
        # must not leave it for the sweep of a live process, which never comes).
        await asyncio.shield(store.connection_forget(channel=consumer.channel_name, server=runtime.name))
        raise
    runtime.add(consumer)
    return Opened(runtime=runtime, draining=admission.draining)


async def connection_close(
    consumer: ChatConsumer, *, runtime: Runtime, code: int | None, reason: str, room_ids: list[int]
) -> list[int]:
    """Forget a socket: it leaves the rooms ``room_ids`` in presence and its Redis record
    goes, in one Redis round trip; then the registry row is closed (batched with concurrent
    closes). Idempotent. Returns
    the rooms where it was its user's last socket (a `presence` leave is due there)."""
    runtime.remove(consumer)
    last = await store.connection_forget(
        channel=consumer.channel_name,
        server=runtime.name,
        user_id=consumer.user.pk,
        username=consumer.user.get_username(),
        room_ids=room_ids,
    )
    await _closes().submit(
        {"id": consumer.connection_id, "code": code, "reason": reason, "last_seen": consumer.last_seen_at()}
    )
    return last


async def connection_credit(consumer: ChatConsumer) -> None:
    """The server is closing this socket: its reconnect does not count as abuse."""
    await reconnect_credit(user_id=consumer.user.pk, ip=consumer.scope.get("client_ip"))


async def reconnect_credit(*, user_id: int, ip: str | None) -> None:
    """The next connect of this user, and of this IP, does not count (the server closed it)."""
    window = max(settings.PRESENCE_ABUSE_USER_WINDOW, settings.PRESENCE_ABUSE_IP_WINDOW)
    await store.connect_credit(kind="user", key=str(user_id), ttl=window)
    if ip:
        await store.connect_credit(kind="ip", key=ip, ttl=window)
