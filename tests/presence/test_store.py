"""Room presence in Redis (presence/store.py): the first-in and last-out transitions that
decide `presence` events, decided atomically per socket, and the per-process registry.
A real Redis, emptied before each test; no database."""

from __future__ import annotations

import asyncio

from presence import store

ROOM, OTHER_ROOM = 101, 102
ALICE, BOB = 1, 2


async def enter(channel: str, *, user_id: int = ALICE, username: str = "alice", room_id: int = ROOM):
    return await store.room_enter(
        room_id=room_id, room_slug=f"r{room_id}", user_id=user_id, username=username, channel=channel
    )


async def leave(channel: str, *, user_id: int = ALICE, username: str = "alice", room_id: int = ROOM) -> bool:
    return await store.room_exit(
        room_id=room_id, room_slug=f"r{room_id}", user_id=user_id, username=username, channel=channel
    )


# --- entering and leaving a room ------------------------------------------------------------


async def test_the_first_socket_of_a_user_in_a_room_is_first_in():
    assert await enter("c1") == (True, ["alice"])


async def test_a_second_socket_of_the_same_user_is_not_first_in():
    await enter("c1")
    assert await enter("c2") == (False, ["alice"])


async def test_entering_again_with_the_same_socket_is_idempotent():
    await enter("c1")
    assert await enter("c1") == (False, ["alice"])
    assert await leave("c1") is True, "one socket, entered twice, leaves once"


async def test_online_lists_every_user_in_the_room_sorted():
    await enter("b1", user_id=BOB, username="bob")
    assert await enter("a1") == (True, ["alice", "bob"])
    assert await enter("z1", user_id=3, username="zed", room_id=OTHER_ROOM) == (True, ["zed"])


async def test_only_the_last_socket_of_a_user_out_is_last_out():
    await enter("c1")
    await enter("c2")
    assert await leave("c1") is False
    assert (await store.rooms_online_counts(room_ids=[ROOM]))[ROOM] == 1
    assert await leave("c2") is True
    assert (await store.rooms_online_counts(room_ids=[ROOM]))[ROOM] == 0


async def test_leaving_with_a_socket_that_never_entered_is_not_last_out():
    await enter("c1")
    assert await leave("c9") is False
    assert await leave("c1", room_id=OTHER_ROOM) is False
    assert await leave("c1") is True
    assert await leave("c1") is False, "leaving twice announces nothing twice"


async def test_racing_sockets_of_one_user_give_exactly_one_first_in_and_one_last_out():
    channels = [f"c{i}" for i in range(20)]
    entered = await asyncio.gather(*(enter(c) for c in channels))
    assert sum(first for first, _ in entered) == 1
    left = await asyncio.gather(*(leave(c) for c in channels))
    assert sum(left) == 1


async def test_rooms_online_counts_counts_users_not_sockets():
    await enter("a1")
    await enter("a2")
    await enter("b1", user_id=BOB, username="bob")
    await enter("b2", user_id=BOB, username="bob", room_id=OTHER_ROOM)
    assert await store.rooms_online_counts(room_ids=[ROOM, OTHER_ROOM, 999]) == {ROOM: 2, OTHER_ROOM: 1, 999: 0}
    assert await store.rooms_online_counts(room_ids=[]) == {}


async def test_room_channels_lists_every_socket_in_the_room():
    await enter("a1")
    await enter("a2")
    await enter("b1", user_id=BOB, username="bob")
    await enter("x1", room_id=OTHER_ROOM)
    assert sorted(await store.room_channels(room_id=ROOM)) == ["a1", "a2", "b1"]
    assert await store.room_channel_count(room_id=ROOM) == 3
    await leave("a1")
    assert sorted(await store.room_channels(room_id=ROOM)) == ["a2", "b1"]


# --- the per-process registry -------------------------------------------------------------------


async def test_a_registered_connection_is_listed_with_its_rooms_until_forgotten():
    await store.connection_register(
        channel="a1", connection_id="cid1", user_id=ALICE, username="alice", ip="10.0.0.1", server="s1"
    )
    await enter("a1")
    await enter("a1", room_id=OTHER_ROOM)
    assert await store.server_connections(server="s1") == [
        {
            "channel": "a1",
            "id": "cid1",
            "user_id": ALICE,
            "username": "alice",
            "ip": "10.0.0.1",
            "rooms": [(ROOM, f"r{ROOM}"), (OTHER_ROOM, f"r{OTHER_ROOM}")],
        }
    ]
    assert await store.server_connections(server="s2") == []
    await store.connection_forget(channel="a1", server="s1")
    assert await store.server_connections(server="s1") == []


async def test_a_lease_that_is_released_has_lapsed():
    await store.server_lease(server="s1", ttl=60)
    await store.server_lease(server="s2", ttl=60)
    assert await store.servers_lapsed() == []
    await store.server_release(server="s1")
    assert await store.servers_lapsed() == ["s1"]
    assert await store.servers_alive() == ["s2"]


async def test_only_one_survivor_claims_a_sweep():
    claims = await asyncio.gather(*(store.sweep_claim(server="dead", ttl=60) for _ in range(5)))
    assert sorted(claims) == [False, False, False, False, True]


# --- the handshake's one round trip, and the socket's end in one ---------------------------------


def registration(channel: str = "a1", *, server: str = "s1") -> store.Registration:
    return store.Registration(
        channel=channel, connection_id=f"cid-{channel}", user_id=ALICE, username="alice", ip="10.0.0.1", server=server
    )


async def admit(*, count: bool = True, reg: store.Registration | None = None, now_ms: int = 1_000_000):
    return await store.connect_admit(
        kind="user", key=str(ALICE), count=count, now_ms=now_ms, window_ms=60_000, member=f"m{now_ms}",
        ip="10.0.0.1", user_agent="ua", registration=reg,
    )  # fmt: skip


async def test_an_admitted_socket_is_counted_and_registered_in_one_call():
    first = await admit(reg=registration("a1"), now_ms=1_000_000)
    second = await admit(reg=registration("a2"), now_ms=1_000_500)
    assert (first.connects, first.counted, first.refusal) == (1, True, None)
    assert first.registered and not first.draining
    assert (second.connects, second.first_ms) == (2, 1_000_000)
    assert [c["id"] for c in await store.server_connections(server="s1")] == ["cid-a1", "cid-a2"]


async def test_a_denied_socket_is_counted_but_not_registered():
    await store.deny(kind="user", key=str(ALICE), reason="blocked for a test", seconds=60)
    admission = await admit(reg=registration())
    assert (admission.refusal, admission.registered, admission.connects) == ("blocked for a test", False, 1)
    assert await store.server_connections(server="s1") == []


async def test_an_exempt_socket_is_not_counted_but_a_block_still_refuses_it():
    admission = await admit(count=False, reg=registration())
    assert (admission.connects, admission.counted, admission.registered) == (0, False, True)
    await store.deny(kind="user", key=str(ALICE), reason="blocked", seconds=60)
    assert (await admit(count=False, reg=registration("a2"))).refusal == "blocked"
    _, _, counted = await store.connect_count(
        kind="user", key=str(ALICE), now_ms=2_000_000, window_ms=60_000, member="x", ip="", user_agent=""
    )
    assert counted, "nothing was counted before"
    assert (await admit(now_ms=2_000_001)).connects == 2


async def test_a_credit_covers_one_connect():
    await store.connect_credit(kind="user", key=str(ALICE), ttl=60)
    assert (await admit(now_ms=1)).counted is False
    assert (await admit(now_ms=2)).counted is True


async def test_admission_reads_the_draining_flag_of_the_socket_server_only():
    await store.draining_set(server="s1", seconds=60)
    assert (await admit(reg=registration("a1", server="s1"))).draining is True
    assert (await admit(reg=registration("b1", server="s2"))).draining is False


async def test_forgetting_a_socket_leaves_its_rooms_and_reports_the_last_ones_out():
    await store.connection_register(
        channel="a1", connection_id="cid1", user_id=ALICE, username="alice", ip="", server="s1"
    )
    await enter("a1")
    await enter("a1", room_id=OTHER_ROOM)
    await enter("a2", room_id=OTHER_ROOM)  # alice's second tab stays in the other room
    last = await store.connection_forget(
        channel="a1", server="s1", user_id=ALICE, username="alice", room_ids=[ROOM, OTHER_ROOM]
    )
    assert last == [ROOM]
    assert await store.server_connections(server="s1") == []
    assert await store.room_channels(room_id=ROOM) == []
    assert await store.room_channels(room_id=OTHER_ROOM) == ["a2"]
    assert await store.rooms_online_counts(room_ids=[ROOM, OTHER_ROOM]) == {ROOM: 0, OTHER_ROOM: 1}
    again = await store.connection_forget(channel="a1", server="s1", user_id=ALICE, username="alice", room_ids=[ROOM])
    assert again == [], "idempotent: nothing is last out twice"
