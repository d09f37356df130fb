"""The benchmark suite at a tiny size: every scenario against a real daphne (tests/live.py)
and against the tutorial-style baseline, through the same code `make bench` runs. The
figures mean nothing at this size; the test checks the report's shape and that nothing
failed."""

from __future__ import annotations

import json
import time

import pytest

from bench import report, servers
from bench.run import measure
from bench.scenarios import Context
from bench.sizes import QUICK, tokens_needed

pytestmark = pytest.mark.live

SCENARIOS = ["capacity", "fanout", "rooms", "churn", "history"]
TINY = {
    "capacity": {**QUICK["capacity"], "sockets": 20, "hold": 1.0, "ping_interval": 0.5},
    "fanout": {
        **QUICK["fanout"], "members": 20, "rate": 5.0, "duration": 1.0, "drain_min": 0.3, "drain_max": 3.0,
        "ceiling": {**QUICK["fanout"]["ceiling"], "start_rate": 5.0, "max_steps": 1, "bisect": 0, "step_s": 1.0,
                    "drain_min": 0.3, "drain_max": 3.0},
    },
    "rooms": {**QUICK["rooms"], "clients": 20, "room_size": 5, "rate": 2.0, "duration": 1.0, "drain_min": 0.3,
              "drain_max": 3.0},
    "churn": {**QUICK["churn"], "rate": 20.0, "duration": 1.0, "inflight": 10, "users": 20, "rooms": 4},
    "history": {**QUICK["history"], "clients": 20, "messages": 10, "timeout": 20.0},
}  # fmt: skip


@pytest.fixture
def bench_server(live_root, tmp_path):
    """A live daphne set up as bench/servers.py sets up the `run` target, with its users."""
    from tests.live import new_live_server

    server = new_live_server(live_root / "bench", **servers.BENCH_ENV).start()
    tokens_file = tmp_path / "tokens.txt"
    server.manage("bench_users", str(tokens_needed(TINY, SCENARIOS)), "--out", str(tokens_file))
    yield server, tokens_file.read_text().split()
    server.stop()


def test_every_scenario_runs_against_daphne_and_the_baseline_without_failures(bench_server, tmp_path):
    server, tokens = bench_server
    targets = {
        "baseline": servers.BaselineTarget(None, directory=tmp_path / "baseline"),
        "run": servers.ExternalTarget("run", server.ws_url, [server.process.pid]),
    }
    ctx = Context(plan=servers.CorePlan(None, None, "not pinned (test)"), procs=2, tokens=tokens, sizes=TINY,
                  out=tmp_path, log=lambda m: print(time.strftime("%H:%M:%S"), m), quiet_window=0.2)  # fmt: skip
    results, samples = measure(ctx, targets, SCENARIOS)

    for scenario in SCENARIOS:
        for target in targets:
            figures = results[scenario][target]
            assert "error" not in figures, (scenario, target, figures.get("traceback"))
            assert not figures.get("server_died"), (scenario, target)

    for target in targets:
        capacity = results["capacity"][target]
        assert capacity["opened"] == 20 and capacity["failures"] == 0, capacity
        assert capacity["connects_per_s"] > 0 and capacity["server_kib_per_socket"] is not None
        assert capacity["ping_rtt_ms"]["count"] > 0

        fanout = results["fanout"][target]
        assert fanout["joined"] == 20
        main = fanout["main"]
        assert main["failures"] == 0 and main["lost"] == 0 and main["duplicates"] == 0, main
        assert main["delivered"] == main["expected_deliveries"] == main["sent"] * 20
        assert {"p50", "p95", "p99", "max"} <= set(main["latency_ms"]) and main["deliveries_per_s"] > 0
        assert fanout["ceiling"]["steps"] and "ceiling_deliveries_per_s" in fanout["ceiling"]

        rooms = results["rooms"][target]["main"]
        assert rooms["failures"] == 0 and rooms["lost"] == 0 and rooms["sent"] > 0, (target, rooms)
        assert rooms["delivered"] == rooms["expected_deliveries"]

        churn = results["churn"][target]
        assert churn["failures"] == 0 and churn["completed"] > 0 and churn["cycles_per_s"] > 0, churn

        history = results["history"][target]
        assert history["recovered"] == 20 and history["failures"] == 0, history
        assert history["recoveries_per_s"] > 0 and history["recovered_ms"]["p99"] is not None

    the_report = {
        "meta": {"started": "test", "quick": True, "machine": {"cpu_model": "?", "nproc": 1, "memory_gib": 0,
                 "kernel": "?"}, "pinning": "none", "generator": "test", "versions": {}, "commit": "?",
                 "targets": {"baseline": "baseline", "run": "live daphne"}, "notes": []},
        "sizes": TINY,
        "results": results,
    }  # fmt: skip
    report.write(tmp_path / "report", the_report, samples)
    written = json.loads((tmp_path / "report" / "report.json").read_text())
    ratio = written["ratios"]["fanout"]["run"]["deliveries/s"]
    assert ratio["baseline"] == results["fanout"]["baseline"]["main"]["deliveries_per_s"]
    assert ratio["ratio"] is not None
    assert {c["goal"].split(" ")[0] for c in written["targets_check"]} >= {"fanout", "rooms", "churn", "capacity"}
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "| figure | baseline | run | run/baseline |" in markdown
