"""Who is in which room, across every daphne process, kept in Redis.

Each socket in a room is one member of a per-(room, user) set; a user is online in a
room while that set is non-empty. Entering and leaving are single Lua scripts, so the
"first connection in" and "last connection out" transitions are decided atomically
even when two processes race. These are async functions: they touch Redis only,
never the ORM, and run on the event loop without a thread hop.
"""

from __future__ import annotations

import asyncio
import weakref

import redis.asyncio as aioredis
from django.conf import settings

# KEYS[1] = sockets of this user in this room, KEYS[2] = usernames online in the room
# ARGV[1] = channel name, ARGV[2] = username. Returns {first_in, online...}.
_ENTER = """
local added = redis.call('SADD', KEYS[1], ARGV[1])
local first = 0
if added == 1 and redis.call('SCARD', KEYS[1]) == 1 then
  redis.call('SADD', KEYS[2], ARGV[2])
  first = 1
end
local online = redis.call('SMEMBERS', KEYS[2])
table.insert(online, 1, first)
return online
"""

# Same keys and arguments. Returns 1 if this was the user's last socket in the room.
_EXIT = """
local removed = redis.call('SREM', KEYS[1], ARGV[1])
if removed == 1 and redis.call('SCARD', KEYS[1]) == 0 then
  redis.call('SREM', KEYS[2], ARGV[2])
  return 1
end
return 0
"""

_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aioredis.Redis] = weakref.WeakKeyDictionary()


def _redis() -> aioredis.Redis:
    """One client per event loop (tests run several loops; daphne runs one)."""
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        client = aioredis.Redis.from_url(settings.PRESENCE_REDIS_URL, decode_responses=True)
        _clients[loop] = client
    return client


def _sockets_key(room_id: int, user_id: int) -> str:
    return f"presence:room:{room_id}:user:{user_id}"


def _online_key(room_id: int) -> str:
    return f"presence:room:{room_id}:online"


async def room_enter(*, room_id: int, user_id: int, username: str, channel: str) -> tuple[bool, list[str]]:
    """Record ``channel`` in the room. Returns (whether this is the user's first socket
    there, the usernames online now, sorted). Idempotent per channel."""
    result = await _redis().eval(_ENTER, 2, _sockets_key(room_id, user_id), _online_key(room_id), channel, username)
    return bool(int(result[0])), sorted(result[1:])


async def room_exit(*, room_id: int, user_id: int, username: str, channel: str) -> bool:
    """Remove ``channel`` from the room. Returns whether it was the user's last socket there."""
    result = await _redis().eval(_EXIT, 2, _sockets_key(room_id, user_id), _online_key(room_id), channel, username)
    return bool(int(result))


async def rooms_online_counts(*, room_ids: list[int]) -> dict[int, int]:
    """Users online per room, in one round trip."""
    if not room_ids:
        return {}
    async with _redis().pipeline(transaction=False) as pipe:
        for room_id in room_ids:
            pipe.scard(_online_key(room_id))
        counts = await pipe.execute()
    return dict(zip(room_ids, (int(c) for c in counts), strict=True))
