"""The RoomHub spares joins their message reads: the database says which ids a join
missed (one id-only query, shared by the joins that arrive meanwhile), the frames come
from the messages the hub delivered; anything it does not hold is read as before."""

from __future__ import annotations

import asyncio
import time

from rooms import selectors, services
from rooms.hub import hub
from rooms.models import Message
from tests.test_protocol import adb, seed_room


async def post(room, sender, bodies: list[str]) -> list[int]:
    """Send ``bodies`` to ``room`` through the service (stored, then broadcast); their ids."""
    create = adb(services.room_message_create)
    return [(await create(room=room, sender=sender, body=body, client_id=None))[0]["id"] for body in bodies]


async def chats(client, n: int) -> list[int]:
    """The ids of the next ``n`` chat frames (presence frames between them are skipped)."""
    return [(await client.until("chat"))["id"] for _ in range(n)]


async def rejoin(client, room: str, **extra) -> dict:
    await client.send(type="join", room=room, **extra)
    return await client.until("joined")


async def test_a_join_with_since_takes_the_frames_the_hub_delivered(connect, create_users):
    alice, bob, carol = await create_users("alice", "bob", "carol")
    room, ids = await adb(seed_room)("general", bob, 1)
    a = await connect(alice)
    await a.join("general")
    live = await post(room, bob, [f"live {n}" for n in range(3)])
    assert await chats(a, 3) == live
    reads = hub().reads
    c = await connect(carol)
    joined = await c.join("general", since=ids[0])
    assert joined["last_id"] == live[-1] and joined["more"] is False
    recovered = [await c.recv_type("chat") for _ in range(3)]
    assert [m["id"] for m in recovered] == live and [m["body"] for m in recovered] == ["live 0", "live 1", "live 2"]
    assert hub().reads == reads, "the frames came from memory"


async def test_a_message_whose_broadcast_was_lost_sends_the_join_to_the_database(connect, create_users):
    alice, bob = await create_users("alice", "bob")
    room, ids = await adb(seed_room)("general", bob, 1)
    a = await connect(alice)
    await a.join("general")
    # Committed, never published: its process died between commit and publish.
    lost = await adb(Message.objects.create)(room=room, sender=bob, body="committed, never broadcast")
    (after,) = await post(room, bob, ["after"])
    assert await chats(a, 1) == [after]
    reads = hub().reads
    b = await connect(bob)
    await rejoin(b, "general", since=ids[0])
    assert await chats(b, 2) == [lost.id, after]
    assert hub().reads == reads + 1


async def test_joins_during_a_check_share_the_next_one_and_miss_nothing_delivered_meanwhile(
    connect, create_users, monkeypatch
):
    users = await create_users("bob", *(f"u{i}" for i in range(5)))
    room, ids = await adb(seed_room)("general", users[0], 2)
    clients = [await connect(user) for user in users[1:]]
    real = selectors.room_ids_after
    calls = []

    def slow_first_check(**kwargs):
        calls.append(kwargs["since"])
        result = real(**kwargs)
        if len(calls) == 1:
            # After this check's snapshot: a message is stored and broadcast, then the
            # other joins register. Sharing this check would lose it for them.
            services.room_message_create(room=room, sender=users[0], body="meanwhile", client_id=None)
            time.sleep(0.4)
        return result

    monkeypatch.setattr(selectors, "room_ids_after", slow_first_check)
    await clients[0].send(type="join", room="general", since=ids[0])
    await asyncio.sleep(0.2)
    for client in clients[1:]:
        await client.send(type="join", room="general", since=ids[0])
    meanwhile = (await adb(Message.objects.get)(body="meanwhile")).id
    for client in clients:
        await client.until("joined")
        assert await chats(client, 2) == [ids[1], meanwhile]
    assert calls == [ids[0], ids[0]], "the four later joins shared one check"


async def test_a_since_older_than_the_kept_messages_reads_the_database(connect, create_users, settings):
    settings.CHAT_RECENT_PER_ROOM = 3
    alice, bob = await create_users("alice", "bob")
    room, _ = await adb(seed_room)("general", bob, 1)
    a = await connect(alice)
    await a.join("general")
    sent = await post(room, bob, [f"n{n}" for n in range(5)])
    assert await chats(a, 5) == sent
    assert sorted(hub().recent[room.id].texts) == sent[-3:]
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
    await a.join("general")
    room_id = next(iter(hub().recent))
    await a.send(type="leave", room="general")
    await a.until("left")
    assert room_id not in hub().recent
