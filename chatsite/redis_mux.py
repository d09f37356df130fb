"""Redis commands multiplexed on one connection, in order, for the hot paths.

redis-py's asyncio client checks a connection out of its pool for every command: a lock
or condition, a readiness probe of the socket, observability hooks and a retry wrapper,
then a write and a read on that connection alone. In a connect-churn profile that was a
quarter of daphne's CPU for eight commands per cycle. Redis answers the commands of one
connection in the order they were sent, so many callers can share one connection:

- ``call()`` packs the command, queues a future and appends the bytes to a buffer; the
  buffer is written once per event-loop turn, so the commands of concurrent handshakes
  leave in one write (and their replies come back in one read);
- one reader task reads replies in order and resolves the futures in order; a caller
  that gave up (cancelled) still has its reply read and dropped, so the order holds;
- an error reply fails its own caller only; a lost connection fails every caller waiting
  on it, and the next call connects again (redis-py's Connection does the handshake:
  AUTH, HELLO, SELECT from the URL).

``MuxRedis`` is a redis-py client whose single commands go through a multiplexer (its
replies are parsed by redis-py's callbacks, as usual); pipelines and transactions, which
need a connection of their own, still take one from the client's pool. Commands that
block the connection (BLPOP, SUBSCRIBE, MONITOR...) must not be sent through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections import deque

import redis.asyncio as aioredis
from redis.asyncio.client import EMPTY_RESPONSE, NEVER_DECODE
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

logger = logging.getLogger(__name__)

# A reply never arrives for these, or they change the connection for everyone after it.
_REFUSED = frozenset({"BLPOP", "BRPOP", "BLMOVE", "BZPOPMIN", "BZPOPMAX", "BLMPOP", "BZMPOP", "XREAD", "XREADGROUP",
                      "SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE", "MONITOR", "MULTI", "EXEC", "WATCH", "SELECT",
                      "CLIENT"})  # fmt: skip


class Multiplexer:
    """One Redis connection shared by every caller of one event loop."""

    def __init__(self, pool: aioredis.ConnectionPool) -> None:
        # The pool only describes the connection (URL, credentials, decoding); the
        # connection is made here and never returned to it.
        self._pool = pool
        self._connection = None
        self._connecting: asyncio.Future | None = None
        self._waiting: deque[asyncio.Future] = deque()
        self._out: list[bytes] = []
        self._reader: asyncio.Task | None = None
        self.calls = 0
        self.writes = 0

    async def call(self, *args):
        """Send one command and return its reply as redis-py's connection reads it."""
        name = str(args[0]).upper()
        if name in _REFUSED:
            raise ValueError(f"{name} cannot share a multiplexed connection")
        # From here to the await of the reply nothing yields, so the command is queued on
        # the connection that is current (a connection lost while _connect returned
        # would otherwise strand it).
        while (connection := self._connection) is None:
            await self._connect()
        future = asyncio.get_running_loop().create_future()
        if not self._out:
            asyncio.get_running_loop().call_soon(self._flush, connection)
        self._out.extend(connection.pack_command(*args))
        self._waiting.append(future)
        self.calls += 1
        return await future

    def _flush(self, connection) -> None:
        if connection is not self._connection:
            return  # lost meanwhile: its callers were failed, and a new flush is due for any others
        out, self._out = self._out, []
        if not out:
            return
        try:
            connection._writer.writelines(out)
            self.writes += 1
        except Exception as exc:  # the socket is gone; the reader sees it too
            self._lost(connection, exc)

    async def _connect(self):
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._open())
        connecting = self._connecting
        try:
            return await asyncio.shield(connecting)
        finally:
            if connecting.done() and self._connecting is connecting:
                self._connecting = None

    async def _open(self):
        connection = self._pool.make_connection()
        await connection.connect()
        self._connection = connection
        self._reader = asyncio.ensure_future(self._read(connection))
        return connection

    async def _read(self, connection) -> None:
        while True:
            try:
                reply = await connection.read_response(timeout=float("inf"), disconnect_on_error=False)
            except ResponseError as exc:
                reply = exc
            except asyncio.CancelledError:
                self._lost(connection, RedisConnectionError("the multiplexer was closed"))
                raise
            except Exception as exc:
                self._lost(connection, exc)
                return
            if not self._waiting:
                logger.warning("redis multiplexer: a reply nobody asked for: %r", reply)
                continue
            future = self._waiting.popleft()
            if future.done():
                continue  # its caller was cancelled: the reply is dropped, the order kept
            if isinstance(reply, ResponseError):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    def _lost(self, connection, exc: BaseException) -> None:
        if connection is not self._connection:
            return
        self._connection = None
        self._out = []
        waiting, self._waiting = self._waiting, deque()
        error = (
            exc if isinstance(exc, RedisConnectionError) else RedisConnectionError(f"redis connection lost: {exc!r}")
        )
        for future in waiting:
            if not future.done():
                future.set_exception(error)
        asyncio.ensure_future(connection.disconnect(nowait=True))
        if self._reader is not None and self._reader is not asyncio.current_task():
            self._reader.cancel()

    async def aclose(self) -> None:
        connection, reader = self._connection, self._reader
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
        if connection is not None:
            self._lost(connection, RedisConnectionError("the multiplexer was closed"))
            await connection.disconnect()


class MuxRedis(aioredis.Redis):
    """redis-py's client with single commands multiplexed (see the module docstring)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.mux = Multiplexer(self.connection_pool)

    async def execute_command(self, *args, **options):
        if NEVER_DECODE in options or str(args[0]).upper() in _REFUSED:
            return await super().execute_command(*args, **options)
        try:
            response = await self.mux.call(*args)
        except ResponseError:
            if EMPTY_RESPONSE in options:
                return options[EMPTY_RESPONSE]
            raise
        options.pop(EMPTY_RESPONSE, None)
        options.pop("keys", None)
        callback = self.response_callbacks.get(args[0])
        if callback is None:
            return response
        result = callback(response, **options)
        return await result if inspect.isawaitable(result) else result

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await self.mux.aclose()
        await super().aclose(close_connection_pool)
