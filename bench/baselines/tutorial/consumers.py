"""The tutorial's chat consumer, extended only as far as the load generator needs."""

import itertools
import json
import re
import uuid
from collections import deque
from datetime import UTC, datetime

from channels.generic.websocket import AsyncWebsocketConsumer

ROOM = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
RECOVERY_LIMIT = 1000
_ids = itertools.count(1)  # message ids: one process, so a counter is enough
_recent: dict[str, deque] = {}  # room -> the last RECOVERY_LIMIT chat frames (this process only)


class ChatConsumer(AsyncWebsocketConsumer):
    async def connect(self):
        self.rooms = set()
        await self.accept()
        await self.send_json({"type": "welcome", "protocol": 1, "connection_id": uuid.uuid4().hex,
                              "user": "anonymous", "heartbeat": 20})  # fmt: skip

    async def disconnect(self, close_code):
        for room in self.rooms:
            await self.channel_layer.group_discard(f"chat_{room}", self.channel_name)

    async def receive(self, text_data=None, bytes_data=None):
        data = json.loads(text_data)
        kind = data.get("type")
        if kind == "ping":
            await self.send_json({"type": "pong"})
            return
        room = data.get("room", "")
        if not ROOM.match(room):
            await self.send_json({"type": "error", "code": "invalid", "message": "bad room", "ref": kind})
            return
        if kind == "join":
            self.rooms.add(room)
            await self.channel_layer.group_add(f"chat_{room}", self.channel_name)
            recent = _recent.get(room, ())
            since = data.get("since")
            missed = [m for m in recent if m["id"] > since] if since is not None else []
            last_id = recent[-1]["id"] if recent else None
            await self.send_json({"type": "joined", "room": room, "online": [], "last_id": last_id, "more": False})
            for message in missed:
                await self.send_json(message)
        elif kind == "leave":
            self.rooms.discard(room)
            await self.channel_layer.group_discard(f"chat_{room}", self.channel_name)
            await self.send_json({"type": "left", "room": room})
        elif kind == "chat":
            message = {
                "type": "chat", "id": next(_ids), "room": room, "sender": "anonymous",
                "body": data.get("body", ""), "created_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
                "client_id": data.get("client_id"),
            }  # fmt: skip
            _recent.setdefault(room, deque(maxlen=RECOVERY_LIMIT)).append(message)
            await self.channel_layer.group_send(f"chat_{room}", {"type": "chat.message", "message": message})
        else:
            await self.send_json({"type": "error", "code": "unknown_type", "message": "unknown type", "ref": kind})

    async def chat_message(self, event):
        # As in the tutorial: every receiver encodes the event itself.
        await self.send_json(event["message"])

    async def send_json(self, content):
        await self.send(text_data=json.dumps(content))
