"""chatsite.layers.ProcessLocalChannelLayer against the real Redis of the test run.

Two layer instances stand for two processes. Subscriptions are checked in Redis itself
(PUBSUB NUMSUB / PUBSUB CHANNELS); each test uses its own prefix, since pub/sub channels
are shared by every database of the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable

import pytest
import redis.asyncio as aioredis
from django.conf import settings

from chatsite.devservers import free_port
from chatsite.layers import LOCAL_KEY, Mailbox, ProcessLocalChannelLayer

TIMEOUT = 5.0


@pytest.fixture
def redis_url() -> str:
    return settings.CHANNEL_LAYERS["default"]["CONFIG"]["hosts"][0]


@pytest.fixture
async def admin(redis_url):
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def make_layer(redis_url):
    """``make_layer()`` -> a layer instance (a "process") with this test's prefix."""
    prefix = f"t{uuid.uuid4().hex[:8]}."
    made: list[ProcessLocalChannelLayer] = []

    def make(**config) -> ProcessLocalChannelLayer:
        layer = ProcessLocalChannelLayer(hosts=config.pop("hosts", [redis_url]), prefix=prefix, **config)
        made.append(layer)
        return layer

    make.prefix = prefix
    yield make
    for layer in made:
        await layer.flush()


async def eventually(probe: Callable[[], Awaitable], expected, timeout: float = TIMEOUT):
    """Poll ``probe`` until it returns ``expected`` (Redis applies another connection's
    SUBSCRIBE on its own schedule); fail with the last value after ``timeout``."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await probe()
        if value == expected or asyncio.get_running_loop().time() > deadline:
            assert value == expected
            return
        await asyncio.sleep(0.01)


def numsub(admin, channel: str) -> Callable[[], Awaitable[int]]:
    async def probe() -> int:
        ((_, count),) = await admin.pubsub_numsub(channel)
        return count

    return probe


def channels(admin, prefix: str) -> Callable[[], Awaitable[set[str]]]:
    async def probe() -> set[str]:
        return {c.decode() for c in await admin.pubsub_channels(f"{prefix}*")}

    return probe


async def receive(layer, channel: str) -> dict:
    return await asyncio.wait_for(layer.receive(channel), TIMEOUT)


def group_channel(layer, group: str) -> str:
    return layer._get_layer()._get_group_channel_name(group)


async def test_new_channels_share_one_process_subscription(make_layer, admin):
    layer = make_layer()
    names = [await layer.new_channel() for _ in range(20)]
    process = names[0].partition("!")[0]
    assert all(name.partition("!")[0] == process and name.count("!") == 1 for name in names)
    assert len(set(names)) == 20
    await eventually(channels(admin, make_layer.prefix), {process})


async def test_send_and_receive_on_a_local_channel(make_layer):
    layer = make_layer()
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "chat.message", "text": "hi"})
    assert await receive(layer, channel) == {"type": "chat.message", "text": "hi"}


async def test_send_to_a_channel_of_another_process(make_layer):
    here, there = make_layer(), make_layer()
    mine, theirs = await here.new_channel(), await there.new_channel()
    assert mine.partition("!")[0] != theirs.partition("!")[0]
    message = {"type": "connection.kick", "reason": "spam"}
    await here.send(theirs, message)
    assert await receive(there, theirs) == message
    assert LOCAL_KEY not in message, "the caller's dict is left alone"


async def test_group_fan_out_to_local_members_over_one_subscription(make_layer, admin):
    here, there = make_layer(), make_layer()
    members = [await here.new_channel() for _ in range(3)]
    for channel in members:
        await here.group_add("room.1", channel)
    await eventually(numsub(admin, group_channel(here, "room.1")), 1)

    await there.group_send("room.1", {"type": "room.message", "id": 7})
    received = [await receive(here, channel) for channel in members]
    assert received == [{"type": "room.message", "id": 7}] * 3
    assert len({id(message) for message in received}) == 3, "each member gets its own dict"


async def test_last_local_member_leaving_unsubscribes_the_group(make_layer, admin):
    layer = make_layer()
    first, second = await layer.new_channel(), await layer.new_channel()
    await layer.group_add("user.1", first)
    await layer.group_add("user.1", second)
    name = group_channel(layer, "user.1")

    await layer.group_discard("user.1", first)
    await layer.group_discard("user.1", first)  # twice: a no-op
    await eventually(numsub(admin, name), 1)
    await layer.group_discard("user.1", second)
    await eventually(numsub(admin, name), 0)

    # Joining again subscribes again.
    await layer.group_add("user.1", first)
    await eventually(numsub(admin, name), 1)


async def test_an_emptied_group_lingers_then_goes_in_one_unsubscribe(make_layer, admin):
    layer = make_layer(group_linger=0.3)
    member = await layer.new_channel()
    process = member.partition("!")[0]
    for group in ("room.1", "room.2", "room.3"):
        await layer.group_add(group, member)
    names = [group_channel(layer, group) for group in ("room.1", "room.2", "room.3")]
    await eventually(channels(admin, make_layer.prefix), {process, *names})
    shard = layer._get_layer()._shards[0]
    unsubscribes: list[tuple[str, ...]] = []
    real_unsubscribe = shard._pubsub.unsubscribe

    async def counted(*args):
        unsubscribes.append(args)
        return await real_unsubscribe(*args)

    shard._pubsub.unsubscribe = counted

    for group in ("room.1", "room.2", "room.3"):
        await layer.group_discard(group, member)
    assert unsubscribes == [], "they stay subscribed while they linger"
    assert all(shard.subscribed(name) for name in names)

    # A message to the memberless group is dropped; a member back within the linger
    # costs no SUBSCRIBE and gets what is sent from then on.
    there = make_layer()  # another process: both go through Redis on one connection
    await there.group_send("room.1", {"type": "chat.message", "text": "nobody"})
    # Redis delivers one connection's publishes in order: once this marker is in, the
    # message before it has been routed (to no one).
    await there.send(member, {"type": "chat.message", "text": "marker"})
    assert await receive(layer, member) == {"type": "chat.message", "text": "marker"}
    back = await layer.new_channel()
    await layer.group_add("room.1", back)
    await layer.group_send("room.1", {"type": "chat.message", "text": "you"})
    assert await receive(layer, back) == {"type": "chat.message", "text": "you"}
    await layer.group_discard("room.1", back)

    # After the linger, the groups that stayed empty go in one UNSUBSCRIBE (room.1,
    # emptied again later, after its own linger: with them only if the timer ran late).
    await eventually(channels(admin, make_layer.prefix), {process})
    assert sorted(name for args in unsubscribes for name in args) == sorted(names)
    assert any(set(names[1:]) <= set(args) for args in unsubscribes)
    assert layer._get_layer()._lingering == {}


async def test_a_group_that_fills_again_is_not_unsubscribed_by_its_linger(make_layer, admin):
    layer = make_layer(group_linger=0.2)
    first, second = await layer.new_channel(), await layer.new_channel()
    await layer.group_add("user.1", first)
    await layer.group_discard("user.1", first)
    await layer.group_add("user.1", second)
    # A later group's linger runs the reaper past user.1's due time.
    await layer.group_add("user.2", first)
    await layer.group_discard("user.2", first)
    await eventually(numsub(admin, group_channel(layer, "user.2")), 0)
    assert await numsub(admin, group_channel(layer, "user.1"))() == 1
    await layer.group_send("user.1", {"type": "chat.message", "text": "still here"})
    assert await receive(layer, second) == {"type": "chat.message", "text": "still here"}


async def test_group_add_of_an_unknown_channel_is_refused(make_layer):
    layer = make_layer()
    await layer.new_channel()  # the process exists; this name was never made here
    with pytest.raises(RuntimeError):
        await layer.group_add("room.1", f"{make_layer.prefix}specific.x!y")


async def test_cancelled_receive_forgets_the_channel_and_its_groups(make_layer, admin):
    here, there = make_layer(), make_layer()
    leaving, staying = await here.new_channel(), await here.new_channel()
    await here.group_add("user.1", leaving)
    await here.group_add("room.1", leaving)
    await here.group_add("room.1", staying)
    task = asyncio.ensure_future(here.receive(leaving))
    await asyncio.sleep(0)  # let the receive start waiting, as a consumer's does
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    loop_layer = here._get_layer()
    assert leaving not in loop_layer.local
    assert leaving not in loop_layer.memberships
    assert loop_layer.groups[group_channel(here, "room.1")] == {staying}
    await eventually(numsub(admin, group_channel(here, "user.1")), 0)  # its last member
    await eventually(numsub(admin, group_channel(here, "room.1")), 1)  # still has one

    await there.group_send("room.1", {"type": "room.message", "id": 1})
    assert await receive(here, staying) == {"type": "room.message", "id": 1}


async def test_messages_to_a_vanished_channel_are_dropped(make_layer):
    here, there = make_layer(), make_layer()
    gone, alive = await here.new_channel(), await here.new_channel()
    task = asyncio.ensure_future(here.receive(gone))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    await there.send(gone, {"type": "lost"})
    await there.send(alive, {"type": "kept"})
    # Both went through the same process channel in order: once the second is here,
    # the first was dropped, and did not bring its channel back.
    assert await receive(here, alive) == {"type": "kept"}
    assert gone not in here._get_layer().local


async def test_subscribe_in_flight_then_last_member_leaves_ends_unsubscribed(make_layer, admin):
    layer = make_layer()
    channel = await layer.new_channel()
    loop_layer = layer._get_layer()
    name = group_channel(layer, "room.9")
    shard = loop_layer._get_shard(name)
    async with shard._lock:  # hold the shard's commands so both calls are in flight together
        adding = asyncio.ensure_future(layer.group_add("room.9", channel))
        discarding = asyncio.ensure_future(layer.group_discard("room.9", channel))
        await asyncio.wait([adding, discarding], timeout=0.05)
        assert not adding.done() and loop_layer._syncing[name] == 2
    await asyncio.wait_for(asyncio.gather(adding, discarding), TIMEOUT)
    assert not shard.subscribed(name)
    await eventually(numsub(admin, name), 0)


async def test_rejoin_while_the_unsubscribe_is_in_flight_stays_subscribed(make_layer, admin):
    here, there = make_layer(), make_layer()
    first, second = await here.new_channel(), await here.new_channel()
    await here.group_add("room.9", first)
    loop_layer = here._get_layer()
    name = group_channel(here, "room.9")
    shard = loop_layer._get_shard(name)
    async with shard._lock:
        leaving = asyncio.ensure_future(here.group_discard("room.9", first))
        joining = asyncio.ensure_future(here.group_add("room.9", second))
        await asyncio.wait([leaving, joining], timeout=0.05)
        assert not joining.done(), "a joiner waits for the subscription, not just for its member set"
    await asyncio.wait_for(asyncio.gather(leaving, joining), TIMEOUT)
    await eventually(numsub(admin, name), 1)
    await there.group_send("room.9", {"type": "room.message", "id": 2})
    assert await receive(here, second) == {"type": "room.message", "id": 2}


async def test_process_channel_and_groups_are_resubscribed_after_a_reconnect(make_layer, admin):
    here, there = make_layer(), make_layer()
    channel = await here.new_channel()
    await here.group_add("user.5", channel)
    process, group = channel.partition("!")[0], group_channel(here, "user.5")
    await eventually(numsub(admin, process), 1)

    connection = here._get_layer()._get_shard(process)._pubsub.connection

    async def address():
        writer = connection._writer
        return writer.get_extra_info("sockname")[:2] if writer is not None else None

    killed = await address()
    assert await admin.client_kill(f"{killed[0]}:{killed[1]}")

    # redis-py reconnects the reader and re-subscribes everything it was subscribed to.
    async def reconnected():
        return (await address()) not in (None, killed)

    await eventually(reconnected, True)
    await eventually(numsub(admin, process), 1)
    await eventually(numsub(admin, group), 1)
    await there.send(channel, {"type": "direct"})
    await there.group_send("user.5", {"type": "grouped"})
    assert await receive(here, channel) == {"type": "direct"}
    assert await receive(here, channel) == {"type": "grouped"}


async def test_flush_forgets_everything_and_the_layer_works_again(make_layer, admin):
    layer = make_layer()
    channel = await layer.new_channel()
    await layer.group_add("room.3", channel)
    await layer.flush()
    await eventually(channels(admin, make_layer.prefix), set())

    channel = await layer.new_channel()
    await layer.group_add("room.3", channel)
    await eventually(channels(admin, make_layer.prefix), {channel.partition("!")[0], group_channel(layer, "room.3")})
    await layer.group_send("room.3", {"type": "again"})
    assert await receive(layer, channel) == {"type": "again"}


async def test_plain_channel_names_work_as_in_the_pubsub_layer(make_layer, admin):
    here, there = make_layer(), make_layer()
    plain = f"{make_layer.prefix}worker"
    waiting = asyncio.ensure_future(here.receive(plain))  # subscribes the name itself
    await eventually(numsub(admin, plain), 1)
    await there.send(plain, {"type": "job"})
    assert await asyncio.wait_for(waiting, TIMEOUT) == {"type": "job"}

    local = await here.new_channel()
    await here.group_add("room.4", plain)
    await here.group_add("room.4", local)
    await there.group_send("room.4", {"type": "both"})
    assert await receive(here, plain) == {"type": "both"}
    assert await receive(here, local) == {"type": "both"}


async def test_room_hub_channel_is_local_and_receives_its_rooms(make_layer, admin):
    here, there = make_layer(), make_layer()
    hub_channel = await here.new_channel(prefix="hub.")
    assert "!" in hub_channel and hub_channel.startswith(f"{make_layer.prefix}hub.")
    await here.group_add("room.8", hub_channel)
    await there.group_send("room.8", {"type": "room.message", "room_id": 8})
    assert await receive(here, hub_channel) == {"type": "room.message", "room_id": 8}


@pytest.fixture
def second_redis(tmp_path):
    from chatsite.devservers import start_redis

    server = start_redis(tmp_path / "redis")
    yield server.url
    server.stop()


async def test_channels_and_groups_spread_over_shards_still_meet(redis_url, second_redis):
    prefix = f"t{uuid.uuid4().hex[:8]}."
    hosts = [redis_url, second_redis]
    # Several "processes", so that process channels land on both shards.
    layers = [ProcessLocalChannelLayer(hosts=hosts, prefix=prefix) for _ in range(6)]
    admins = [aioredis.Redis.from_url(url) for url in hosts]
    try:
        names = [await layer.new_channel() for layer in layers]
        groups = [f"room.{i}" for i in range(8)]
        for layer, name in zip(layers, names, strict=True):
            for group in groups:
                await layer.group_add(group, name)

        subscribed = [{c.decode() for c in await admin.pubsub_channels(f"{prefix}*")} for admin in admins]
        assert subscribed[0] and subscribed[1], "both shards carry subscriptions"
        assert not subscribed[0] & subscribed[1], "each name lives on one shard"

        for i, name in enumerate(names):
            await layers[(i + 1) % len(layers)].send(name, {"type": "direct", "to": i})
        for layer, name in zip(layers, names, strict=True):
            assert (await receive(layer, name))["type"] == "direct"
        for group in groups:
            await layers[0].group_send(group, {"type": "grouped", "group": group})
        for layer, name in zip(layers, names, strict=True):
            assert sorted([(await receive(layer, name))["group"] for _ in groups]) == sorted(groups)
    finally:
        for layer in layers:
            await layer.flush()
        for admin in admins:
            await admin.aclose()


async def test_mailbox_hands_messages_out_in_order_and_waits_when_empty():
    mailbox = Mailbox()
    mailbox.put_nowait(1)
    mailbox.put_nowait(2)
    assert [await mailbox.get(), await mailbox.get()] == [1, 2]
    waiting = asyncio.ensure_future(mailbox.get())
    await asyncio.sleep(0)
    assert not waiting.done()
    mailbox.put_nowait(3)
    assert await asyncio.wait_for(waiting, TIMEOUT) == 3
    assert mailbox.qsize() == 0


async def test_mailbox_getter_cancelled_after_its_wake_up_passes_the_message_on():
    mailbox = Mailbox()
    first = asyncio.ensure_future(mailbox.get())
    second = asyncio.ensure_future(mailbox.get())
    await asyncio.sleep(0)  # both wait
    mailbox.put_nowait("only")  # wakes the first...
    first.cancel()  # ...which is cancelled before it runs
    assert await asyncio.wait_for(second, TIMEOUT) == "only"
    assert first.cancelled()


async def test_steady_members_miss_nothing_while_other_consumers_churn(make_layer, admin):
    """Consumers come and go (groups joined, left, or dropped by the cancelled receive)
    on one process while another sends: the room's steady member and a direct channel
    get every message in order, and nothing is left behind afterwards."""
    here, there = make_layer(), make_layer()
    steady, direct = await here.new_channel(prefix="hub."), await here.new_channel()
    await here.group_add("room.1", steady)
    stop = asyncio.Event()

    async def churn(seed: int) -> None:
        n = seed
        while not stop.is_set():
            n += 7
            channel = await here.new_channel()

            async def consume(channel=channel):
                while True:  # as a consumer does: receive until cancelled
                    await here.receive(channel)

            consumer = asyncio.ensure_future(consume())
            await here.group_add(f"user.{n % 5}", channel)
            if n % 3 == 0:
                await here.group_add("room.1", channel)
            await asyncio.sleep(0)
            if n % 2 == 0:
                await here.group_discard(f"user.{n % 5}", channel)
            consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await consumer

    churners = [asyncio.ensure_future(churn(seed)) for seed in range(10)]
    count = 500
    for i in range(count):
        await there.group_send("room.1", {"type": "room.message", "i": i})
        await there.send(direct, {"type": "direct", "i": i})
    grouped = [(await receive(here, steady))["i"] for _ in range(count)]
    direct_ = [(await receive(here, direct))["i"] for _ in range(count)]
    stop.set()
    await asyncio.wait_for(asyncio.gather(*churners), TIMEOUT)

    assert grouped == direct_ == list(range(count))
    loop_layer = here._get_layer()
    assert set(loop_layer.local) == {steady, direct}
    assert loop_layer.groups == {group_channel(here, "room.1"): {steady}}
    await eventually(
        channels(admin, make_layer.prefix),
        {steady.partition("!")[0], direct.partition("!")[0], group_channel(here, "room.1")},
    )


async def test_echo_comes_back_through_redis_and_says_so_when_it_cannot(make_layer, redis_url):
    layer = make_layer()
    assert await layer.echo(within=TIMEOUT) is True
    assert layer._get_layer().local == {}, "its channel is gone after"
    nowhere = make_layer(hosts=[f"redis://127.0.0.1:{free_port()}/0"])
    assert await nowhere.echo(within=0.3) is False


async def test_a_send_within_the_process_skips_redis(make_layer):
    layer = make_layer()
    channel = await layer.new_channel()
    shard = layer._get_layer()._shards[0]

    async def no_redis(*args):
        raise AssertionError("published through Redis")

    shard.publish = no_redis
    message = {"type": "connection.drain", "reason": "redis restarted", "nested": {"a": [1]}}
    await layer.send(channel, message)
    received = await receive(layer, channel)
    assert received == message
    received["nested"]["a"].append(2)
    assert message["nested"]["a"] == [1], "the receiver gets its own copy, as over Redis"
