import asyncio
import json

import pytest
import websockets

pytestmark = pytest.mark.live


async def test_live_daphne_serves_the_chat_socket_with_a_token(daphne_server):
    token = daphne_server.manage("create_token", "carol", "--create-user").strip().splitlines()[-1]
    async with websockets.connect(daphne_server.ws_url, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        welcome = json.loads(await ws.recv())
        assert welcome["type"] == "welcome" and welcome["user"] == "carol"


async def live_socket(server, name: str):
    token = server.manage("create_token", name, "--create-user").strip().splitlines()[-1]
    ws = await websockets.connect(server.ws_url, additional_headers={"Authorization": f"Bearer {token}"})
    assert json.loads(await ws.recv())["type"] == "welcome"
    return ws


async def test_live_frame_over_64_kib_closes_with_1009(daphne_server):
    ws = await live_socket(daphne_server, "big")
    await ws.send(json.dumps({"type": "chat", "room": "general", "body": "x" * (64 * 1024)}))
    with pytest.raises(websockets.ConnectionClosed):
        while True:
            await ws.recv()
    assert ws.close_code == 1009


async def test_live_flood_closes_with_4008_after_rate_limited(daphne_server):
    ws = await live_socket(daphne_server, "flooder")
    codes = []
    with pytest.raises(websockets.ConnectionClosed):
        for _ in range(200):
            await ws.send(json.dumps({"type": "ping"}))
        while True:
            frame = json.loads(await ws.recv())
            codes.append(frame.get("code"))
    assert "rate_limited" in codes
    assert ws.close_code == 4008


async def test_live_fan_out_to_a_stalled_reader_keeps_every_message_in_order(live_root):
    """Daphne's direct send and eager writes (chatsite/daphne_compat.py) under back-pressure:
    a member that does not read makes the kernel refuse bytes, so later frames queue in
    Twisted behind the unsent rest; nothing may be lost, doubled or reordered, and the
    other member keeps getting messages meanwhile."""
    from tests.live import new_live_server

    server = new_live_server(live_root / "stalled", CHAT_RATE_PER_SECOND="5000", CHAT_RATE_BURST="5000").start()
    try:
        fast = await live_socket(server, "fast")
        slow_token = server.manage("create_token", "slow", "--create-user").strip().splitlines()[-1]
        # With max_queue=1 the client stops reading its socket: the kernel buffers fill.
        slow = await websockets.connect(
            server.ws_url, max_queue=1, ping_interval=None, additional_headers={"Authorization": f"Bearer {slow_token}"}
        )
        assert json.loads(await slow.recv())["type"] == "welcome"
        for ws in (fast, slow):
            await ws.send(json.dumps({"type": "join", "room": "fan"}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "joined"
        count, body = 1200, "y" * 3990  # ~4.8 MB: more than the socket buffers hold

        async def bodies(ws) -> list[int]:
            seen = []
            while len(seen) < count:
                frame = json.loads(await ws.recv())
                if frame["type"] == "chat":
                    seen.append(int(frame["body"].split()[0]))
            return seen

        # The fast member sends and reads its echoes; the slow one reads nothing meanwhile.
        echoes = asyncio.ensure_future(asyncio.wait_for(bodies(fast), 60))
        for n in range(count):
            await fast.send(json.dumps({"type": "chat", "room": "fan", "body": f"{n} {body}"}))
        expected = list(range(count))
        assert await echoes == expected
        assert await asyncio.wait_for(bodies(slow), 60) == expected
    finally:
        server.stop()
