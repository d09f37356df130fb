import json

import pytest
import websockets

pytestmark = pytest.mark.live


async def test_live_daphne_serves_the_chat_socket_with_a_token(daphne_server):
    token = daphne_server.manage("create_token", "carol", "--create-user").strip().splitlines()[-1]
    async with websockets.connect(daphne_server.ws_url, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        welcome = json.loads(await ws.recv())
        assert welcome["type"] == "welcome" and welcome["user"] == "carol"
