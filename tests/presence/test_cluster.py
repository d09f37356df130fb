"""Two real daphne processes sharing Redis and the database: a kick and a push issued
through process A reach a socket on process B, and a kill -9 of one process is cleaned
up by the other within three heartbeats."""

from __future__ import annotations

import asyncio

import pytest

from tests.live import LiveServer, http, last_line, new_live_server, open_socket

pytestmark = pytest.mark.live

HEARTBEAT = 1  # seconds: short, so liveness is tested in seconds, not minutes (tests.live.Socket pings at half that)


@pytest.fixture
def cluster(live_root, request):
    directory = live_root / f"cluster-{request.node.name[:40]}"
    a = new_live_server(directory, CHAT_HEARTBEAT=str(HEARTBEAT), PRESENCE_SERVER_NAME="proc-a").start()
    b = LiveServer(
        a.db_path, directory / "daphne-b.log", CHAT_HEARTBEAT=str(HEARTBEAT), PRESENCE_SERVER_NAME="proc-b"
    ).start()
    yield a, b
    a.stop()
    b.stop()


async def test_kick_and_push_issued_through_one_process_reach_a_socket_on_another(cluster):
    a, b = cluster
    token = last_line(a.manage("create_token", "alice", "--create-user"))
    key = last_line(a.manage("create_service_key", "cluster-test"))
    sock, welcome = await open_socket(b, token)
    connection_id = welcome["connection_id"]
    try:
        push = {"to": {"user": "alice"}, "topic": "report", "data": {"ok": 1}}
        status, answer = await asyncio.to_thread(http, "POST", a.url + "/api/push", key, push)
        assert (status, answer) == (202, {"delivered": 1, "offline": []})
        notify = await sock.until(lambda f: f["type"] == "notify")
        assert notify == {"type": "notify", "topic": "report", "data": {"ok": 1}}

        status, detail = await asyncio.to_thread(http, "GET", f"{a.url}/api/connections/{connection_id}", key)
        assert status == 200 and (detail["user"], detail["server"]) == ("alice", "proc-b")

        status, _ = await asyncio.to_thread(http, "DELETE", f"{a.url}/api/connections/{connection_id}", key)
        assert status == 204
        kicked = await sock.until(lambda f: f["type"] == "kicked")
        assert kicked["reason"]
        assert await asyncio.wait_for(sock.closed, 10) == 4003
    finally:
        await sock.close()


async def test_kill_9_of_a_process_is_cleaned_up_by_the_survivor_within_three_heartbeats(cluster):
    a, b = cluster
    alice = last_line(a.manage("create_token", "alice", "--create-user"))
    bob = last_line(a.manage("create_token", "bob", "--create-user"))
    key = last_line(a.manage("create_service_key", "cluster-test"))
    doomed, doomed_welcome = await open_socket(b, alice)
    survivor, _ = await open_socket(a, bob)
    try:
        await doomed.send(type="join", room="general")
        await doomed.until(lambda f: f["type"] == "joined")
        await survivor.send(type="join", room="general")
        joined = await survivor.until(lambda f: f["type"] == "joined")
        assert joined["online"] == ["alice", "bob"]

        b.kill()  # SIGKILL: no disconnect handler runs anywhere on B
        loop = asyncio.get_running_loop()
        killed_at = loop.time()
        leave = await survivor.until(
            lambda f: f["type"] == "presence" and f["event"] == "leave", timeout=3 * HEARTBEAT + 2
        )
        detected_after = loop.time() - killed_at
        assert leave == {"type": "presence", "room": "general", "user": "alice", "event": "leave"}
        # The contract is three heartbeats (PROTOCOL.md §4); this is a liveness deadline,
        # not a performance figure.
        assert detected_after <= 3 * HEARTBEAT, f"detected after {detected_after:.2f}s"

        status, listing = await asyncio.to_thread(http, "GET", a.url + "/api/connections?user=alice", key)
        assert status == 200
        connections = listing["connections"] if isinstance(listing, dict) else listing
        assert doomed_welcome["connection_id"] not in [c["id"] for c in connections]
        await survivor.send(type="rooms")
        rooms = await survivor.until(lambda f: f["type"] == "rooms")
        assert {r["room"]: r["online"] for r in rooms["rooms"]}["general"] == 1
    finally:
        await doomed.close()
        await survivor.close()
