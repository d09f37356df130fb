"""A bare `websockets` broadcast server speaking the same subset of PROTOCOL.md as the
tutorial baseline: the ceiling of what one Python process can deliver, with nothing
between the socket and the broadcast (no Django, no channel layer, no database, no auth).

    python -m bench.baselines.bare --port 8765
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import re
import signal
import uuid
from collections import deque
from datetime import UTC, datetime

from websockets.asyncio.server import broadcast, serve
from websockets.exceptions import ConnectionClosed

ROOM = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
RECOVERY_LIMIT = 1000
rooms: dict[str, set] = {}
recent: dict[str, deque] = {}
ids = itertools.count(1)


async def handler(ws) -> None:
    joined: set[str] = set()
    await ws.send(json.dumps({"type": "welcome", "protocol": 1, "connection_id": uuid.uuid4().hex,
                              "user": "anonymous", "heartbeat": 20}))  # fmt: skip
    try:
        async for text in ws:
            data = json.loads(text)
            kind = data.get("type")
            if kind == "ping":
                await ws.send('{"type": "pong"}')
                continue
            room = data.get("room", "")
            if not ROOM.match(room):
                await ws.send(json.dumps({"type": "error", "code": "invalid", "message": "bad room", "ref": kind}))
            elif kind == "join":
                rooms.setdefault(room, set()).add(ws)
                joined.add(room)
                history = recent.get(room, ())
                since = data.get("since")
                last_id = history[-1][0] if history else None
                await ws.send(json.dumps({"type": "joined", "room": room, "online": [], "last_id": last_id,
                                          "more": False}))  # fmt: skip
                if since is not None:
                    for message_id, frame in history:
                        if message_id > since:
                            await ws.send(frame)
            elif kind == "leave":
                rooms.get(room, set()).discard(ws)
                joined.discard(room)
                await ws.send(json.dumps({"type": "left", "room": room}))
            elif kind == "chat":
                message_id = next(ids)
                frame = json.dumps({
                    "type": "chat", "id": message_id, "room": room, "sender": "anonymous",
                    "body": data.get("body", ""), "created_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
                    "client_id": data.get("client_id"),
                })  # fmt: skip
                recent.setdefault(room, deque(maxlen=RECOVERY_LIMIT)).append((message_id, frame))
                broadcast(rooms.get(room, ()), frame)  # encoded once, written to each socket
            else:
                await ws.send(json.dumps({"type": "error", "code": "unknown_type", "message": "?", "ref": kind}))
    except ConnectionClosed:
        pass
    finally:
        for room in joined:
            rooms.get(room, set()).discard(ws)


async def main(host: str, port: int) -> None:
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set_result, None)
    async with serve(handler, host, port, compression=None, max_size=128 * 1024, ping_interval=20, backlog=50):
        print(f"bare baseline on ws://{host}:{port}/", flush=True)
        await stop


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    asyncio.run(main(args.host, args.port))
