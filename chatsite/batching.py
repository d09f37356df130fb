"""Group commit: many callers' writes in one database crossing.

All ORM work of a daphne process runs on one thread (PITFALLS.md), so what a write
costs is mostly the hop to that thread, the transaction and the ORM's per-statement
overhead, not the row. A ``Batcher`` collects the items its callers submit from the
event loop and hands them to a plain sync function as one list, in one
database_sync_to_async crossing; each caller awaits the result for its own item.

There is no timer: while a batch is being written, new items queue for the next one.
An idle server writes an item at once (a batch of one, the same crossing as before);
a busy one writes many per crossing. A caller that is cancelled does not take its item
back: once submitted, it is written.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from channels.db import database_sync_to_async

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")
B = TypeVar("B")


class Batcher(Generic[T, R]):
    """``write(items)`` runs in the ORM thread and returns one result per item, in order;
    a result that is an Exception is raised to that item's caller alone. If ``write``
    itself raises, every caller of that batch gets the exception.

    ``after(results)``, if given, runs on the event loop once a batch is written and
    before its callers resume, in batch order (e.g. publishing what was committed, in
    id order); an exception there is logged, and the callers still get their results."""

    def __init__(
        self,
        write: Callable[[list[T]], list[R | BaseException]],
        *,
        name: str,
        max_batch: int = 200,
        after: Callable[[list[R | BaseException]], Awaitable[None]] | None = None,
    ):
        self.write = write
        self.after = after
        self.name = name
        self.max_batch = max_batch
        self.queue: list[tuple[T, asyncio.Future]] = []
        self.task: asyncio.Task | None = None
        self.batches = 0  # for tests and benchmarks
        self.items = 0

    async def submit(self, item: T) -> R:
        return await self.enqueue(item)

    def enqueue(self, item: T) -> asyncio.Future:
        """Queue ``item`` and return the future of its result without waiting for it (a
        caller that need not wait lets its next items join the same batch). Items are
        written, and ``after`` sees them, in the order they were queued."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.queue.append((item, future))
        if self.task is None:
            self.task = loop.create_task(self._run(), name=f"batch-{self.name}")
        return future

    async def _run(self) -> None:
        try:
            while self.queue:
                batch, self.queue = self.queue[: self.max_batch], self.queue[self.max_batch :]
                try:
                    results = await database_sync_to_async(self.write)([item for item, _ in batch])
                    if len(results) != len(batch):
                        raise RuntimeError(f"{self.name}: {len(results)} results for {len(batch)} items")
                except Exception as exc:
                    logger.exception("%s: a batch of %d failed", self.name, len(batch))
                    results = [exc] * len(batch)
                else:
                    if self.after is not None:
                        try:
                            await self.after(results)
                        except Exception:
                            logger.exception("%s: after-write hook failed", self.name)
                self.batches += 1
                self.items += len(batch)
                for (_, future), result in zip(batch, results, strict=True):
                    if future.done():  # its caller was cancelled; the write stands
                        continue
                    if isinstance(result, BaseException):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        finally:
            self.task = None


def per_loop(factory: Callable[[], B]) -> Callable[[], B]:
    """``factory()`` once per event loop (a batcher's task and futures belong to one loop)."""
    instances: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, B] = weakref.WeakKeyDictionary()

    def get() -> B:
        loop = asyncio.get_running_loop()
        instance = instances.get(loop)
        if instance is None:
            instance = instances[loop] = factory()
        return instance

    return get
