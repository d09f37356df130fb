"""The admin's live dashboard socket: staff only, a snapshot every two seconds."""

from __future__ import annotations

import asyncio
import json
import logging
import time

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.contrib.auth import get_user_model
from django.core.serializers.json import DjangoJSONEncoder

from chatsite.realtime import user_group
from presence.selectors_dashboard import dashboard_snapshot
from rooms.events import CloseCode

logger = logging.getLogger(__name__)

SNAPSHOT_FRAME = "snapshot"
ERROR_FRAME = "error"


# The last snapshot this process computed, shared by its dashboard sockets: several
# staff tabs cost one snapshot per interval, not one each, on the single ORM thread
# (PITFALLS.md). Only touched from that thread, so it needs no lock.
_shared: dict = {"at": float("-inf"), "snapshot": None}


def _staff_snapshot(*, user_id: int, max_age: float) -> dict | None:
    """A snapshot at most ``max_age`` seconds old, or None once the user is no longer
    active staff (checked every tick: ``scope["user"]`` is frozen at connect)."""
    if not get_user_model().objects.filter(pk=user_id, is_active=True, is_staff=True).exists():
        return None
    now = time.monotonic()
    if _shared["snapshot"] is None or now - _shared["at"] >= max_age:
        _shared.update(snapshot=dashboard_snapshot(), at=now)
    return _shared["snapshot"]


class DashboardConsumer(AsyncWebsocketConsumer):
    interval = 2.0  # seconds between snapshots

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.user_id: int | None = None
        self.pusher: asyncio.Task | None = None

    async def connect(self):
        user = self.scope.get("user")
        if user is None or not (user.is_authenticated and user.is_active and user.is_staff):
            await self.close()  # before accept: the client gets HTTP 403
            return
        self.user_id = user.pk
        # In the user's group, so signing out or a password change closes it too.
        await self.channel_layer.group_add(user_group(user.pk), self.channel_name)
        await self.accept()
        self.pusher = asyncio.create_task(self.push())

    async def push(self) -> None:
        while True:
            try:
                snapshot = await database_sync_to_async(_staff_snapshot)(
                    user_id=self.user_id, max_age=self.interval / 2
                )
            except Exception:
                logger.exception("dashboard snapshot failed")
                await self.send(text_data=json.dumps({"type": ERROR_FRAME, "message": "snapshot failed; retrying"}))
            else:
                if snapshot is None:
                    await self.close(code=CloseCode.KICKED)
                    return
                await self.send(text_data=json.dumps({"type": SNAPSHOT_FRAME, **snapshot}, cls=DjangoJSONEncoder))
            await asyncio.sleep(self.interval)

    async def disconnect(self, code):
        if self.pusher is not None:
            self.pusher.cancel()
            self.pusher = None
        if self.user_id is not None:
            await self.channel_layer.group_discard(user_group(self.user_id), self.channel_name)
            self.user_id = None

    async def connection_kick(self, event: dict) -> None:
        await self.close(code=CloseCode.KICKED)
