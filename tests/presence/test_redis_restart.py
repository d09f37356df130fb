"""A Redis restart: the app recovers by itself, with no process restart, and clients
resync (they are sent away with 1012, come back, and recover with `since`)."""

import asyncio

import pytest

from chatsite.devservers import start_redis
from tests.live import last_line, new_live_server, open_socket

pytestmark = pytest.mark.live


@pytest.fixture
def private_redis(live_root, request):
    """A Redis of this test's own, so restarting it disturbs nothing else."""
    directory = live_root / f"redis-{request.node.name[:40]}"
    server = start_redis(directory)
    yield server, directory
    server.stop()


async def test_after_a_redis_restart_clients_resync_and_chat_again(live_root, private_redis, request):
    redis, redis_dir = private_redis
    daphne = new_live_server(live_root / f"restart-{request.node.name[:40]}", CHAT_HEARTBEAT="1", REDIS_URL=redis.url)
    daphne.start()
    try:
        alice = last_line(daphne.manage("create_token", "alice", "--create-user"))
        bob = last_line(daphne.manage("create_token", "bob", "--create-user"))
        a, _ = await open_socket(daphne, alice)
        b, _ = await open_socket(daphne, bob)
        for sock in (a, b):
            await sock.send(type="join", room="general")
            await sock.until(lambda f: f["type"] == "joined")
        await a.send(type="chat", room="general", body="before", client_id="m1")
        before = await b.until(lambda f: f["type"] == "chat")

        redis.stop()
        redis = start_redis(redis_dir, port=redis.port)  # same address, empty, as after a crash
        request.addfinalizer(redis.stop)
        # Each process notices the new Redis within a heartbeat and sends its sockets on.
        assert await asyncio.wait_for(a.closed, 10) == 1012
        assert await asyncio.wait_for(b.closed, 10) == 1012
        await a.close()
        await b.close()

        a, _ = await open_socket(daphne, alice)
        b, _ = await open_socket(daphne, bob)
        await a.send(type="join", room="general", since=before["id"])
        await a.until(lambda f: f["type"] == "joined")
        await b.send(type="join", room="general", since=before["id"])
        joined = await b.until(lambda f: f["type"] == "joined")
        assert joined["online"] == ["alice", "bob"], "presence was rebuilt"
        await a.send(type="chat", room="general", body="after", client_id="m2")
        after = await b.until(lambda f: f["type"] == "chat")
        assert (after["body"], after["sender"]) == ("after", "alice")
        await a.close()
        await b.close()
    finally:
        daphne.stop()
