"""Redis commands per socket cycle: connect, join, leave, disconnect, one socket at a time,
against the `run` target (its own daphne, SQLite copy and Redis), counted with
``INFO commandstats`` over every database of that Redis, and daphne's CPU time per cycle
(CPU time, not wall time, so other load on the machine weighs less).

    python -m bench.commands                       # this checkout
    python -m bench.commands --project /tmp/old    # another checkout (git archive of a commit)
    python -m bench.commands --tab                 # with a second tab of the same user, in the room

Cycles run one after the other so the counts are per cycle, not per overlap; the
heartbeat's own commands (a lease renewal every half heartbeat) fall in the window too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import redis

from bench import servers
from bench.loadgen import ws_open

LIMIT = 10.0


async def _frame(sock, kind: str) -> dict:
    queue: asyncio.Queue = asyncio.Queue()
    sock.on_text = lambda text: queue.put_nowait(json.loads(text))
    while True:
        frame = await asyncio.wait_for(queue.get(), LIMIT)
        if frame["type"] == kind:
            return frame


async def _cycles(url: str, token: str, count: int) -> None:
    for _ in range(count):
        sock, _ = await ws_open(url, token, limit=LIMIT)
        sock.send_text(json.dumps({"type": "join", "room": "commands"}))
        await _frame(sock, "joined")
        sock.send_text(json.dumps({"type": "leave", "room": "commands"}))
        await _frame(sock, "left")
        await sock.close(limit=LIMIT)


async def _measure(server: servers.Server, redis_url: str, token: str, count: int, tab: bool) -> dict:
    url = server.url
    client = redis.Redis.from_url(redis_url)
    other = None
    if tab:
        other, _ = await ws_open(url, token, limit=LIMIT)
        other.send_text(json.dumps({"type": "join", "room": "commands"}))
        await _frame(other, "joined")
    await _cycles(url, token, 5)  # warm: the process's lease, hub and first subscriptions
    client.config_resetstat()
    cpu = server.cpu_s()
    await _cycles(url, token, count)
    cpu = server.cpu_s() - cpu
    stats = client.info("commandstats")
    client.close()
    if other is not None:
        await other.close(limit=LIMIT)
    per = {name.removeprefix("cmdstat_"): round(v["calls"] / count, 2) for name, v in stats.items()}
    per.pop("config|resetstat", None)
    per.pop("config", None)
    return {
        "total": round(sum(per.values()), 2),
        "server_cpu_ms_per_cycle": round(cpu / count * 1000, 3),
        "per_cycle": dict(sorted(per.items(), key=lambda kv: -kv[1])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=200)
    parser.add_argument("--project", type=Path, default=servers.ROOT)
    parser.add_argument("--tab", action="store_true", help="a second socket of the same user stays in the room")
    args = parser.parse_args()
    directory = servers.WORK / "commands"
    template, tokens = servers.prepare_database(users=1, directory=directory, project=args.project)
    target = servers.RunTarget(None, template=template, directory=directory / "run", project=args.project)
    server = target.start()
    try:
        redis_url = f"redis://127.0.0.1:{_redis_port(server)}/0"
        token = tokens.read_text().split()[0]
        figures = asyncio.run(_measure(server, redis_url, token, args.cycles, args.tab))
    finally:
        server.stop()
    print(json.dumps({"cycles": args.cycles, "tab": args.tab, **figures}))


def _redis_port(server: servers.Server) -> int:
    for conn in server.aux[0].net_connections(kind="tcp"):
        if conn.status == "LISTEN":
            return conn.laddr.port
    raise RuntimeError("the target's Redis listens on no TCP port")


if __name__ == "__main__":
    main()
