"""The benchmark runner: starts each server under test itself, drives the scenarios with
the load generator, and writes bench/results/<timestamp>/ (report.json, report.md, one
PNG per scenario).

    python -m bench.run --all                       # what `make bench` runs (~15 min on 2 cores)
    BENCH_QUICK=1 python -m bench.run --all         # small sizes: a smoke run
    python -m bench.run --target run --target baseline --scenario fanout
    python -m bench.run --scenario rooms --set rooms.clients=200 --set rooms.rate=1

Targets: run (what `make run` serves), cluster (`make cluster`, when scripts/cluster.py
has a Cluster), baseline (bench/baselines/tutorial), bare (bench/baselines/bare.py,
fanout only). For each scenario the targets run one after the other, baseline first, so
every ratio compares figures measured minutes apart on the same machine. The server
(and its Redis) is pinned to core 0 and the load generator to the other cores when
there are at least two; the report says which.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.metadata
import os
import platform
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

from bench import report, servers
from bench.loadgen import event_loop_name, pin_self, raise_nofile
from bench.scenarios import SCENARIOS, Context
from bench.sizes import sizes as default_sizes
from bench.sizes import tokens_needed

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
ALL_TARGETS = ("baseline", "run", "cluster", "bare")
ORDER = ("capacity", "fanout", "rooms", "churn", "history")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def machine() -> dict:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem = int(Path("/proc/meminfo").read_text().split()[1]) / 2**20
    except (OSError, ValueError, IndexError):
        mem = 0
    return {
        "nproc": os.cpu_count(),
        "usable_cores": sorted(os.sched_getaffinity(0)),
        "cpu_model": model,
        "memory_gib": round(mem, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def versions() -> dict:
    out = {}
    for name in ("Django", "channels", "channels-redis", "daphne", "websockets", "redis", "uvloop"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[name] = importlib.metadata.version(name)
    return out


def commit(root: Path = ROOT) -> str:
    marker = root / ".bench-commit"  # written next to a `git archive` of another commit
    if marker.exists():
        return marker.read_text().strip() + f" (served from {root})"
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True).stdout
        return head + (" + uncommitted changes" if dirty.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def apply_overrides(table: dict, overrides: list[str]) -> None:
    """``--set fanout.members=200``: change one size (ints and floats as given)."""
    for item in overrides:
        path, _, text = item.partition("=")
        keys = path.split(".")
        node = table
        for key in keys[:-1]:
            node = node[key]
        if keys[-1] not in node:
            raise SystemExit(f"unknown size {path!r}")
        old = node[keys[-1]]
        node[keys[-1]] = type(old)(float(text)) if isinstance(old, int | float) and not isinstance(old, bool) else (
            text.lower() in ("1", "true", "yes") if isinstance(old, bool) else text)  # fmt: skip


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)  # fmt: skip
    parser.add_argument("--target", action="append", choices=ALL_TARGETS, help="repeatable; default: baseline and run")
    parser.add_argument("--scenario", action="append", choices=ORDER, help="repeatable; default: all five")
    parser.add_argument("--all", action="store_true", help="every target and scenario, with a py-spy profile")
    parser.add_argument("--quick", action="store_true", default=os.environ.get("BENCH_QUICK") == "1",
                        help="small sizes (also BENCH_QUICK=1)")  # fmt: skip
    parser.add_argument("--set", action="append", default=[], metavar="SCENARIO.SIZE=VALUE", help="override a size")
    parser.add_argument("--procs", type=int, default=0, help="load generator processes (default: max(2, cores))")
    parser.add_argument(
        "--repeat",
        type=int,
        default=int(os.environ.get("BENCH_REPEAT", "1")),
        metavar="N",
        help="run each scenario N times per target and report the median run (default 1)",
    )
    parser.add_argument("--profile", action="store_true", help="py-spy profile of `run` during fanout")
    parser.add_argument("--cluster-procs", default="", metavar="N,N,...",
                        help="the scaling figure: the cluster target once per process count (targets cluster-N), "
                             "e.g. 1,2,4; implies --target cluster")  # fmt: skip
    parser.add_argument("--out", type=Path, help="result directory (default bench/results/<timestamp>)")
    parser.add_argument("--project", type=Path, default=ROOT,
                        help="serve the `run` target from this checkout (e.g. `git archive` of an older commit, "
                             "with accounts/management/commands/bench_users.py copied in) to compare commits")  # fmt: skip
    args = parser.parse_args(argv)
    if args.all:
        args.target = list(ALL_TARGETS)
        args.scenario = list(ORDER)
        args.profile = True
    args.target = args.target or ["baseline", "run"]
    try:
        args.cluster_procs = [int(n) for n in args.cluster_procs.split(",") if n.strip()]
    except ValueError:
        parser.error("--cluster-procs takes process counts separated by commas, e.g. 1,2,4")
    if args.cluster_procs and "cluster" not in args.target:
        args.target.append("cluster")
    args.scenario = [s for s in ORDER if s in (args.scenario or ORDER)]
    return args


def measure(ctx: Context, targets: dict[str, servers.Target], scenarios: list[str], *,
            after_scenario=None, repeat: int = 1) -> tuple[dict, dict]:  # fmt: skip
    """Run each scenario on each target (in the order given: baseline first), each on a
    freshly started server, ``repeat`` times in rounds (baseline, targets, baseline,
    targets...), and keep each target's median run (``median_run``). Returns
    ({scenario: {target: figures}}, plot samples); a failure is recorded as
    {"error": ...} and the run goes on."""
    results: dict = {}
    samples: dict = {}
    for scenario in scenarios:
        runs: dict[str, list[tuple[dict, dict]]] = {}
        for round_ in range(repeat):
            for name, target in targets.items():
                if scenario not in target.scenarios:
                    continue
                ctx.log(f"{scenario} on {name}" + (f" (run {round_ + 1} of {repeat})" if repeat > 1 else ""))
                runs.setdefault(name, []).append(_measure_once(ctx, target, scenario, name))
        for name, done in runs.items():
            figures, sample = median_run(scenario, done)
            results.setdefault(scenario, {})[name] = figures
            samples.setdefault(scenario, {})[name] = sample
        if after_scenario is not None:
            after_scenario(results, samples)
    return results, samples


def _measure_once(ctx: Context, target: servers.Target, scenario: str, name: str) -> tuple[dict, dict]:
    server = None
    try:
        server = target.start()
        figures, sample = SCENARIOS[scenario](ctx, server)
        if not server.alive():
            figures["server_died"] = True
    except Exception as exc:
        ctx.log(f"  {scenario} on {name} failed: {exc!r}")
        figures, sample = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}, {}
    finally:
        if server is not None:
            server.stop()
    return figures, sample


# The figure that ranks the runs of a scenario for the median (the first present).
MEDIAN_BY = {
    "capacity": ("server_kib_per_socket",),
    "fanout": ("ceiling.ceiling_deliveries_per_s", "main.latency_ms.p99"),
    "rooms": ("main.latency_ms.p99",),
    "churn": ("cycles_per_s",),
    "history": ("storm_s",),
}


def median_run(scenario: str, runs: list[tuple[dict, dict]]) -> tuple[dict, dict]:
    """The run whose ranking figure is the median (the lower middle of an even count; a
    failed run ranks last); it carries every run's value of that figure in ``runs``."""
    if len(runs) == 1:
        return runs[0]
    paths = [p for p in MEDIAN_BY.get(scenario, ()) if any(report.lookup(f, p) is not None for f, _ in runs)]
    if not paths:
        return runs[0]
    path = paths[0]
    values = [report.lookup(f, path) for f, _ in runs]
    order = sorted(range(len(runs)), key=lambda i: (values[i] is None, values[i] if values[i] is not None else 0))
    chosen = order[(len(runs) - 1) // 2]
    figures, sample = runs[chosen]
    figures = dict(figures, runs={"by": path, "values": values, "median_of": len(runs), "chosen": chosen + 1})
    return figures, sample


def _stop(signum, frame):
    raise KeyboardInterrupt  # SIGTERM stops the servers and workers in order, like Ctrl-C


def main(argv: list[str] | None = None) -> int:
    # Explicitly: a shell starting us in the background leaves SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _stop)
    args = parse(argv)
    started = time.monotonic()
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = args.out or RESULTS / stamp
    out.mkdir(parents=True, exist_ok=True)
    cluster_procs = int(os.environ.get("PROCS", "2"))  # as `make cluster`
    plan = servers.core_plan(server_cores=max(args.cluster_procs or [cluster_procs]) if "cluster" in args.target else 1)
    nofile = raise_nofile()  # servers and workers inherit it
    pin_self(plan.generator)  # this process only coordinates: keep it off the server's core
    gen_cores = len(plan.generator) if plan.generator else 1
    procs = args.procs or max(2, gen_cores)
    table = default_sizes(quick=args.quick)
    apply_overrides(table, args.set)
    log(f"results in {out}")
    log(f"pinning: {plan.note}; {procs} load generator processes, event loop {event_loop_name()}")

    notes: list[str] = []
    targets: dict[str, servers.Target] = {}
    need_db = "run" in args.target  # the cluster makes its users in its own PostgreSQL
    users = tokens_needed(table, args.scenario)
    if need_db:
        log(f"preparing the database: migrate, then bench_users {users}")
        template, token_file = servers.prepare_database(users=users, project=args.project.resolve())
        tokens = token_file.read_text().split()
    else:
        template, tokens = None, [f"ct_unused-{i}" for i in range(users)]  # the baselines ignore tokens
    for name in ("baseline", "bare", "run", "cluster"):  # baseline first: each ratio's reference
        if name not in args.target:
            continue
        if name == "baseline":
            targets[name] = servers.BaselineTarget(plan.server)
        elif name == "bare":
            targets[name] = servers.BareTarget(plan.server)
        elif name == "run":
            targets[name] = servers.RunTarget(plan.server, template=template, project=args.project.resolve())
        else:
            for n in args.cluster_procs or [cluster_procs]:
                label = f"cluster-{n}" if args.cluster_procs else "cluster"
                target, why = servers.cluster_target(plan.server, procs=n, users=users, name=label)
                if target is None:
                    notes.append(f"{label} {why}")
                    log(f"{label} {why}")
                    break
                targets[label] = target
    ctx = Context(plan=plan, procs=procs, tokens=tokens, sizes=table, out=out,
                  profile_targets=("run",) if args.profile else (), log=log, notes=notes)  # fmt: skip
    the_report = {
        "meta": {
            "started": stamp,
            "quick": args.quick,
            "repeat": max(1, args.repeat),
            "machine": machine(),
            "pinning": plan.note,
            "generator": f"{procs} processes (multiprocessing, spawn) on {gen_cores} core(s), event loop "
            f"{event_loop_name()}, websockets client without compression; RLIMIT_NOFILE {nofile}",
            "versions": versions(),
            "commit": commit(args.project.resolve()),
            "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
            "targets": {name: t.note for name, t in targets.items()},
            "notes": notes,
        },
        "sizes": table,
        "results": {},
    }

    def save(results: dict, samples: dict) -> None:
        the_report["results"] = results
        the_report["meta"]["took_s"] = round(time.monotonic() - started)
        report.write(out, the_report, samples)  # after each scenario: an interrupted run leaves a report

    measure(ctx, targets, args.scenario, after_scenario=save, repeat=max(1, args.repeat))
    log(f"done in {time.monotonic() - started:.0f}s: {out / 'report.md'}")
    print((out / "report.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
