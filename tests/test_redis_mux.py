"""chatsite.redis_mux against the real Redis of the test run: many callers, one
connection, every reply to its own caller."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as aioredis
from django.conf import settings
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

from chatsite.redis_mux import MuxRedis

TIMEOUT = 5.0


@pytest.fixture
async def client():
    pool = aioredis.ConnectionPool.from_url(settings.PRESENCE_REDIS_URL, decode_responses=True)
    client = MuxRedis(connection_pool=pool)
    yield client
    await client.aclose()


@pytest.fixture
def key() -> str:
    return f"test:mux:{uuid.uuid4().hex}"


async def test_concurrent_callers_get_their_own_replies_over_one_connection(client, key):
    await client.set(f"{key}:warm", 1)  # connects
    writes = client.mux.writes
    replies = await asyncio.wait_for(asyncio.gather(*(client.incrby(f"{key}:{i}", i) for i in range(200))), TIMEOUT)
    assert replies == list(range(200))
    assert client.mux.writes - writes < 10, "commands of one loop turn leave in one write"
    assert await client.get(f"{key}:150") == "150"


async def test_replies_are_parsed_as_redis_py_parses_them(client, key):
    assert await client.sadd(f"{key}:set", "a", "b") == 2
    assert await client.smembers(f"{key}:set") == {"a", "b"}
    assert await client.set(f"{key}:once", "1", nx=True, px=10_000) is True
    assert await client.set(f"{key}:once", "1", nx=True, px=10_000) is None
    assert await client.exists(f"{key}:once") == 1
    assert await client.mget([f"{key}:once", f"{key}:missing"]) == ["1", None]


async def test_an_error_reply_fails_only_its_caller(client, key):
    await client.set(f"{key}:text", "not a number")
    results = await asyncio.gather(
        client.incr(f"{key}:n"), client.incr(f"{key}:text"), client.incr(f"{key}:n"), return_exceptions=True
    )
    assert results[0] == 1 and results[2] == 2
    assert isinstance(results[1], ResponseError) and "not an integer" in str(results[1])


async def test_a_missing_script_raises_noscripterror_for_the_load_on_a_miss(client, key):
    with pytest.raises(NoScriptError):
        await client.evalsha("0" * 40, 0)
    assert await client.eval("return ARGV[1]", 0, "back") == "back"


async def test_a_cancelled_caller_leaves_the_order_intact(client, key):
    await client.set(f"{key}:a", "A")
    await client.set(f"{key}:b", "B")
    first = asyncio.ensure_future(client.get(f"{key}:a"))
    await asyncio.sleep(0)  # queued and packed, not yet answered
    first.cancel()
    assert await asyncio.wait_for(client.get(f"{key}:b"), TIMEOUT) == "B"
    assert await asyncio.wait_for(client.get(f"{key}:a"), TIMEOUT) == "A"


async def test_a_lost_connection_fails_its_waiting_callers_and_the_next_call_reconnects(client, key):
    await client.set(f"{key}:x", "1")
    connection = client.mux._connection
    waiting = asyncio.ensure_future(client.get(f"{key}:x"))
    await asyncio.sleep(0)
    connection._writer.transport.abort()  # the socket dies under a waiting caller
    with pytest.raises(RedisConnectionError):
        await asyncio.wait_for(waiting, TIMEOUT)
    assert await asyncio.wait_for(client.get(f"{key}:x"), TIMEOUT) == "1"
    assert client.mux._connection is not connection


async def test_blocking_commands_and_pipelines_take_a_pooled_connection(client, key):
    with pytest.raises(ValueError, match="cannot share"):
        await client.mux.call("BLPOP", key, 1)
    await client.rpush(key, "item")
    assert list(await client.blpop([key], timeout=1)) == [key, "item"]
    async with client.pipeline(transaction=True) as pipe:
        pipe.set(f"{key}:p", "1").incr(f"{key}:p")
        assert await pipe.execute() == [True, 2]
