"""The channel layer: channels-redis's PubSub layer with process-local channel names.

With ``RedisPubSubChannelLayer`` every consumer's ``new_channel()`` is a Redis SUBSCRIBE
(and an UNSUBSCRIBE when it ends), and every ``group_add`` another pair, so connect
churn spent a third of daphne's CPU writing subscription commands. Here, as in
channels-redis's core layer, a consumer's channel is ``<process channel>!<local>``:

- ``new_channel()`` makes a local queue and no Redis command; the process channel is
  subscribed once per layer (event loop), on first use.
- ``send()`` to a ``!`` name publishes to its process channel with the local part inside
  the message; the receiving process's reader puts it on that local queue, or drops it
  when the channel is gone (as the PubSub layer drops messages nobody listens to). A
  send to a channel of the sending process itself skips Redis.
- A group is subscribed when its first local member joins and unsubscribed when the last
  one leaves; a group message is decoded once per process and queued for each member.
- A cancelled ``receive()`` (the consumer ended) forgets the channel and its groups; only
  a group that lost its last local member costs a Redis command.
- A local channel's messages wait in a ``Mailbox`` (a few hundred bytes), not an
  asyncio.Queue (3.2 KB): every idle socket holds one.

Names without ``!`` behave exactly as in the parent. Group sends stay one PUBLISH, and
membership still lives only in process memory and the connection's subscriptions, so a
crashed process leaves no ghost members. After a reconnect redis-py re-subscribes every
channel of the shard's connection: process channels and groups alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import deque
from collections.abc import Callable

from channels_redis.pubsub import RedisPubSubChannelLayer, RedisPubSubLoopLayer, RedisSingleShardConnection
from channels_redis.utils import _wrap_close, create_pool, decode_hosts

from chatsite.redis_mux import MuxRedis

logger = logging.getLogger(__name__)

# The key that carries the local part of a channel name inside a message sent to its
# process channel; removed before the consumer sees the message.
LOCAL_KEY = "__local__"

_CANCELLED = (asyncio.CancelledError, asyncio.TimeoutError, GeneratorExit)


class Mailbox:
    """The messages of one local channel: asyncio.Queue's ``put_nowait`` and ``get``
    (unbounded), without its four deques and Event: about 3.2 KB per idle socket down to
    under a hundred bytes. Like asyncio.Queue, a getter cancelled just after it was woken
    passes its wake-up on, so no message is stranded."""

    __slots__ = ("_items", "_waiters")

    def __init__(self) -> None:
        self._items: deque | None = None  # made on the first message, dropped when drained
        self._waiters: list[asyncio.Future] | None = None

    def put_nowait(self, item) -> None:
        if self._items is None:
            self._items = deque()
        self._items.append(item)
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.pop(0)
            if not waiter.done():
                waiter.set_result(None)
                return

    def qsize(self) -> int:
        return len(self._items) if self._items else 0

    async def get(self):
        while not self._items:
            waiter = asyncio.get_running_loop().create_future()
            if self._waiters is None:
                self._waiters = []
            self._waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                waiter.cancel()
                if self._waiters and waiter in self._waiters:
                    self._waiters.remove(waiter)
                if self._items:
                    self._wake()
                raise
            finally:
                if not self._waiters:
                    self._waiters = None
        item = self._items.popleft()
        if not self._items:
            self._items = None
        return item


class ProcessLocalChannelLayer(RedisPubSubChannelLayer):
    """``RedisPubSubChannelLayer`` whose ``new_channel()`` names are process-local."""

    def _get_layer(self) -> ProcessLocalLoopLayer:
        loop = asyncio.get_running_loop()
        layer = self._layers.get(loop)
        if layer is None:
            layer = self._layers[loop] = ProcessLocalLoopLayer(*self._args, **self._kwargs, channel_layer=self)
            _wrap_close(self, loop)  # flushes the layer when the loop closes, as the parent does
        return layer

    async def echo(self, *, within: float) -> bool:
        """Whether this process hears itself through Redis (ProcessLocalLoopLayer.echo)."""
        return await self._get_layer().echo(within=within)


class _Shard(RedisSingleShardConnection):
    """A multiplexed connection for PUBLISH (chatsite/redis_mux.py) and a pubsub one;
    routing is the layer's. Publishes still go one at a time under the shard's lock, as
    in the parent: without it (measured) a reconnect storm's presence broadcasts went out
    at once and their fan-out crowded out the handshakes (the last of 1,000 recoveries
    4.5 s -> 10 s, a quarter of the clients past daphne's 10 s connect timeout)."""

    def _ensure_redis(self) -> None:
        if self._redis is None:
            self._redis = MuxRedis(connection_pool=create_pool(self.host))
            self._pubsub = self._redis.pubsub()

    def _receive_message(self, message) -> None:
        if message is not None:
            name = message["channel"]
            self.channel_layer.route(name.decode() if isinstance(name, bytes) else name, message["data"])

    async def sync(self, channel: str, wanted: Callable[[], bool]) -> None:
        """Subscribe or unsubscribe ``channel`` so that Redis matches ``wanted()``, which is
        read under the shard's lock: whatever order callers come in, the last one to run
        leaves the subscription as the member sets are now."""
        async with self._lock:
            want = wanted()
            if want == (channel in self._subscribed_to):
                return
            self._ensure_redis()
            self._ensure_receiver()
            if want:
                await self._pubsub.subscribe(channel)
                self._subscribed_to.add(channel)
            else:
                await self._pubsub.unsubscribe(channel)
                self._subscribed_to.discard(channel)

    async def unsubscribe_unwanted(self, channels: list[str], unwanted: Callable[[str], bool]) -> None:
        """One UNSUBSCRIBE for those of ``channels`` still subscribed and ``unwanted``
        (read under the lock, as in sync)."""
        async with self._lock:
            gone = [c for c in channels if c in self._subscribed_to and unwanted(c)]
            if gone:
                await self._pubsub.unsubscribe(*gone)
                self._subscribed_to.difference_update(gone)

    async def _do_receiving(self) -> None:
        # The parent's loop, but after a failure (Redis gone) it tries again within a
        # tenth of a second, not a second: the reconnect re-subscribes every channel of
        # the shard, and until then messages for this process are lost.
        while True:
            try:
                if self._pubsub and self._pubsub.subscribed:
                    self._receive_message(await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1))
                else:
                    await asyncio.sleep(0.1)
            except _CANCELLED:
                raise
            except BaseException:
                logger.warning("channel layer: Redis connection failed; retrying", exc_info=True)
                await asyncio.sleep(0.1)

    def subscribed(self, channel: str) -> bool:
        return channel in self._subscribed_to


class ProcessLocalLoopLayer(RedisPubSubLoopLayer):
    """The layer of one event loop (one daphne process)."""

    def __init__(self, hosts=None, group_linger: float = 0.0, **kwargs) -> None:
        super().__init__(hosts=hosts, **kwargs)
        # Seconds a group stays subscribed after its last local member left: a member
        # that comes back meanwhile (a reconnect, a user's next tab, a busy room's next
        # joiner) costs no SUBSCRIBE, and the UNSUBSCRIBEs of the groups that stayed
        # empty go in one command. 0: unsubscribe at once.
        self.group_linger = float(group_linger)
        self._lingering: dict[str, float] = {}  # group channel -> when it emptied (loop time)
        self._reaper: asyncio.Handle | asyncio.Task | None = None
        self._shards = [_Shard(host, self) for host in decode_hosts(hosts)]
        self.process_id = uuid.uuid4().hex
        # Local channels (names with "!"): name -> its decoded messages. Plain names
        # keep the parent's `channels` (queues of raw bytes) and their own subscriptions.
        self.local: dict[str, Mailbox] = {}
        # Process channels (the part before "!") this layer listens on.
        self.processes: set[str] = set()
        self._process_lock = asyncio.Lock()
        # `groups` (the parent's): group channel -> its local members. This is the reverse
        # index, channel -> group channels, so a channel that ends leaves its groups
        # without scanning them all (a tuple: most channels are in one or two groups).
        self.memberships: dict[str, tuple[str, ...]] = {}
        # Group channels with a subscribe/unsubscribe in flight, and how many.
        self._syncing: dict[str, int] = {}

    # --- channels ---------------------------------------------------------------------

    async def new_channel(self, prefix: str = "specific.") -> str:
        """A channel of this process: a local mailbox, no Redis command (bar the process
        channel's one SUBSCRIBE, the first time)."""
        if "!" in prefix:
            raise ValueError(f"a channel prefix cannot contain '!': {prefix!r}")
        process = f"{self.prefix}{prefix}{self.process_id}"
        channel = f"{process}!{uuid.uuid4().hex}"
        self.local[channel] = Mailbox()
        try:
            await self._listen(process)
        except BaseException:
            self.local.pop(channel, None)
            raise
        return channel

    async def _listen(self, process: str) -> None:
        """Subscribe to ``process`` once; callers that come meanwhile wait for it."""
        shard = self._get_shard(process)
        if process in self.processes and shard.subscribed(process):
            return
        async with self._process_lock:
            self.processes.add(process)
            await shard.sync(process, lambda: process in self.processes)

    async def send(self, channel: str, message: dict) -> None:
        if "!" not in channel:
            await super().send(channel, message)
            return
        process, _, local = channel.partition("!")
        data = self.channel_layer.serialize({**message, LOCAL_KEY: local})
        if process in self.processes:
            # A channel of this very process: straight into its mailbox (encoded and
            # decoded as over Redis, so it gets its own copy and the same checks). No
            # round trip, and it works while the subscription is being re-established
            # after a Redis restart, when the process drains its own sockets.
            self.route(process, data)
            return
        await self._get_shard(process).publish(process, data)

    async def echo(self, *, within: float) -> bool:
        """Whether a message this process publishes to its own channel comes back through
        Redis within ``within`` seconds: its subscription is live again after a Redis
        restart (the reconnect re-subscribes every channel of the connection at once)."""
        try:
            channel = await self.new_channel()
        except Exception:  # not even subscribed yet: Redis is away
            return False
        process, _, local = channel.partition("!")
        data = self.channel_layer.serialize({"type": "layer.echo", LOCAL_KEY: local})
        mailbox = self.local[channel]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        try:
            while loop.time() < deadline:
                with contextlib.suppress(Exception):  # Redis still away: the next try
                    await self._get_shard(process).publish(process, data)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(mailbox.get(), min(0.2, max(0.0, deadline - loop.time())))
                    return True
            return False
        finally:
            self.local.pop(channel, None)

    async def receive(self, channel: str) -> dict:
        if "!" not in channel:
            try:
                return await super().receive(channel)
            except _CANCELLED:
                await self._leave_groups(channel)
                raise
        queue = self.local.get(channel)
        try:
            if queue is None:
                # Not made by new_channel here (or forgotten by flush): listen for it now.
                queue = self.local[channel] = Mailbox()
                await self._listen(channel.partition("!")[0])
            return await queue.get()
        except _CANCELLED:
            # Channels cancels receive() when the consumer ends (there is no
            # delete_channel()): forget the channel, as the parent layer does.
            if self.local.get(channel) is queue:
                del self.local[channel]
            await self._leave_groups(channel)
            raise

    def route(self, name: str, data: bytes) -> None:
        """Hand a message from Redis to the local queues it is for (the shard's reader)."""
        if name in self.processes:
            message = self._decode(data)
            if message is None:
                return
            queue = self.local.get(f"{name}!{message.pop(LOCAL_KEY, None)}")
            if queue is not None:  # else the consumer is gone: dropped, as with no subscriber
                queue.put_nowait(message)
            return
        members = self.groups.get(name)
        if members:
            decoded = None
            for member in members:
                queue = self.local.get(member)
                if queue is None:
                    queue = self.channels.get(member)
                    if queue is not None:  # a plain channel: raw bytes, as in the parent
                        queue.put_nowait(data)
                    continue
                if decoded is None:
                    decoded = self._decode(data)
                    if decoded is None:
                        return
                    queue.put_nowait(decoded)
                else:
                    # Decoded once; each further member gets its own dict, so a handler
                    # that changes its event does not change the next member's.
                    queue.put_nowait(dict(decoded))
            return
        queue = self.channels.get(name)
        if queue is not None:
            queue.put_nowait(data)

    def _decode(self, data: bytes) -> dict | None:
        try:
            message = self.channel_layer.deserialize(data)
        except Exception:
            message = None
        if not isinstance(message, dict):
            # Logged here, not raised: an exception in the reader pauses it for a second.
            logger.error("dropped a channel-layer message that could not be decoded")
            return None
        return message

    # --- groups -----------------------------------------------------------------------

    async def group_add(self, group: str, channel: str) -> None:
        """Add a channel of this process to ``group``; the first local member subscribes
        the process, and every caller returns once the subscription is made."""
        if channel not in (self.local if "!" in channel else self.channels):
            raise RuntimeError(
                "You can only call group_add() on channels that exist in-process.\n"
                "Consumers are encouraged to use the common pattern:\n"
                f"   self.channel_layer.group_add({group!r}, self.channel_name)"
            )
        group_channel = self._get_group_channel_name(group)
        self.groups.setdefault(group_channel, set()).add(channel)
        joined = self.memberships.get(channel, ())
        if group_channel not in joined:
            self.memberships[channel] = (*joined, group_channel)
        await self._sync_group(group_channel)

    async def group_discard(self, group: str, channel: str) -> None:
        """Remove a channel from ``group`` (a no-op if it is not in it); the last local
        member unsubscribes the process."""
        group_channel = self._get_group_channel_name(group)
        if self._forget_member(group_channel, channel):
            joined = tuple(g for g in self.memberships.get(channel, ()) if g != group_channel)
            if joined:
                self.memberships[channel] = joined
            else:
                self.memberships.pop(channel, None)
            await self._sync_group(group_channel)

    def _forget_member(self, group_channel: str, channel: str) -> bool:
        members = self.groups.get(group_channel)
        if members is None or channel not in members:
            return False
        members.discard(channel)
        if not members:
            del self.groups[group_channel]
        return True

    async def _leave_groups(self, channel: str) -> None:
        """A channel ended: out of all its groups; Redis only for groups left empty."""
        emptied = [g for g in self.memberships.pop(channel, ()) if self._forget_member(g, channel)]
        for group_channel in emptied:
            try:
                await self._sync_group(group_channel)
            except BaseException:
                # Re-raising would replace the CancelledError being handled. The group
                # stays subscribed with no members (its messages are dropped) until its
                # next group_add/group_discard puts Redis right.
                logger.exception("unsubscribing %s after its last member ended failed", group_channel)

    async def _sync_group(self, group_channel: str) -> None:
        shard = self._get_shard(group_channel)
        want = group_channel in self.groups
        if self.group_linger > 0:
            if want:
                self._lingering.pop(group_channel, None)
            elif shard.subscribed(group_channel) and not self._syncing.get(group_channel):
                self._linger(group_channel)
                return
        if not self._syncing.get(group_channel) and want == shard.subscribed(group_channel):
            return  # nothing in flight and Redis already as wanted: no lock, no command
        self._syncing[group_channel] = self._syncing.get(group_channel, 0) + 1
        try:
            await shard.sync(group_channel, lambda: group_channel in self.groups)
        finally:
            left = self._syncing.pop(group_channel, 1) - 1  # flush() may have reset it
            if left:
                self._syncing[group_channel] = left

    def _linger(self, group_channel: str) -> None:
        loop = asyncio.get_running_loop()
        self._lingering.setdefault(group_channel, loop.time())
        if self._reaper is None:
            self._reaper = loop.call_later(self.group_linger, self._reap_soon)

    def _reap_soon(self) -> None:
        self._reaper = asyncio.ensure_future(self._reap())

    async def _reap(self) -> None:
        """Unsubscribe the groups that stayed empty for ``group_linger`` seconds, one
        UNSUBSCRIBE per shard; then wait for the next to come due."""
        try:
            now = asyncio.get_running_loop().time()
            due = [g for g, since in self._lingering.items() if now - since >= self.group_linger]
            by_shard: dict[_Shard, list[str]] = {}
            for group_channel in due:
                del self._lingering[group_channel]
                if group_channel not in self.groups:
                    by_shard.setdefault(self._get_shard(group_channel), []).append(group_channel)
            for shard, group_channels in by_shard.items():
                await shard.unsubscribe_unwanted(group_channels, lambda g: g not in self.groups)
        except Exception:
            # The groups stay subscribed with no members (their messages are dropped)
            # until a later reap or their next member.
            logger.exception("unsubscribing groups left empty failed")
        finally:
            self._reaper = None
            if self._lingering:
                oldest = min(self._lingering.values())
                delay = max(0.0, oldest + self.group_linger - asyncio.get_running_loop().time())
                self._reaper = asyncio.get_running_loop().call_later(delay, self._reap_soon)

    # --- flush --------------------------------------------------------------------------

    async def flush(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        self._lingering = {}
        self.local = {}
        self.processes = set()
        self.memberships = {}
        self._syncing = {}
        await super().flush()
