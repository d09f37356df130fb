"""The presence store's Redis pool waits for a free connection instead of failing."""

import asyncio

from presence import store


async def test_more_concurrent_calls_than_connections_all_succeed(settings):
    settings.PRESENCE_REDIS_MAX_CONNECTIONS = 2
    results = await asyncio.wait_for(asyncio.gather(*(store.denial(user_id=n, ip="192.0.2.1") for n in range(200))), 10)
    assert results == [None] * 200
    assert store._redis().connection_pool.max_connections == 2
