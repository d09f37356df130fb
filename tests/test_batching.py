"""The group-commit Batcher: one crossing for what queued meanwhile, results per caller."""

import asyncio
import threading

import pytest

from chatsite.batching import Batcher, per_loop

# The writes here touch no table, but every crossing runs Django's close_old_connections
# on the ORM thread, which checks a connection an earlier async test may have left there:
# without database access that check raises and the batch fails (seen in suite order).
pytestmark = pytest.mark.django_db


async def test_items_queued_during_a_write_share_the_next_crossing():
    started, release = threading.Event(), threading.Event()
    seen: list[list[int]] = []

    def write(items):
        seen.append(list(items))
        if len(seen) == 1:
            started.set()
            release.wait(5)
        return [i * 10 for i in items]

    batcher = Batcher(write, name="test")
    first = asyncio.ensure_future(batcher.submit(1))
    await asyncio.to_thread(started.wait, 5)
    rest = [asyncio.ensure_future(batcher.submit(i)) for i in (2, 3, 4)]
    await asyncio.sleep(0)
    release.set()
    assert await asyncio.wait_for(asyncio.gather(first, *rest), 5) == [10, 20, 30, 40]
    assert seen == [[1], [2, 3, 4]]
    assert (batcher.batches, batcher.items) == (2, 4)


async def test_an_exception_result_goes_to_its_caller_alone():
    batcher = Batcher(lambda items: [ValueError(f"bad {i}") if i == 2 else i for i in items], name="test")
    results = await asyncio.wait_for(asyncio.gather(*(batcher.submit(i) for i in (1, 2, 3)), return_exceptions=True), 5)
    assert results[0] == 1 and results[2] == 3
    assert isinstance(results[1], ValueError) and str(results[1]) == "bad 2"


async def test_a_failing_write_fails_every_caller_of_that_batch_and_the_next_batch_runs():
    calls = []

    def write(items):
        calls.append(items)
        if len(calls) == 1:
            raise RuntimeError("database gone")
        return items

    batcher = Batcher(write, name="test")
    with pytest.raises(RuntimeError, match="database gone"):
        await asyncio.wait_for(batcher.submit("a"), 5)
    assert await asyncio.wait_for(batcher.submit("b"), 5) == "b"


async def test_a_cancelled_caller_still_has_its_item_written():
    written, release = [], threading.Event()

    def write(items):
        release.wait(5)
        written.extend(items)
        return items

    batcher = Batcher(write, name="test")
    waiter = asyncio.ensure_future(batcher.submit("kept"))
    await asyncio.sleep(0.01)
    waiter.cancel()
    release.set()
    follower = await asyncio.wait_for(batcher.submit("next"), 5)
    assert follower == "next" and written == ["kept", "next"]


async def test_per_loop_gives_one_instance_per_event_loop():
    get = per_loop(object)
    assert get() is get()
    other = await asyncio.to_thread(lambda: asyncio.run(_instance(get)))
    assert other is not get()


async def _instance(get):
    return get()
