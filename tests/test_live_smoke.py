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
