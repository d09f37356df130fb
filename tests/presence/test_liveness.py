"""The registry, process leases, silent sockets and the sweep of dead processes."""

import time

import pytest
from channels.db import database_sync_to_async
from django.utils import timezone

from presence import runtime, store
from presence.models import Connection, ModerationAction, ServerProcess
from presence.services import moderation

pytestmark = pytest.mark.django_db(transaction=True)


async def presence_leave(client) -> dict:
    """The next `presence` leave frame (skipping joins, e.g. the client's own)."""
    while (frame := await client.until("presence"))["event"] != "leave":
        pass
    return frame


def rows(**filters):
    return database_sync_to_async(lambda: list(Connection.objects.filter(**filters).values()))()


async def test_connect_registers_the_connection_and_close_records_its_code(connect, create_users):
    (alice,) = await create_users("alice")
    client = await connect(alice)
    (row,) = await rows(id=client.welcome["connection_id"])
    assert row["user_id"] == alice.pk and row["closed_at"] is None
    server = await database_sync_to_async(ServerProcess.objects.get)(pk=row["server_id"])
    assert server.name == (await runtime.current()).name
    await client.close()
    (row,) = await rows(id=client.welcome["connection_id"])
    assert row["closed_at"] is not None and row["close_code"] == 1000


async def test_heartbeat_flush_writes_last_seen_rtt_and_rooms_in_one_batch(
    connect, create_users, django_assert_num_queries
):
    (alice,) = await create_users("alice")
    client = await connect(alice)
    await client.join("general")
    await client.join("random")
    await client.send(type="ping", rtt=42)
    await client.recv_type("pong")
    server = await runtime.current()
    await server.flush()
    (row,) = await rows(id=client.welcome["connection_id"])
    assert row["rtt_ms"] == 42 and row["rooms"] == " general random "
    # Nothing changed since: the next flush writes only the process heartbeat.
    assert server.sockets[client.welcome["connection_id"]].registry_update() is None


async def test_bad_rtt_in_ping_is_invalid_and_the_socket_stays(connect, create_users):
    (alice,) = await create_users("alice")
    client = await connect(alice)
    await client.send(type="ping", rtt="fast")
    assert (await client.recv_type("error"))["code"] == "invalid"
    await client.send(type="ping")
    await client.recv_type("pong")


async def test_silent_connection_is_dropped_after_three_heartbeats(connect, create_users, settings):
    alice, bob = await create_users("alice", "bob")
    quiet = await connect(alice)
    watcher = await connect(bob)
    await quiet.join("general")
    await watcher.join("general")
    while (await quiet.until("presence"))["user"] != "bob":
        pass
    server = await runtime.current()
    heartbeat = settings.CHAT_HEARTBEAT
    consumer = server.sockets[quiet.welcome["connection_id"]]
    consumer.last_seen -= 2.5 * heartbeat  # as if alice had sent nothing for 2.5 heartbeats
    await server.expire_silent(now=time.monotonic(), heartbeat=heartbeat)
    assert await quiet.silent(), "less than three heartbeats of silence is allowed"
    consumer.last_seen -= 1 * heartbeat
    await server.expire_silent(now=time.monotonic(), heartbeat=heartbeat)
    leave = await presence_leave(watcher)
    assert leave == {"type": "presence", "room": "general", "user": "alice", "event": "leave"}
    closed = await quiet.ws.receive_output(timeout=5)
    assert closed == {"type": "websocket.close", "code": 1001}
    (row,) = await rows(id=quiet.welcome["connection_id"])
    assert row["close_code"] == 1001 and row["closed_at"] is not None


async def ghost_server(*, name: str, user, room_slug: str, room_id: int) -> str:
    """A process that registered a socket in a room and then died: no lease, no disconnect."""
    server_id = await database_sync_to_async(
        lambda: ServerProcess.objects.create(name=name, hostname="gone", pid=1, last_heartbeat=timezone.now()).pk
    )()
    connection_id = "ghost" + name[-4:]
    await database_sync_to_async(Connection.objects.create)(
        id=connection_id, user=user, server_id=server_id, channel_name=f"chat.ghost-{name}",
        ip="10.0.0.9", connected_at=timezone.now(), last_seen=timezone.now(),
    )  # fmt: skip
    await store.connection_register(
        channel=f"chat.ghost-{name}", connection_id=connection_id, user_id=user.pk, username=user.username,
        ip="10.0.0.9", server=name,
    )  # fmt: skip
    await store.room_enter(
        room_id=room_id, room_slug=room_slug, user_id=user.pk, username=user.username, channel=f"chat.ghost-{name}"
    )
    await store.server_lease(server=name, ttl=0.05)  # lapses at once, as after a kill -9
    return connection_id


async def lease_lapsed(name: str) -> None:
    """Until the ghost's lease (ttl 0.05 s) has lapsed in Redis (each check a round trip:
    a key's expiry has no event to wait on), with a deadline."""
    deadline = time.monotonic() + 5
    while name not in await store.servers_lapsed():
        assert time.monotonic() < deadline, "the lease never lapsed"


async def test_dead_process_is_swept_by_a_survivor(connect, create_users, settings):
    alice, bob = await create_users("alice", "bob")
    watcher = await connect(bob)
    joined = await watcher.join("general")
    room = await database_sync_to_async(lambda: __import__("rooms.models").models.Room.objects.get(slug="general"))()
    ghost_id = await ghost_server(name="dead-0001", user=alice, room_slug="general", room_id=room.pk)
    assert "alice" not in joined["online"]
    server = await runtime.current()
    await lease_lapsed("dead-0001")
    await server.sweep(heartbeat=settings.CHAT_HEARTBEAT)
    leave = await presence_leave(watcher)
    assert leave == {"type": "presence", "room": "general", "user": "alice", "event": "leave"}
    (row,) = await rows(id=ghost_id)
    assert row["close_code"] == 1006 and row["closed_at"] is not None
    assert await store.rooms_online_counts(room_ids=[room.pk]) == {room.pk: 1}
    assert "dead-0001" not in await store.servers_lapsed()
    # The server closed alice's socket, not alice: her reconnect does not count as abuse.
    _, _, counted = await store.connect_count(
        kind="user",
        key=str(alice.pk),
        now_ms=int(time.time() * 1000),
        window_ms=60_000,
        member="m",
        ip="",
        user_agent="",
    )
    assert counted is False


async def test_sweep_is_idempotent(connect, create_users):
    (alice,) = await create_users("alice")
    await runtime.current()
    await database_sync_to_async(ServerProcess.objects.create)(name="dead-0002", hostname="gone", pid=2)
    assert await runtime.server_sweep(server="dead-0002") == 0
    assert await runtime.server_sweep(server="dead-0002") == 0


async def test_kick_reaches_the_socket_which_gets_kicked_then_4003(connect, create_users):
    alice, mod = await create_users("alice", "mod")
    client = await connect(alice)
    connection = Connection.objects.filter(id=client.welcome["connection_id"])
    count = await database_sync_to_async(moderation.connections_kick)(connections=connection, by=mod, reason="spam")
    assert count == 1
    assert await client.recv_type("kicked") == {"type": "kicked", "reason": "spam"}
    assert await client.ws.receive_output(timeout=5) == {"type": "websocket.close", "code": 4003}
    action = await database_sync_to_async(ModerationAction.objects.get)()
    assert (action.kind, action.by_id, action.user_id, action.reason) == ("kick", mod.pk, alice.pk, "spam")
    await client.close()  # daphne would now deliver websocket.disconnect; the test plays daphne
    (row,) = await rows(id=client.welcome["connection_id"])
    assert row["close_code"] == 4003 and row["close_reason"] == "kicked: spam"


async def test_kicking_a_closed_connection_does_nothing(connect, create_users):
    (alice,) = await create_users("alice")
    client = await connect(alice)
    await client.close()
    connection = Connection.objects.filter(id=client.welcome["connection_id"])
    assert await database_sync_to_async(moderation.connections_kick)(connections=connection, by=None) == 0
    assert await database_sync_to_async(ModerationAction.objects.count)() == 0


async def test_room_kick_reaches_everyone_in_the_room_and_no_one_else(connect, create_users):
    alice, bob, carol = await create_users("alice", "bob", "carol")
    a, b, c = await connect(alice), await connect(bob), await connect(carol)
    await a.join("general")
    await b.join("general")
    await c.join("random")
    room = await database_sync_to_async(lambda: __import__("rooms.models").models.Room.objects.get(slug="general"))()
    assert await database_sync_to_async(moderation.room_kick)(room_id=room.pk, by=None) == 2
    assert (await a.until("kicked"))["reason"] == moderation.KICK_REASON_DEFAULT
    assert (await b.until("kicked"))["reason"] == moderation.KICK_REASON_DEFAULT
    await c.send(type="ping")
    assert (await c.until("pong"))["type"] == "pong"


async def test_a_consumer_that_stopped_handling_events_is_forgotten_after_four_heartbeats(
    connect, create_users, settings
):
    alice, bob = await create_users("alice", "bob")
    stuck = await connect(alice)
    watcher = await connect(bob)
    await stuck.join("general")
    await watcher.join("general")
    server = await runtime.current()
    consumer = server.sockets[stuck.welcome["connection_id"]]
    consumer.last_seen -= 4.5 * settings.CHAT_HEARTBEAT  # silent, and the expire event went unanswered
    await server.expire_silent(now=time.monotonic(), heartbeat=settings.CHAT_HEARTBEAT)
    assert stuck.welcome["connection_id"] not in server.sockets
    leave = await presence_leave(watcher)
    assert leave["user"] == "alice"
    (row,) = await rows(id=stuck.welcome["connection_id"])
    assert row["closed_at"] is not None and row["close_reason"] == "unresponsive"


async def test_a_failing_event_handler_does_not_end_the_consumer(connect, create_users, monkeypatch):
    alice, bob = await create_users("alice", "bob")
    a, b = await connect(alice), await connect(bob)
    server = await runtime.current()
    consumer = server.sockets[a.welcome["connection_id"]]

    async def broken(event):
        raise RuntimeError("send on a closed protocol")

    monkeypatch.setattr(consumer, "user_frame", broken)
    await b.send(type="private", to="alice", body="hello", client_id="p1")
    await b.until("private")
    await a.send(type="ping")
    assert (await a.until("pong"))["type"] == "pong", "the consumer outlived the failing handler"
    assert a.welcome["connection_id"] in server.sockets


async def test_a_failing_room_member_does_not_cost_the_others_their_message(connect, create_users, monkeypatch):
    alice, bob, carol = await create_users("alice", "bob", "carol")
    a, b, c = await connect(alice), await connect(bob), await connect(carol)
    for client in (a, b, c):
        await client.join("general")
    server = await runtime.current()
    consumer = server.sockets[b.welcome["connection_id"]]

    async def broken(event):
        raise RuntimeError("send on a closed protocol")

    monkeypatch.setattr(consumer, "room_event", broken)
    await a.send(type="chat", room="general", body="to all", client_id="r1")
    assert (await a.until("chat"))["body"] == "to all"
    assert (await c.until("chat"))["body"] == "to all"


async def test_sweep_replays_what_the_dead_process_committed_but_never_broadcast(connect, create_users, settings):
    from rooms import services
    from rooms.models import Message, Room

    alice, bob = await create_users("alice", "bob")
    watcher = await connect(bob)
    await watcher.join("general")
    room = await database_sync_to_async(Room.objects.get)(slug="general")
    delivered, _ = await database_sync_to_async(services.room_message_create)(
        room=room, sender=alice, body="broadcast before the kill", client_id=None
    )
    assert (await watcher.until("chat"))["id"] == delivered["id"]
    # Committed by the process that then died, before it could publish:
    lost = await database_sync_to_async(Message.objects.create)(room=room, sender=alice, body="never broadcast")
    await ghost_server(name="dead-0003", user=alice, room_slug="general", room_id=room.pk)
    server = await runtime.current()
    await lease_lapsed("dead-0003")
    await server.sweep(heartbeat=settings.CHAT_HEARTBEAT)
    replayed = await watcher.until("chat")
    assert replayed["id"] == lost.id and replayed["body"] == "never broadcast"
    frames = []
    while not await watcher.silent():
        frames.append(await watcher.recv())
    assert [f for f in frames if f["type"] == "chat"] == [], "what this process delivered is not sent again"
