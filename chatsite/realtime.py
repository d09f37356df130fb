"""The one realtime seam: services send channel-layer events only through here,
and only after their transaction commits (like Zulip's send_event_on_commit)."""

from __future__ import annotations

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

from chatsite import metrics

logger = logging.getLogger(__name__)


def room_group(room_id: int) -> str:
    return f"room.{room_id}"


def user_group(user_id: int) -> str:
    return f"user.{user_id}"


def send_on_commit(group: str, event: dict) -> None:
    """Send ``event`` to ``group`` once the current transaction commits (at once outside one)."""
    transaction.on_commit(lambda: group_send(group, event))


def group_send(group: str, event: dict) -> None:
    """Send now, from sync code (a service running in the ORM thread, a view, a command)."""
    try:
        async_to_sync(get_channel_layer().group_send)(group, metrics.event_stamp(event))
    except Exception:
        # The record is already committed; clients recover a lost broadcast with `since`.
        logger.exception("group_send to %s failed", group)


async def apublish(events: list[tuple[str, dict]]) -> None:
    """From async code, AFTER the transaction that recorded these events committed (e.g. a
    Batcher's after-write hook): send each (group, event), in order. A failed send is
    logged and the rest still go; clients recover a lost broadcast with `since`."""
    layer = get_channel_layer()
    for group, event in events:
        try:
            await layer.group_send(group, metrics.event_stamp(event))
        except Exception:
            logger.exception("group_send to %s failed", group)


async def agroup_send(group: str, event: dict) -> None:
    """Send from async code (a consumer), for events that have no database record."""
    await get_channel_layer().group_send(group, event)


def channel_send_on_commit(channel: str, event: dict) -> None:
    """Send ``event`` to one consumer's channel (on any process) after commit."""
    transaction.on_commit(lambda: channel_send(channel, event))


def channel_send(channel: str, event: dict) -> None:
    try:
        async_to_sync(get_channel_layer().send)(channel, metrics.event_stamp(event))
    except Exception:
        logger.exception("send to channel %s failed", channel)
