"""Draining a process (rolling restarts) and resyncing after a Redis restart."""

import pytest
from channels.db import database_sync_to_async
from django.core.management import CommandError, call_command

from presence import runtime, store
from presence.models import Block, Connection
from presence.services import moderation

pytestmark = pytest.mark.django_db(transaction=True)


async def closed_with(client) -> int:
    return (await client.ws.receive_output(timeout=5))["code"]


async def test_drain_closes_the_processes_sockets_with_1012_and_credits_them(connect, create_users):
    alice, bob = await create_users("alice", "bob")
    a, b = await connect(alice), await connect(bob)
    server = await runtime.current()
    await database_sync_to_async(call_command)("drain", server=server.name, batch=1, interval=0, wait=0)
    assert await closed_with(a) == 1012
    assert await closed_with(b) == 1012
    # The server ended these sockets: their next connect is not counted as abuse.
    _, _, counted = await store.connect_count(
        kind="user", key=str(alice.pk), now_ms=0, window_ms=60_000, member="x", ip="", user_agent=""
    )
    assert counted is False
    await a.close()
    row = await database_sync_to_async(Connection.objects.get)(id=a.welcome["connection_id"])
    assert (row.close_code, row.close_reason) == (1012, "drain: server draining")


async def test_a_draining_process_sends_new_sockets_on_at_once(connect, create_users):
    (alice,) = await create_users("alice")
    server = await runtime.current()
    await store.draining_set(server=server.name, seconds=5)
    client = await connect(alice)
    assert await closed_with(client) == 1012


def test_drain_of_a_server_without_connections_only_marks_it_draining(db, capsys):
    call_command("drain", server="never-had-a-socket")
    assert "marked draining" in capsys.readouterr().out


def test_drain_with_bad_batch_is_a_clear_error(db):
    with pytest.raises(CommandError, match="--batch"):
        call_command("drain", server="any", batch=0)


async def test_redis_restart_resyncs_clients_and_restores_blocks(connect, create_users):
    alice, troll = await create_users("alice", "troll")
    client = await connect(alice)
    await client.join("general")
    await client.until("presence")  # alice's own join
    server = await runtime.current()
    await database_sync_to_async(moderation.users_block)(users=[troll], by=None, minutes=10)
    await server.check_epoch()  # nothing changed: nothing happens
    assert await client.silent()
    await store._redis().flushdb()  # what a Redis restart without persistence leaves
    await server.check_epoch()
    assert await closed_with(client) == 1012
    assert await store.denial(user_id=troll.pk, ip=None), "the block is back in Redis"
    assert await database_sync_to_async(Block.objects.count)() == 1
