"""The RoomHub answers joins from the messages it delivered once a read vouched for them:
one database read for many joins, and exactly the messages the database would give."""

from __future__ import annotations

import asyncio

from rooms import hub as hub_module
from rooms import services
from rooms.hub import hub
from tests.test_protocol import adb, enter, seed_room


async def chats(client, n: int) -> list[int]:
    """The ids of the next ``n`` chat frames (presence frames between them are skipped)."""
    return [(await client.until("chat"))["id"] for _ in range(n)]


async def rejoin(client, room: str, **extra) -> dict:
    await client.send(type="join", room=room, **extra)
    return await client.until("joined")


async def test_a_second_join_with_since_is_answered_from_memory_with_live_and_stored_messages(connect, create_users):
    alice, bob, carol = await create_users("alice", "bob", "carol")
    room, ids = await adb(seed_room)("general", bob, 3)
    a = await connect(alice)
    await a.join("general", since=ids[0])  # subscribes the process and reads: vouches above ids[0]
    assert await chats(a, 2) == ids[1:]
    assert (await a.recv_type("presence"))["user"] == "alice"
    reads = hub().reads
    live, _ = await adb(services.room_message_create)(room=room, sender=bob, body="live", client_id=None)
    assert (await a.recv_type("chat"))["id"] == live["id"]

    c = await connect(carol)
    joined = await c.join("general", since=ids[1])
    assert joined["last_id"] == live["id"] and joined["more"] is False
    assert await chats(c, 2) == [ids[2], live["id"]]
    plain = await connect(bob)
    assert (await plain.join("general"))["last_id"] == live["id"]
    assert hub().reads == reads, "neither join read the database"


async def test_a_since_below_what_a_read_vouched_for_reads_the_database(connect, create_users):
    alice, bob = await create_users("alice", "bob")
    _, ids = await adb(seed_room)("general", bob, 4)
    a = await connect(alice)
    await a.join("general", since=ids[2])
    assert await chats(a, 1) == ids[3:]
    reads = hub().reads
    b = await connect(bob)
    await b.join("general", since=ids[0])
    assert await chats(b, 3) == ids[1:]
    assert hub().reads == reads + 1


async def test_joins_that_arrive_during_a_read_wait_for_it_instead_of_reading(connect, create_users, monkeypatch):
    users = await create_users("bob", *(f"u{i}" for i in range(5)))
    _, ids = await adb(seed_room)("general", users[0], 5)
    clients = [await connect(user) for user in users[1:]]
    real = services.room_join_state
    calls = []

    def slow_join_state(**kwargs):
        calls.append(kwargs["since"])
        import time

        time.sleep(0.3)  # in the ORM thread: the other joins arrive meanwhile
        return real(**kwargs)

    monkeypatch.setattr(services, "room_join_state", slow_join_state)
    for client in clients:
        await client.send(type="join", room="general", since=ids[0])
    for client in clients:
        assert (await client.recv_type("joined"))["last_id"] == ids[-1]
        assert await chats(client, 4) == ids[1:]
    assert calls == [ids[0]], "one read for the whole storm"


async def test_what_a_read_vouched_for_expires_and_a_redis_restart_forgets_it(connect, create_users, monkeypatch):
    alice, bob = await create_users("alice", "bob")
    _, ids = await adb(seed_room)("general", bob, 2)
    a = await connect(alice)
    await a.join("general", since=ids[0])  # vouches above ids[0]
    reads = hub().reads
    b = await connect(bob)
    await rejoin(b, "general", since=ids[0])
    assert hub().reads == reads
    hub().forget_recent()
    await rejoin(b, "general", since=ids[0])
    assert hub().reads == reads + 1
    monkeypatch.setattr(hub_module, "RECENT_TTL", 0.0)
    await rejoin(b, "general", since=ids[0])
    assert hub().reads == reads + 2


async def test_the_kept_messages_stay_within_the_cap_and_older_sinces_read_the_database(
    connect, create_users, settings
):
    settings.CHAT_RECENT_PER_ROOM = 3
    alice, bob = await create_users("alice", "bob")
    room, ids = await adb(seed_room)("general", bob, 1)
    a = await connect(alice)
    await enter(a, "general")
    sent = []
    for n in range(5):
        frame, _ = await adb(services.room_message_create)(room=room, sender=bob, body=f"n{n}", client_id=None)
        sent.append(frame["id"])
    assert await chats(a, 5) == sent
    recent = hub().recent[room.id]
    assert sorted(recent.texts) == sent[-3:]
    reads = hub().reads
    b = await connect(bob)
    await rejoin(b, "general", since=sent[2])  # covered by the three kept
    assert await chats(b, 2) == sent[3:]
    assert hub().reads == reads
    await rejoin(b, "general", since=sent[0])  # older than the kept ones
    assert await chats(b, 4) == sent[1:]
    assert hub().reads == reads + 1


async def test_the_last_member_leaving_drops_the_kept_messages(connect, create_users):
    (alice,) = await create_users("alice")
    a = await connect(alice)
    joined = await enter(a, "general")
    room_id = next(iter(hub().recent))
    await a.send(type="leave", room="general")
    await a.recv_type("left")
    await asyncio.wait_for(_until(lambda: room_id not in hub().recent), 5)
    assert joined["last_id"] is None


async def _until(predicate) -> None:
    while not predicate():
        await asyncio.sleep(0.01)
