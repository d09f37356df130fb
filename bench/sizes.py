"""Scenario sizes: the full run that `make bench` makes (about 15 minutes on 2 cores), and
the quick one (``BENCH_QUICK=1``) for a smoke run. Every count and duration is bounded."""

from __future__ import annotations

import copy

FULL = {
    "capacity": {"sockets": 10_000, "warm": 5, "concurrency": 64, "hold": 20.0, "ping_interval": 10.0,
                 "max_failures": 200, "ramp_limit_s": 150.0},
    "fanout": {
        "members": 1000, "rate": 10.0, "duration": 10.0, "concurrency": 64, "settle_s": 120.0,
        "drain_min": 2.0, "drain_max": 20.0, "profile_s": 12,
        "ceiling": {"members": 100, "start_rate": 4.0, "factor": 2.0, "bisect": 2, "max_rate": 2000.0,
                    "max_steps": 9, "step_s": 5.0, "drain_min": 1.0, "drain_max": 10.0},
    },
    "rooms": {"clients": 500, "room_size": 5, "rate": 0.5, "duration": 20.0, "concurrency": 64, "settle_s": 60.0,
              "drain_min": 2.0, "drain_max": 15.0},
    "churn": {"rate": 400.0, "duration": 20.0, "inflight": 100, "timeout": 15.0, "users": 1000, "rooms": 50},
    "history": {"clients": 1000, "messages": 100, "timeout": 45.0},
}  # fmt: skip

QUICK = {
    "capacity": {"sockets": 200, "warm": 2, "concurrency": 32, "hold": 3.0, "ping_interval": 1.0, "max_failures": 20,
                 "ramp_limit_s": 60.0},
    "fanout": {
        "members": 50, "rate": 10.0, "duration": 3.0, "concurrency": 32, "settle_s": 20.0,
        "drain_min": 1.0, "drain_max": 5.0, "profile_s": 5,
        "ceiling": {"members": 20, "start_rate": 10.0, "factor": 3.0, "bisect": 1, "max_rate": 100.0,
                    "max_steps": 3, "step_s": 2.0, "drain_min": 0.5, "drain_max": 5.0},
    },
    "rooms": {"clients": 50, "room_size": 5, "rate": 1.0, "duration": 3.0, "concurrency": 32, "settle_s": 20.0,
              "drain_min": 1.0, "drain_max": 5.0},
    "churn": {"rate": 50.0, "duration": 3.0, "inflight": 20, "timeout": 10.0, "users": 100, "rooms": 10},
    "history": {"clients": 50, "messages": 20, "timeout": 30.0},
}  # fmt: skip


def sizes(*, quick: bool) -> dict:
    return copy.deepcopy(QUICK if quick else FULL)


def tokens_needed(table: dict, scenarios: list[str]) -> int:
    needs = {
        "capacity": table["capacity"]["sockets"],
        "fanout": table["fanout"]["members"],
        "rooms": table["rooms"]["clients"],
        "churn": table["churn"]["users"],
        "history": table["history"]["clients"] + 1,
    }
    return max(needs[s] for s in scenarios)
