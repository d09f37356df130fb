"""What a connect and a close cost in Redis, and that a refused or failed connect leaves
no record behind (presence/abuse.py, presence/runtime.py, presence/store.py)."""

from urllib.parse import urlparse

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from redis.asyncio.connection import AbstractConnection

from accounts.services import token_create
from chatsite.asgi import application
from presence import runtime, store
from presence.models import Connection
from presence.services import connections as registry
from tests.conftest import TIMEOUT, ws_headers

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def presence_round_trips(monkeypatch):
    """Counts the requests sent to the presence Redis database (a pipeline or a script is one)."""
    db = int(urlparse(settings.PRESENCE_REDIS_URL).path.lstrip("/") or 0)
    sent: list[int] = []
    original = AbstractConnection.send_packed_command

    async def counting(self, command, check_health=True):
        if self.db == db:
            sent.append(1)
        return await original(self, command, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counting)
    return sent


async def test_a_connect_costs_two_presence_round_trips_and_a_close_one(connect, create_users, presence_round_trips):
    alice, bob = await create_users("alice", "bob")
    await (await connect(alice)).close()  # the process registers itself with the first socket
    presence_round_trips.clear()
    client = await connect(bob)
    assert len(presence_round_trips) == 2, "the per-IP check, then the per-user check with the record"
    await client.join("general")
    await client.until("presence")
    presence_round_trips.clear()
    await client.close()
    assert len(presence_round_trips) == 1, "leaving the room and forgetting the record together"
    assert await store.server_connections(server=(await runtime.current()).name) == []


async def presence_of(client, user: str) -> dict:
    """The next `presence` frame about ``user`` (skipping those about others)."""
    while (frame := await client.until("presence"))["user"] != user:
        pass
    return frame


async def test_a_closed_sockets_rooms_see_it_leave(connect, create_users):
    alice, bob = await create_users("alice", "bob")
    a, b = await connect(alice), await connect(bob)
    await a.join("general")
    await b.join("general")
    assert (await presence_of(a, "bob"))["event"] == "join"
    await b.close()
    frame = await presence_of(a, "bob")
    assert (frame["room"], frame["event"]) == ("general", "leave")


async def test_a_second_tab_closing_emits_no_leave(connect, create_users):
    alice, bob = await create_users("alice", "bob")
    watcher = await connect(alice)
    await watcher.join("general")
    tab1, tab2 = await connect(bob), await connect(bob)
    await tab1.join("general")
    await tab2.join("general")
    assert (await presence_of(watcher, "bob"))["event"] == "join"
    await tab2.close()
    assert await watcher.silent(), "bob is still there in his other tab"
    await tab1.close()
    assert (await presence_of(watcher, "bob"))["event"] == "leave"


async def test_the_connect_that_starts_a_cooldown_is_refused_and_leaves_no_record(connect, create_users, settings):
    settings.PRESENCE_ABUSE_USER_LIMIT = 1
    (alice,) = await create_users("alice")
    await (await connect(alice)).close()
    _, token = await database_sync_to_async(token_create)(user=alice)
    communicator = WebsocketCommunicator(application, "/ws/chat/", headers=ws_headers(token=token))
    connected, _ = await communicator.connect(timeout=TIMEOUT)
    assert not connected
    assert await store.server_connections(server=(await runtime.current()).name) == []
    assert await database_sync_to_async(Connection.objects.filter(closed_at__isnull=True).count)() == 0


async def test_a_connect_whose_registry_insert_fails_leaves_no_redis_record(connect, create_users, monkeypatch):
    alice, bob = await create_users("alice", "bob")
    await (await connect(alice)).close()

    def fail(**kwargs):
        raise RuntimeError("database unavailable")

    monkeypatch.setattr(registry, "connection_open", fail)
    _, token = await database_sync_to_async(token_create)(user=bob)
    communicator = WebsocketCommunicator(application, "/ws/chat/", headers=ws_headers(token=token))
    with pytest.raises(RuntimeError, match="database unavailable"):
        await communicator.connect(timeout=TIMEOUT)
    assert await store.server_connections(server=(await runtime.current()).name) == []
