"""Percentiles and small helpers shared by the scenarios and the report."""

from __future__ import annotations

import collections
import math
from collections.abc import Iterable, Sequence


def summary(values: Iterable[float], *, scale: float = 1.0, digits: int = 2) -> dict:
    """count, mean, p50, p95, p99, p99.9 and max (nearest rank), each times ``scale``."""
    data = sorted(values)
    n = len(data)
    if not n:
        return {"count": 0, "mean": None, "p50": None, "p95": None, "p99": None, "p999": None, "max": None}

    def rank(q: float) -> float:
        return round(data[min(n - 1, max(0, math.ceil(q * n) - 1))] * scale, digits)

    return {
        "count": n,
        "mean": round(sum(data) / n * scale, digits),
        "p50": rank(0.50),
        "p95": rank(0.95),
        "p99": rank(0.99),
        "p999": rank(0.999),
        "max": round(data[-1] * scale, digits),
    }


def merge_counters(dicts: Iterable[dict]) -> dict:
    total: collections.Counter = collections.Counter()
    for d in dicts:
        total.update(d or {})
    return dict(sorted(total.items()))


def failures(counters: dict) -> int:
    """Failed connects, joins, cycles and sockets dropped by the server, from worker counters."""
    prefixes = ("connect_failed_", "join_failed_", "cycle_failed_", "storm_failed_", "dropped_", "send_on_closed")
    return sum(v for k, v in counters.items() if k.startswith(prefixes))


def split(items: Sequence, parts: int) -> list[list]:
    """``items`` in ``parts`` contiguous chunks of nearly equal size (no empty chunk)."""
    parts = max(1, min(parts, len(items)))
    size, extra = divmod(len(items), parts)
    chunks, start = [], 0
    for i in range(parts):
        end = start + size + (1 if i < extra else 0)
        chunks.append(list(items[start:end]))
        start = end
    return chunks


def cdf_points(values: Sequence[float], *, points: int = 2000) -> tuple[list[float], list[float]]:
    """(sorted values, cumulative fraction), thinned to about ``points`` for plotting."""
    data = sorted(values)
    n = len(data)
    if not n:
        return [], []
    step = max(1, n // points)
    xs = data[::step] + [data[-1]]
    ys = [min(1.0, (i * step + 1) / n) for i in range(len(xs) - 1)] + [1.0]
    return xs, ys
