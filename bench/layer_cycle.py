"""The channel layer's own CPU for one socket's life, in this process, against a private
Redis: a new channel, a receive waiting on it, a user group joined and left, and the
receive cancelled as Channels does when a consumer ends. channels-redis's PubSub layer
against chatsite.layers.ProcessLocalChannelLayer, alternately.

    python -m bench.layer_cycle [--cycles 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
from pathlib import Path

from channels_redis.pubsub import RedisPubSubChannelLayer

from chatsite.devservers import start_redis
from chatsite.layers import ProcessLocalChannelLayer


async def _cycles(layer, count: int) -> None:
    for i in range(count):
        channel = await layer.new_channel()
        receiving = asyncio.ensure_future(layer.receive(channel))
        await layer.group_add(f"user.{i}", channel)
        await layer.group_discard(f"user.{i}", channel)
        await asyncio.sleep(0)  # the receive is waiting, as a consumer's is
        receiving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await receiving


async def _measure(cls, url: str, count: int) -> float:
    layer = cls(hosts=[url], prefix="bench")
    await _cycles(layer, 50)  # warm: connections, reader, process channel
    cpu = time.process_time()
    await _cycles(layer, count)
    cpu = time.process_time() - cpu
    await layer.flush()
    return cpu / count * 1e6


async def _main(count: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as directory:
        server = start_redis(Path(directory) / "redis")
        try:
            for _ in range(rounds):
                for cls in (RedisPubSubChannelLayer, ProcessLocalChannelLayer):
                    print(f"{cls.__name__:28} {await _measure(cls, server.url, count):7.1f} µs CPU per socket")
        finally:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(_main(args.cycles, args.rounds))


if __name__ == "__main__":
    main()
