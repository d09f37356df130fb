"""What a connect and a close cost in Redis round trips and registry writes, and that a
refused or failed connect leaves no record behind (presence/abuse.py, presence/runtime.py,
presence/store.py, presence/services/connections.py)."""

import asyncio
from datetime import timedelta
from urllib.parse import urlparse

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.db import IntegrityError, connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from redis.asyncio.connection import AbstractConnection

from accounts.services import token_create
from chatsite.asgi import application
from chatsite.redis_mux import Multiplexer
from presence import runtime, store
from presence.models import Connection
from presence.services import connections as registry
from tests.conftest import TIMEOUT, orm_thread_busy, ws_headers

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def presence_round_trips(monkeypatch):
    """Counts the requests sent to the presence Redis database (a pipeline or a script is
    one): single commands on the multiplexed connection, pipelines on pooled ones."""
    db = int(urlparse(settings.PRESENCE_REDIS_URL).path.lstrip("/") or 0)
    sent: list[int] = []
    original = AbstractConnection.send_packed_command
    original_call = Multiplexer.call

    async def counting(self, command, check_health=True):
        if self.db == db:
            sent.append(1)
        return await original(self, command, check_health)

    async def counting_call(self, *args):
        if self._pool.connection_kwargs.get("db", 0) == db:
            sent.append(1)
        return await original_call(self, *args)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counting)
    monkeypatch.setattr(Multiplexer, "call", counting_call)
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

    def fail(*, rows):
        raise RuntimeError("database unavailable")

    monkeypatch.setattr(registry, "connections_open", fail)
    _, token = await database_sync_to_async(token_create)(user=bob)
    communicator = WebsocketCommunicator(application, "/ws/chat/", headers=ws_headers(token=token))
    with pytest.raises(RuntimeError, match="database unavailable"):
        await communicator.connect(timeout=TIMEOUT)
    assert await store.server_connections(server=(await runtime.current()).name) == []


# --- registry writes in batches -------------------------------------------------------------------


def open_row(connection_id: str, *, user_id: int, server_id: int) -> dict:
    return {
        "id": connection_id, "user_id": user_id, "server_id": server_id, "channel_name": f"ch-{connection_id}",
        "ip": "192.0.2.1", "user_agent": "ua", "now": timezone.now(),
    }  # fmt: skip


def test_a_batch_of_opens_is_one_prepared_insert_and_a_bad_row_fails_alone(transactional_db, make_user):
    alice = make_user("alice")
    server_id = registry.server_register(name="s1", pid=1)
    rows = [open_row(f"c{i}", user_id=alice.pk, server_id=server_id) for i in range(3)]
    with CaptureQueriesContext(connection) as queries:
        assert registry.connections_open(rows=rows) == [None, None, None]
    inserts = [q["sql"] for q in queries if "INSERT" in q["sql"]]
    assert len(inserts) == 1 and inserts[0].startswith("3 times:"), "one prepared INSERT for the batch"
    bad = open_row("c-bad", user_id=alice.pk + 1000, server_id=server_id)  # no such user
    results = registry.connections_open(rows=[open_row("c3", user_id=alice.pk, server_id=server_id), bad])
    assert results[0] is None and isinstance(results[1], IntegrityError)
    assert sorted(Connection.objects.values_list("id", flat=True)) == ["c0", "c1", "c2", "c3"]
    row = Connection.objects.get(id="c0")
    assert (row.ip, row.channel_name, row.closed_at, row.rooms) == ("192.0.2.1", "ch-c0", None, " ")


def test_a_batch_of_closes_keeps_each_rows_first_close(transactional_db, make_user):
    alice = make_user("alice")
    server_id = registry.server_register(name="s1", pid=1)
    registry.connections_open(rows=[open_row(f"c{i}", user_id=alice.pk, server_id=server_id) for i in range(2)])
    seen = timezone.now() - timedelta(seconds=30)
    registry.connections_close(closes=[{"id": "c0", "code": 1000, "reason": "closed by client", "last_seen": seen}])
    registry.connections_close(
        closes=[
            {"id": "c0", "code": 4003, "reason": "kicked", "last_seen": None},
            {"id": "c1", "code": 1006, "reason": "connection lost", "last_seen": None},
        ]
    )
    c0, c1 = Connection.objects.order_by("id")
    assert (c0.close_code, c0.close_reason, c0.last_seen) == (1000, "closed by client", seen)
    assert (c1.close_code, c1.close_reason) == (1006, "connection lost")
    assert c1.closed_at is not None and c1.last_seen == c1.closed_at


class FakeConsumer:
    def __init__(self, user, index: int):
        self.user = user
        self.connection_id = f"fake{index}"
        self.channel_name = f"specific.fake{index}"
        self.scope = {"client_ip": "192.0.2.9", "user_agent": "ua"}

    def last_seen_at(self):
        return timezone.now()


async def test_sockets_that_connect_while_the_orm_thread_is_busy_share_inserts(create_users):
    users = await create_users("u0", "u1", "u2", "u3")
    server = await runtime.current()
    opens = runtime._opens()
    batches, items = opens.batches, opens.items
    # Each connect makes its Redis round trip, then queues its row while the thread is busy.
    async with orm_thread_busy(opens, until_queued=len(users)):
        tasks = [
            asyncio.ensure_future(runtime.connection_open(FakeConsumer(u, i), user=u)) for i, u in enumerate(users)
        ]
    opened = await asyncio.wait_for(asyncio.gather(*tasks), TIMEOUT)
    assert all(o.refusal is None and o.runtime is server for o in opened)
    # Those that queued before the first crossing share it; the rest share the next.
    assert opens.items - items == 4 and opens.batches - batches <= 2
    ids = await database_sync_to_async(lambda: sorted(Connection.objects.values_list("id", flat=True)))()
    assert ids == ["fake0", "fake1", "fake2", "fake3"]
    assert sorted(c["id"] for c in await store.server_connections(server=server.name)) == ids
    for consumer in [server.sockets[connection_id] for connection_id in ids]:
        await runtime.connection_close(consumer, runtime=server, code=1000, reason="closed by client", room_ids=[])
    assert await database_sync_to_async(Connection.objects.filter(closed_at__isnull=True).count)() == 0
