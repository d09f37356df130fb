"""The parent side of the load generator: a bounded set of worker processes (spawned,
pinned to the generator cores) and calls into them over pipes."""

from __future__ import annotations

import contextlib
import multiprocessing
import time
from multiprocessing.connection import wait

from bench.loadgen import worker_main

MAX_WORKERS = 16


class WorkerError(RuntimeError):
    pass


class Pool:
    """``Pool(specs, cores)``: one process per spec (a role and its sockets). ``call``
    runs a role method in the chosen workers at once and returns their results."""

    def __init__(self, specs: list[dict], *, cores: list[int] | None, start_timeout: float = 60.0):
        if not 1 <= len(specs) <= MAX_WORKERS:
            raise ValueError(f"between 1 and {MAX_WORKERS} worker processes, not {len(specs)}")
        context = multiprocessing.get_context("spawn")
        self.conns = []
        self.processes = []
        for spec in specs:
            parent, child = context.Pipe()
            process = context.Process(target=worker_main, args=(child, dict(spec, cores=cores)), daemon=True)
            process.start()
            child.close()
            self.conns.append(parent)
            self.processes.append(process)
        self.pids = [r["pid"] for r in self._gather(list(range(len(specs))), start_timeout)]
        self.cpu_s = 0.0  # generator CPU seconds of all calls so far
        self.wall_s = 0.0

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __len__(self) -> int:
        return len(self.conns)

    def call(self, method: str, kwargs: dict | list[dict] | None = None, *, only: list[int] | None = None,
             timeout: float = 300.0) -> list[dict]:  # fmt: skip
        """Run ``method`` in the workers ``only`` (default all), with the same kwargs or a
        list of kwargs (one per chosen worker); returns the results in the same order."""
        chosen = list(range(len(self.conns))) if only is None else list(only)
        per_worker = kwargs if isinstance(kwargs, list) else [kwargs or {}] * len(chosen)
        for i, kw in zip(chosen, per_worker, strict=True):
            self.conns[i].send(("call", method, kw))
        results = self._gather(chosen, timeout)
        for r in results:
            self.cpu_s += r.get("_cpu_s", 0.0)
        return results

    def _gather(self, chosen: list[int], timeout: float) -> list[dict]:
        results: dict[int, dict] = {}
        by_conn = {self.conns[i]: i for i in chosen}
        deadline = time.monotonic() + timeout
        while len(results) < len(chosen):
            left = deadline - time.monotonic()
            if left <= 0:
                raise WorkerError(f"workers {sorted(set(chosen) - set(results))} did not answer within {timeout}s")
            for conn in wait([c for c, i in by_conn.items() if i not in results], timeout=left):
                i = by_conn[conn]
                try:
                    status, payload = conn.recv()
                except EOFError:
                    raise WorkerError(f"worker {i} exited (code {self.processes[i].exitcode})") from None
                if status == "error":
                    raise WorkerError(f"worker {i} failed:\n{payload}")
                results[i] = payload
        return [results[i] for i in chosen]

    def close(self, timeout: float = 30.0) -> None:
        """Ask every worker to close its sockets and exit; kill the ones that do not."""
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.send(("exit",))
        deadline = time.monotonic() + timeout
        for process in self.processes:
            process.join(max(0.1, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join(5)
        for conn in self.conns:
            conn.close()
