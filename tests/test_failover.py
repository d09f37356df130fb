"""Failover with real processes: clients chat through HAProxy to two daphne processes
sharing PostgreSQL and Redis; one daphne is killed with SIGKILL while messages flow.
Its clients reconnect through the balancer to the survivor and recover with `since`:
over 1,000 messages, none is lost and none is stored or shown twice, and the registry
shows the truth within three heartbeats."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from chatsite.devcluster import Cluster, missing_binaries
from rooms.client import ChatClient
from tests.live import http, last_line

pytestmark = pytest.mark.live

HEARTBEAT = 1
SENDERS = 4
RECEIVERS = 2
PER_SENDER = 300  # 1,200 messages in all
SEND_INTERVAL = 0.03  # seconds between one sender's messages: ~130 messages/s in all
ROOM = "failover"


@pytest.fixture(scope="module")
def cluster():
    missing = missing_binaries()
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"CI must have {missing} (see .ci/run)")
        pytest.skip(f"needs {', '.join(missing)}")
    env = {
        "CHAT_HEARTBEAT": str(HEARTBEAT),
        # The load comes from loopback and is faster than a person types: measure
        # failover, not the abuse and rate limits.
        "PRESENCE_ABUSE_EXEMPT_NETWORKS": "127.0.0.0/8",
        "CHAT_RATE_PER_SECOND": "100",
        "CHAT_RATE_BURST": "200",
    }
    with Cluster.temporary_in(procs=2, env=env) as running:
        yield running


class Peer:
    """A ChatClient that records every chat frame it is shown."""

    def __init__(self, cluster, token: str):
        self.seen: list[int] = []
        self.arrived = asyncio.Event()
        self.expected = 0
        self.client = ChatClient(
            cluster.ws_url,
            token,
            on_frame=self.on_frame,
            delay_scale=0.3,  # the protocol's backoff, shortened: the test is about correctness
            send_rate=None,
        )

    def on_frame(self, frame: dict) -> None:
        if frame["type"] == "chat" and frame["room"] == ROOM:
            self.seen.append(frame["id"])
            if self.expected and len(set(self.seen)) >= self.expected:
                self.arrived.set()


async def test_kill_9_during_traffic_loses_and_duplicates_nothing(cluster):
    key = last_line(cluster.manage("create_service_key", "failover-test"))
    tokens = [
        last_line(cluster.manage("create_token", f"peer{i}", "--create-user")) for i in range(SENDERS + RECEIVERS)
    ]
    peers = [Peer(cluster, token) for token in tokens]
    for peer in peers:
        await peer.client.connect()
        await peer.client.join(ROOM)

    def servers_of_peers() -> dict[str, str]:
        status, listing = http("GET", cluster.lb_url + "/api/connections", key)
        assert status == 200
        return {c["id"]: c["server"] for c in listing["connections"]}

    placement = await asyncio.to_thread(servers_of_peers)
    by_server = {}
    for peer in peers:
        by_server.setdefault(placement[peer.client.welcome["connection_id"]], []).append(peer)
    assert len(by_server) == 2, f"the balancer should spread sockets over both processes: {by_server.keys()}"
    victim_name = max(by_server, key=lambda name: len(by_server[name]))
    victim = cluster.daphne(victim_name)

    senders = peers[:SENDERS]  # the others only receive
    total = SENDERS * PER_SENDER
    for peer in peers:
        peer.expected = total

    async def send_all(peer: Peer, index: int) -> list[str]:
        client_ids = []
        for n in range(PER_SENDER):
            client_ids.append(await peer.client.chat(ROOM, f"s{index} n{n}"))
            await asyncio.sleep(SEND_INTERVAL)  # pacing the load, not waiting for anything
        return client_ids

    sending = [asyncio.create_task(send_all(peer, i)) for i, peer in enumerate(senders)]
    await asyncio.sleep(SEND_INTERVAL * PER_SENDER / 3)  # a third of the way through the traffic
    victim.kill()
    killed_at = time.monotonic()

    # The registry drops the dead process's connections within three heartbeats.
    async def dead_connections_gone() -> float:
        while True:
            if victim_name not in set((await asyncio.to_thread(servers_of_peers)).values()):
                return time.monotonic() - killed_at
            await asyncio.sleep(0.2)  # polling an HTTP API: there is no event to wait on

    gone_after = await asyncio.wait_for(dead_connections_gone(), timeout=3 * HEARTBEAT + 5)

    client_ids = [cid for ids in await asyncio.gather(*sending) for cid in ids]
    for peer, start in zip(senders, range(0, total, PER_SENDER), strict=True):
        for client_id in client_ids[start : start + PER_SENDER]:
            await peer.client.wait_ack(client_id)
    for peer in peers:
        await asyncio.wait_for(peer.arrived.wait(), timeout=60)

    stored = int(
        last_line(
            cluster.manage(
                "shell",
                "-c",
                f"from rooms.models import Message; print(Message.objects.filter(room__slug={ROOM!r}).count())",
            )
        )
    )
    assert stored == total, "every message stored exactly once (client_id idempotency across the failover)"
    assert len(set(client_ids)) == total
    for peer in peers:
        assert len(peer.seen) == len(set(peer.seen)) == total, "each client shows every message once"
    moved = [peer for peer in by_server[victim_name] if peer.client.reconnects]
    assert moved, "the victim's clients reconnected through the balancer"
    assert gone_after <= 3 * HEARTBEAT + 1, f"registry cleaned after {gone_after:.1f}s"
    for peer in peers:
        await peer.client.close()
    cluster.heal()


async def test_drain_moves_a_processes_clients_to_the_others_in_batches(cluster):
    """A rolling restart: `manage.py drain` closes one process's sockets with 1012 in
    batches; the clients come back through the balancer to the other process."""
    key = last_line(cluster.manage("create_service_key", "drain-test"))
    tokens = [last_line(cluster.manage("create_token", f"drained{i}", "--create-user")) for i in range(8)]
    closes: list[tuple[float, int | None]] = []

    def on_state(state: str, detail: dict) -> None:
        if state == "disconnected" and detail.get("attempt") == 0:
            closes.append((time.monotonic(), detail.get("code")))

    clients = [ChatClient(cluster.ws_url, token, on_state=on_state, send_rate=None) for token in tokens]
    for client in clients:
        await client.connect()
        await client.join(ROOM)

    def placement() -> dict[str, str]:
        status, listing = http("GET", cluster.lb_url + "/api/connections", key)
        assert status == 200
        return {c["id"]: c["server"] for c in listing["connections"]}

    where = await asyncio.to_thread(placement)
    servers = [where[c.welcome["connection_id"]] for c in clients]
    drained = max(set(servers), key=servers.count)
    on_drained = servers.count(drained)
    assert on_drained >= 2

    output = await asyncio.to_thread(
        cluster.manage, "drain", "--server", drained, "--batch", "2", "--interval", "0.5", "--wait", "20"
    )
    leftovers = cluster.manage(
        "shell",
        "-c",
        "from presence.models import Connection as C; "
        f"print(list(C.objects.filter(server__name={drained!r}, closed_at__isnull=True).values_list('user__username', 'connected_at', 'channel_name')))",
    )
    assert f"sent 1012 to {on_drained} sockets" in output and "drained" in output, leftovers

    async def all_back() -> None:
        while any(c._ws is None for c in clients) or len(closes) < on_drained:
            await asyncio.sleep(0.1)  # polling the clients' state: they reconnect on their own

    await asyncio.wait_for(all_back(), timeout=20)
    assert {code for _, code in closes} == {1012}
    # Batches of 2, half a second apart: the clients did not all leave at once.
    assert max(t for t, _ in closes) - min(t for t, _ in closes) >= 0.5 * ((on_drained + 1) // 2 - 1) * 0.8
    where = await asyncio.to_thread(placement)
    assert drained not in {where[c.welcome["connection_id"]] for c in clients}
    # Still chatting: a message from one reaches another, exactly once.
    client_id = await clients[0].chat(ROOM, "after the drain")
    await clients[0].wait_ack(client_id)
    for client in clients:
        await client.close()
    cluster.heal()
