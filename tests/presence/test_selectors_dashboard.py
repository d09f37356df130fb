"""The dashboard snapshot: its numbers for a known set of rows, in a fixed number of queries."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from django.core.serializers.json import DjangoJSONEncoder
from django.utils import timezone

from presence import store
from presence.models import AbuseFlag, Block, Connection, ModerationAction, ServerProcess
from presence.selectors_dashboard import dashboard_snapshot

pytestmark = pytest.mark.django_db

# Totals, rooms, servers, connects, actions, open flags, active blocks.
SNAPSHOT_QUERIES = 7


def process(name: str, *, alive: bool = True, stopped: bool = False) -> ServerProcess:
    now = timezone.now()
    row = ServerProcess.objects.create(
        name=name, hostname="host", pid=1, last_heartbeat=now, stopped_at=now if stopped else None
    )
    async_to_sync(store.server_lease)(server=name, ttl=60)
    if not alive:
        async_to_sync(store.server_release)(server=name)
    return row


def conn(user, server, *, rooms=(), minutes_ago: float = 30, closed: bool = False) -> Connection:
    at = timezone.now() - timedelta(minutes=minutes_ago)
    return Connection.objects.create(
        id=uuid.uuid4().hex,
        user=user,
        server=server,
        channel_name=f"specific.{uuid.uuid4().hex}",
        rooms=" " + " ".join(rooms) + " ",
        connected_at=at,
        last_seen=timezone.now(),
        closed_at=timezone.now() if closed else None,
    )


@pytest.fixture
def world(make_user):
    """alice: 3 open sockets; bob: 1 open, 1 closed; carol: 1 on a lapsed process only."""
    alice, bob, carol, mod = (make_user(n) for n in ("alice", "bob", "carol", "mod"))
    web1, web2, lapsed = process("web1"), process("web2"), process("web3", alive=False)
    process("old", stopped=True)
    conn(alice, web1, rooms=["general", "random"], minutes_ago=0.5)
    conn(alice, web1, rooms=["general"], minutes_ago=3)
    conn(alice, web2, minutes_ago=10)
    conn(bob, web2, rooms=["general"], minutes_ago=20)
    conn(bob, web1, rooms=["random"], minutes_ago=0.2, closed=True)
    conn(carol, lapsed, rooms=["general"], minutes_ago=40)
    AbuseFlag.objects.create(
        kind="user", user=bob, connects=20, window_seconds=60, first_seen=timezone.now(), last_seen=timezone.now()
    )
    AbuseFlag.objects.create(
        kind="ip", ip="192.0.2.1", connects=200, window_seconds=60, first_seen=timezone.now(),
        last_seen=timezone.now(), cleared_at=timezone.now(),
    )  # fmt: skip
    Block.objects.create(user=carol, until=timezone.now() + timedelta(hours=1))
    Block.objects.create(ip="192.0.2.1", until=timezone.now() - timedelta(minutes=1))
    Block.objects.create(user=bob, until=timezone.now() + timedelta(hours=1), lifted_at=timezone.now())
    for index in range(12):
        ModerationAction.objects.create(kind="kick", by=mod, user=bob, reason=f"r{index}")
    ModerationAction.objects.create(kind="block", by=None, ip="192.0.2.1", reason="latest")
    return {"web1": web1, "web2": web2, "lapsed": lapsed}


def test_snapshot_numbers_for_a_known_set_of_rows(world, django_assert_max_num_queries):
    with django_assert_max_num_queries(SNAPSHOT_QUERIES):
        snapshot = dashboard_snapshot()

    # Open = not closed, on a process whose lease is alive: carol's socket on the lapsed
    # process no longer counts, nor does bob's closed one.
    assert (snapshot["users_online"], snapshot["connections_open"]) == (2, 4)
    assert snapshot["rooms"] == [{"room": "general", "connections": 3}, {"room": "random", "connections": 1}]
    assert snapshot["rooms_total"] == 2 and snapshot["rooms_complete"]

    servers = {s["name"]: s for s in snapshot["servers"]}
    assert set(servers) == {"web1", "web2", "web3"}  # not the stopped one
    assert (servers["web1"]["connections"], servers["web2"]["connections"]) == (2, 2)
    assert (servers["web3"]["alive"], servers["web3"]["connections"]) == (False, 1)  # awaiting its sweep
    assert servers["web1"]["alive"] and servers["web1"]["id"] == world["web1"].pk

    # Connected in the last 1, 5 and 15 minutes (closed or not): 2, 3, 4.
    assert {k: v["count"] for k, v in snapshot["connects"].items()} == {"1": 2, "5": 3, "15": 4}
    assert snapshot["connects"]["5"]["per_minute"] == 0.6

    assert (snapshot["flags_open"], snapshot["blocks_active"]) == (1, 1)
    assert len(snapshot["actions"]) == 10
    latest = snapshot["actions"][0]
    assert (latest["kind"], latest["by"], latest["whom"], latest["reason"]) == ("block", None, "192.0.2.1", "latest")
    assert snapshot["actions"][1]["by"] == "mod" and snapshot["actions"][1]["whom"] == "bob"

    assert json.loads(json.dumps(snapshot, cls=DjangoJSONEncoder)) == snapshot  # JSON-ready as is


def test_snapshot_of_an_empty_registry(db, django_assert_max_num_queries):
    with django_assert_max_num_queries(SNAPSHOT_QUERIES):
        snapshot = dashboard_snapshot()
    assert snapshot["users_online"] == snapshot["connections_open"] == snapshot["flags_open"] == 0
    assert snapshot["rooms"] == snapshot["servers"] == snapshot["actions"] == []


def test_snapshot_queries_do_not_grow_with_the_rows(world, make_user, django_assert_max_num_queries):
    users = [make_user(f"u{i}") for i in range(30)]
    for index, user in enumerate(users):
        conn(user, world["web1"], rooms=[f"room-{index % 7}", "general"], minutes_ago=index)
    with django_assert_max_num_queries(SNAPSHOT_QUERIES):
        snapshot = dashboard_snapshot()
    assert snapshot["connections_open"] == 34 and snapshot["users_online"] == 32
    assert snapshot["rooms"][0] == {"room": "general", "connections": 33}
