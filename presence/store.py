"""Who is in which room, across every daphne process, kept in Redis.

Each socket in a room is one member of a per-(room, user) set; a user is online in a
room while that set is non-empty. Entering and leaving are single Lua scripts, so the
"first connection in" and "last connection out" transitions are decided atomically
even when two processes race. These are async functions: they touch Redis only,
never the ORM, and run on the event loop without a thread hop.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis
from django.conf import settings
from redis.exceptions import NoScriptError

from chatsite.redis_mux import MuxRedis

# KEYS[1] = sockets of this user in this room, KEYS[2] = usernames online in the room,
# KEYS[3] = every socket in the room, KEYS[4] = the rooms of this socket.
# ARGV[1] = channel name, ARGV[2] = username, ARGV[3] = "room_id:slug".
# Returns {first_in, online...}.
_ENTER = """
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('SADD', KEYS[4], ARGV[3])
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
redis.call('SREM', KEYS[3], ARGV[1])
redis.call('SREM', KEYS[4], ARGV[3])
local removed = redis.call('SREM', KEYS[1], ARGV[1])
if removed == 1 and redis.call('SCARD', KEYS[1]) == 0 then
  redis.call('SREM', KEYS[2], ARGV[2])
  return 1
end
return 0
"""

# KEYS[1] = the credit counter, ARGV[1] = its time to live in ms.
_CREDIT = """
redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
"""

_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aioredis.Redis] = weakref.WeakKeyDictionary()


def _redis() -> aioredis.Redis:
    """One client per event loop (tests run several loops; daphne runs one). Its pool
    WAITS for a free connection (up to PRESENCE_REDIS_POOL_TIMEOUT s) when all
    PRESENCE_REDIS_MAX_CONNECTIONS are busy: redis-py's default pool raises "Too many
    connections" at once, which in a reconnect storm of 1,000 clients failed most
    handshakes with HTTP 500. Single commands (the scripts of every connect, join and
    close) share one connection through chatsite/redis_mux.py; pipelines use the pool."""
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        pool = aioredis.BlockingConnectionPool.from_url(
            settings.PRESENCE_REDIS_URL,
            decode_responses=True,
            max_connections=settings.PRESENCE_REDIS_MAX_CONNECTIONS,
            timeout=settings.PRESENCE_REDIS_POOL_TIMEOUT,
        )
        client = _clients[loop] = MuxRedis(connection_pool=pool)
    return client


@functools.cache
def _sha(script: str) -> str:
    return hashlib.sha1(script.encode()).hexdigest()  # Redis names scripts by their SHA-1


async def _run(script: str, numkeys: int, *keys_and_args):
    """EVALSHA, loading the script on a miss: Redis hashes the whole text of every EVAL."""
    try:
        return await _redis().evalsha(_sha(script), numkeys, *keys_and_args)
    except NoScriptError:
        return await _redis().eval(script, numkeys, *keys_and_args)


def _sockets_key(room_id: int, user_id: int) -> str:
    return f"presence:room:{room_id}:user:{user_id}"


def _online_key(room_id: int) -> str:
    return f"presence:room:{room_id}:online"


def _room_channels_key(room_id: int) -> str:
    return f"presence:room:{room_id}:channels"


def _conn_rooms_key(channel: str) -> str:
    return f"presence:conn:{channel}:rooms"


def _room_keys(room_id: int, user_id: int, channel: str) -> list[str]:
    return [
        _sockets_key(room_id, user_id),
        _online_key(room_id),
        _room_channels_key(room_id),
        _conn_rooms_key(channel),
    ]


async def room_enter(
    *, room_id: int, room_slug: str, user_id: int, username: str, channel: str
) -> tuple[bool, list[str]]:
    """Record ``channel`` in the room. Returns (whether this is the user's first socket
    there, the usernames online now, sorted). Idempotent per channel."""
    keys = _room_keys(room_id, user_id, channel)
    result = await _run(_ENTER, len(keys), *keys, channel, username, f"{room_id}:{room_slug}")
    return bool(int(result[0])), sorted(result[1:])


async def room_exit(*, room_id: int, room_slug: str, user_id: int, username: str, channel: str) -> bool:
    """Remove ``channel`` from the room. Returns whether it was the user's last socket there."""
    keys = _room_keys(room_id, user_id, channel)
    result = await _run(_EXIT, len(keys), *keys, channel, username, f"{room_id}:{room_slug}")
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


async def room_channels(*, room_id: int) -> list[str]:
    """Channel names of every socket in the room, on every process."""
    return list(await _redis().smembers(_room_channels_key(room_id)))


async def room_channel_count(*, room_id: int) -> int:
    return int(await _redis().scard(_room_channels_key(room_id)))


# --- Connections and process leases ---------------------------------------------------
# presence:servers                 set of process names that have held a lease
# presence:lease:<server>          exists while the process is alive (TTL 3 heartbeats)
# presence:server:<server>:conns   channel names of that process's sockets
# presence:conn:<channel>          hash: id, user_id, username, ip
# presence:conn:<channel>:rooms    set of "room_id:slug"


def _conn_key(channel: str) -> str:
    return f"presence:conn:{channel}"


def _server_conns_key(server: str) -> str:
    return f"presence:server:{server}:conns"


async def connection_register(
    *, channel: str, connection_id: str, user_id: int, username: str, ip: str, server: str
) -> None:
    """Write a socket's record without counting or checking the connect (a handshake does
    all three in connect_admit, which this calls so the record is written in one place)."""
    registration = Registration(
        channel=channel, connection_id=connection_id, user_id=user_id, username=username, ip=ip, server=server
    )
    await connect_admit(kind="user", key="", count=False, now_ms=0, window_ms=0, member="", ip=ip, user_agent="",
                        deny=False, registration=registration)  # fmt: skip


# A socket's end in one round trip: it leaves each of its rooms as _EXIT does, then its
# record is deleted. KEYS: [1] connection hash, [2] its rooms, [3] the server's connections,
# then per room: sockets of this user in the room, usernames online, every socket in the room.
# ARGV: [1] channel, [2] username. Returns 1 per room where this was the user's last socket.
_FORGET = """
local last = {}
for i = 4, #KEYS, 3 do
  redis.call('SREM', KEYS[i + 2], ARGV[1])
  local removed = redis.call('SREM', KEYS[i], ARGV[1])
  if removed == 1 and redis.call('SCARD', KEYS[i]) == 0 then
    redis.call('SREM', KEYS[i + 1], ARGV[2])
    table.insert(last, 1)
  else
    table.insert(last, 0)
  end
end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('SREM', KEYS[3], ARGV[1])
return last
"""


async def connection_forget(
    *, channel: str, server: str, user_id: int = 0, username: str = "", room_ids: Sequence[int] = ()
) -> list[int]:
    """Take the socket out of the rooms ``room_ids`` (of user ``user_id``) and delete its
    record, in one round trip. Idempotent. Returns the rooms where it was the user's last
    socket (a `presence` leave is due there)."""
    keys = [_conn_key(channel), _conn_rooms_key(channel), _server_conns_key(server)]
    for room_id in room_ids:
        keys += [_sockets_key(room_id, user_id), _online_key(room_id), _room_channels_key(room_id)]
    last = await _run(_FORGET, len(keys), *keys, channel, username)
    return [room_id for room_id, flag in zip(room_ids, last, strict=True) if int(flag)]


async def server_lease(*, server: str, ttl: float) -> None:
    """Hold (or renew) this process's lease; it lapses ``ttl`` seconds after the last renewal."""
    async with _redis().pipeline(transaction=True) as pipe:
        pipe.set(f"presence:lease:{server}", "1", px=int(ttl * 1000))
        pipe.sadd("presence:servers", server)
        await pipe.execute()


async def server_release(*, server: str) -> None:
    await _redis().delete(f"presence:lease:{server}")


async def servers_lapsed() -> list[str]:
    """Processes that held a lease which has lapsed: dead, or cut off from Redis."""
    client = _redis()
    servers = sorted(await client.smembers("presence:servers"))
    if not servers:
        return []
    async with client.pipeline(transaction=False) as pipe:
        for server in servers:
            pipe.exists(f"presence:lease:{server}")
        alive = await pipe.execute()
    return [server for server, live in zip(servers, alive, strict=True) if not live]


async def servers_alive() -> list[str]:
    lapsed = set(await servers_lapsed())
    return sorted(set(await _redis().smembers("presence:servers")) - lapsed)


async def sweep_claim(*, server: str, ttl: float) -> bool:
    """Only one survivor sweeps a dead process at a time."""
    return bool(await _redis().set(f"presence:sweep:{server}", "1", nx=True, px=int(ttl * 1000)))


async def server_connections(*, server: str) -> list[dict]:
    """The sockets a process had registered: {channel, id, user_id, username, ip, rooms: [(id, slug)]}."""
    client = _redis()
    channels = sorted(await client.smembers(_server_conns_key(server)))
    if not channels:
        return []
    async with client.pipeline(transaction=False) as pipe:
        for channel in channels:
            pipe.hgetall(_conn_key(channel))
            pipe.smembers(_conn_rooms_key(channel))
        replies = await pipe.execute()
    connections = []
    for index, channel in enumerate(channels):
        record, rooms = replies[2 * index], replies[2 * index + 1]
        if not record:
            continue
        parsed_rooms = []
        for entry in rooms:
            room_id, _, slug = entry.partition(":")
            parsed_rooms.append((int(room_id), slug))
        connections.append(
            {
                "channel": channel,
                "id": record.get("id", ""),
                "user_id": int(record.get("user_id", 0)),
                "username": record.get("username", ""),
                "ip": record.get("ip", ""),
                "rooms": sorted(parsed_rooms),
            }
        )
    return connections


async def server_forget(*, server: str) -> None:
    async with _redis().pipeline(transaction=True) as pipe:
        pipe.delete(_server_conns_key(server))
        pipe.srem("presence:servers", server)
        await pipe.execute()


# --- Reconnect abuse: sliding windows, credits, denials ---------------------------------
# presence:abuse:<kind>:<key>          zset of connect times (ms) in the window
# presence:abuse:<kind>:<key>:ips/uas  hashes of what those connects came with
# presence:credit:<kind>:<key>         connects that do not count (after server-side closes)
# presence:deny:<kind>:<key>           refused at the handshake while it exists (block, cool-down)

# One round trip per handshake check: count the connect (unless exempt), read the
# subject's denial, and (for an authenticated socket that is admitted) register it and
# read whether this process is draining. Counting comes first, so refused handshakes
# keep a cool-down going; registering comes last, so a refused socket leaves nothing.
# KEYS: [1] window zset, [2] credit, [3] ips hash, [4] uas hash, [5] deny key,
#       [6] connection hash, [7] the server's connections, [8] the server's draining flag.
# ARGV: [1] count? (1/0), [2] now_ms, [3] window_ms, [4] member, [5] ip, [6] ua,
#       [7] check the deny key? (1/0), [8] register? (1/0), [9] channel, [10] connection id,
#       [11] user id, [12] username.
# Returns {connects in window, first connect ms, counted (0: exempt or a credit was used),
#          refusal reason or '', registered (1/0), draining (1/0)}.
_ADMIT = """
local now = tonumber(ARGV[2])
local count, first, counted = 0, now, 0
if ARGV[1] == '1' then
  local window = tonumber(ARGV[3])
  local credit = tonumber(redis.call('GET', KEYS[2]) or '0')
  if credit > 0 then
    redis.call('DECR', KEYS[2])
  else
    counted = 1
    redis.call('ZADD', KEYS[1], now, ARGV[4])
    if ARGV[5] ~= '' then redis.call('HINCRBY', KEYS[3], ARGV[5], 1) end
    if ARGV[6] ~= '' then redis.call('HINCRBY', KEYS[4], ARGV[6], 1) end
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
  redis.call('PEXPIRE', KEYS[1], window)
  redis.call('PEXPIRE', KEYS[3], window)
  redis.call('PEXPIRE', KEYS[4], window)
  count = redis.call('ZCARD', KEYS[1])
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  first = oldest[2] or now
end
local reason = ''
if ARGV[7] == '1' then reason = redis.call('GET', KEYS[5]) or '' end
if reason ~= '' or ARGV[8] ~= '1' then
  return {count, first, counted, reason, 0, 0}
end
redis.call('HSET', KEYS[6], 'id', ARGV[10], 'user_id', ARGV[11], 'username', ARGV[12], 'ip', ARGV[5])
redis.call('SADD', KEYS[7], ARGV[9])
return {count, first, counted, '', 1, redis.call('EXISTS', KEYS[8])}
"""


@dataclass(frozen=True)
class Registration:
    """What a socket's Redis record holds (see ``server_connections``)."""

    channel: str
    connection_id: str
    user_id: int
    username: str
    ip: str
    server: str


@dataclass(frozen=True)
class Admission:
    connects: int  # in the window (0 when not counted)
    first_ms: int  # the window's first connect
    counted: bool  # False: not counted (exempt) or covered by a credit
    refusal: str | None  # the block or cool-down that refuses it
    registered: bool  # the socket's record was written (admitted, with a registration)
    draining: bool  # this process is draining (only read when registered)


async def connect_admit(
    *,
    kind: str,
    key: str,
    count: bool,
    now_ms: int,
    window_ms: int,
    member: str,
    ip: str,
    user_agent: str,
    deny: bool = True,
    registration: Registration | None = None,
) -> Admission:
    """One round trip: count one connect of ``kind``/``key`` in the sliding window (when
    ``count``; a credit covers it instead if there is one), read the subject's denial (when
    ``deny``), and if it is not refused and ``registration`` is given, write the socket's
    record and read this process's draining flag."""
    base = f"presence:abuse:{kind}:{key}"
    reg = registration
    keys = [
        base,
        f"presence:credit:{kind}:{key}",
        f"{base}:ips",
        f"{base}:uas",
        f"presence:deny:{kind}:{key}",
        _conn_key(reg.channel) if reg else "-",
        _server_conns_key(reg.server) if reg else "-",
        f"presence:draining:{reg.server}" if reg else "-",
    ]
    args = [
        int(count), now_ms, window_ms, member, ip, user_agent[:200], int(deny and bool(key)),
        int(reg is not None),
        *((reg.channel, reg.connection_id, reg.user_id, reg.username) if reg else ("", "", "", "")),
    ]  # fmt: skip
    connects, first, counted, reason, registered, draining = await _run(_ADMIT, len(keys), *keys, *args)
    return Admission(
        connects=int(connects),
        first_ms=int(float(first)),
        counted=bool(int(counted)),
        refusal=reason or None,
        registered=bool(int(registered)),
        draining=bool(int(draining)),
    )


async def connect_count(
    *, kind: str, key: str, now_ms: int, window_ms: int, member: str, ip: str, user_agent: str
) -> tuple[int, int, bool]:
    """Count one connect in the sliding window (unless a credit covers it).
    Returns (connects in the window, first connect time in ms, whether this one counted)."""
    admission = await connect_admit(
        kind=kind, key=key, count=True, now_ms=now_ms, window_ms=window_ms, member=member, ip=ip,
        user_agent=user_agent, deny=False,
    )  # fmt: skip
    return admission.connects, admission.first_ms, admission.counted


async def connect_window_sources(*, kind: str, key: str) -> tuple[list[str], list[str]]:
    """The IPs and user agents seen in the window, most frequent first."""
    client = _redis()
    base = f"presence:abuse:{kind}:{key}"
    ips, uas = await client.hgetall(f"{base}:ips"), await client.hgetall(f"{base}:uas")

    def ranked(counts: dict) -> list[str]:
        return [k for k, _ in sorted(counts.items(), key=lambda kv: -int(kv[1]))][:20]

    return ranked(ips), ranked(uas)


async def connect_credit(*, kind: str, key: str, ttl: float) -> None:
    """The next connect of this user or IP does not count (the server closed its socket)."""
    await _run(_CREDIT, 1, f"presence:credit:{kind}:{key}", int(ttl * 1000))


async def once_per(*, name: str, ttl: float) -> bool:
    """True for the first caller in ``ttl`` seconds (a throttle for database writes)."""
    return bool(await _redis().set(f"presence:once:{name}", "1", nx=True, px=max(1, int(ttl * 1000))))


async def denial(*, user_id: int | None, ip: str | None) -> str | None:
    """Why this user or IP is refused now (a block or a cool-down), or None."""
    keys = []
    if user_id is not None:
        keys.append(f"presence:deny:user:{user_id}")
    if ip:
        keys.append(f"presence:deny:ip:{ip}")
    if not keys:
        return None
    for reason in await _redis().mget(keys):
        if reason:
            return reason
    return None


async def deny(*, kind: str, key: str, reason: str, seconds: float) -> None:
    await _redis().set(f"presence:deny:{kind}:{key}", reason, px=max(1, int(seconds * 1000)))


async def undeny(*, kind: str, key: str) -> None:
    await _redis().delete(f"presence:deny:{kind}:{key}")


# --- Redis restarts and drains ------------------------------------------------------------


async def epoch(*, candidate: str) -> str:
    """The current Redis epoch: set to ``candidate`` if Redis has none (it was just started
    or restarted, so everything it held is gone), else the existing one."""
    client = _redis()
    await client.set("presence:epoch", candidate, nx=True)
    return await client.get("presence:epoch") or candidate


async def draining_set(*, server: str, seconds: float) -> None:
    await _redis().set(f"presence:draining:{server}", "1", px=int(seconds * 1000))


async def draining(*, server: str) -> bool:
    """Whether ``server`` was marked draining (the handshake reads it in connect_admit)."""
    return bool(await _redis().exists(f"presence:draining:{server}"))
