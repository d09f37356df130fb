"""The five scenarios, driven from the parent process. Each takes the run's ``Context``
and a started ``Server`` and returns ``(figures, samples)``: figures go to report.json,
samples (raw latencies and timelines) only to the plots.

Every count is bounded (sizes in ``bench.sizes``) and every wait has a time limit.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from bench import stats
from bench.pool import Pool
from bench.servers import CorePlan, Server

START_DELAY = 0.5  # seconds between telling workers the start time and that time
LOSS_LIMIT = 0.001  # the fanout ceiling: loss above 0.1% ...
P99_LIMIT_MS = 250.0  # ... or p99 above 250 ms ends the search
GENERATOR_BOUND = 0.9  # generator cores busier than this: the figure is the client's, not the server's


@dataclass
class Context:
    plan: CorePlan
    procs: int
    tokens: list[str]
    sizes: dict
    out: Path
    profile_targets: tuple[str, ...] = ()
    log: object = print
    quiet_window: float = 0.5  # seconds of a server "settle" sample (two quiet ones in a row)
    notes: list[str] = field(default_factory=list)

    def tokens_for(self, n: int, server: Server) -> list[str]:
        tokens = server.tokens or self.tokens
        if n > len(tokens):
            raise ValueError(f"{n} clients need {n} tokens, only {len(tokens)} were made")
        return tokens[:n]

    @property
    def generator_cores(self) -> int:
        return len(self.plan.generator) if self.plan.generator else (psutil.cpu_count() or 1)


def _machine_busy_s() -> float:
    """CPU seconds all cores have spent busy since boot."""
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + t.irq + t.softirq + t.steal


class Meter:
    """Server, Redis and load-generator CPU over a window, its wall time, and the CPU that
    other processes on the machine used meanwhile (a test suite running beside the
    benchmark shows up here, not silently in the figures)."""

    def __init__(self, server: Server, pool: Pool, ctx: Context):
        self.server, self.ctx = server, ctx
        self.workers = [psutil.Process(pid) for pid in pool.pids]
        self.me = psutil.Process()
        self.start()

    def _gen_cpu(self) -> float:
        total = 0.0
        for p in [*self.workers, self.me]:
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
        return total

    def start(self) -> None:
        self.t0 = time.monotonic()
        self.cpu0 = self.server.cpu_s()
        self.aux0 = self.server.cpu_s("aux")
        self.gen0 = self._gen_cpu()
        self.busy0 = _machine_busy_s()

    def stop(self) -> dict:
        wall = max(1e-6, time.monotonic() - self.t0)
        cpu = self.server.cpu_s() - self.cpu0
        aux = self.server.cpu_s("aux") - self.aux0
        gen_s = self._gen_cpu() - self.gen0
        gen = gen_s / (wall * self.ctx.generator_cores)
        other = max(0.0, _machine_busy_s() - self.busy0 - cpu - aux - gen_s) / wall
        return {
            "wall_s": round(wall, 2),
            "server_cpu_s": round(cpu, 3),
            "server_cpu_cores": round(cpu / wall, 3),
            "redis_cpu_cores": round(aux / wall, 3),
            "generator_cpu_share": round(gen, 3),
            "generator_bound": gen > GENERATOR_BOUND,
            "other_cpu_cores": round(other, 3),
        }


def _phase_start() -> float:
    return time.time() + START_DELAY


def _drain(ctx: Context, server: Server, *, minimum: float, maximum: float) -> float:
    """Let deliveries in flight arrive: at least ``minimum`` s, then until the server is
    quiet (at most ``maximum`` s more). Returns the seconds waited."""
    time.sleep(minimum)
    return minimum + server.settle(timeout=maximum, window=ctx.quiet_window)


# --- fanout and rooms: members in rooms, senders at a rate ------------------------------------------


def _chat_pool(ctx: Context, server: Server, groups: list[list[tuple[int, str, str]]]) -> Pool:
    specs = [{"role": "chat", "url": server.url, "members": g} for g in groups]
    return Pool(specs, cores=ctx.plan.generator)


def _chat_setup(ctx: Context, pool: Pool, server: Server, *, concurrency: int, settle_s: float) -> dict:
    started = time.monotonic()
    per = max(1, concurrency // len(pool))
    results = pool.call("setup", {"concurrency": per, "limit": 30.0}, timeout=600)
    joined = [tuple(x) for r in results for x in r["joined"]]
    settled = server.settle(timeout=settle_s, window=ctx.quiet_window)  # joins broadcast presence: let it all arrive
    return {
        "joined": joined,
        "setup_s": round(time.monotonic() - started, 2),
        "settle_s": round(settled, 2),
        "connect_s": stats.summary([x for r in results for x in r["connect_s"]], scale=1000),
        "counters": stats.merge_counters(r["stats"] for r in results),
    }


def _chat_phase(ctx: Context, pool: Pool, server: Server, *, phase: int, rate: float, duration: float,
                senders: list[list[int]], spread: bool, room_sizes: dict[int, int], drain: tuple[float, float]
                ) -> tuple[dict, dict]:  # fmt: skip
    """One measured window: senders send, then the receipts are collected and compared
    with what should have arrived (every message to every joined member of its room)."""
    meter = Meter(server, pool, ctx)
    start_at = _phase_start()
    kwargs = [{"phase": phase, "rate": rate, "duration": duration, "start_at": start_at, "senders": s,
               "spread": spread} for s in senders]  # fmt: skip
    sent_results = pool.call("send", kwargs, timeout=duration + 120)
    window = meter.stop()  # the load while sending
    waited = _drain(ctx, server, minimum=drain[0], maximum=drain[1])
    server_cpu = server.cpu_s() - meter.cpu0  # all the work the phase caused, backlog included
    collected = pool.call("collect", {"phase": phase}, timeout=300)
    sent = {int(k): v for r in sent_results for k, v in r["sent"].items()}
    expected = sum(count * room_sizes.get(sender, 0) for sender, count in sent.items())
    unique = sum(r["unique"] for r in collected)
    latency = [x for r in collected for x in r["latency_ms"]]
    sent_at = [x for r in collected for x in r["sent_at"]]
    counters = stats.merge_counters([*(r["stats"] for r in sent_results), *(r["stats"] for r in collected)])
    lost = max(0, expected - unique)
    span = max((t + lat / 1000 for t, lat in zip(sent_at, latency, strict=True)), default=start_at) - start_at
    figures = {
        "rate_per_sender": rate,
        "senders": len(sent),
        "duration_s": duration,
        "drain_s": round(waited, 2),
        "sent": sum(sent.values()),
        "late_sends": sum(r["late_sends"] for r in sent_results),
        "expected_deliveries": expected,
        "delivered": unique,
        "lost": lost,
        "loss_ratio": round(lost / expected, 6) if expected else 0.0,
        "duplicates": sum(r["dups"] for r in collected),
        "late_from_earlier_phase": sum(r["late"] for r in collected),
        # Over the time they took: a server that falls behind keeps delivering after the
        # senders stop, and that time counts.
        "deliveries_per_s": round(unique / max(duration, span), 1),
        "latency_ms": stats.summary(latency),
        "server_cpu_us_per_delivery": round(server_cpu / unique * 1e6, 1) if unique else None,
        **window,
        "counters": counters,
        "failures": stats.failures(counters),
    }
    t0 = min(sent_at, default=0.0)
    return figures, {"latency_ms": latency, "sent_at": [x - t0 for x in sent_at]}


def _room_sizes(joined: list[tuple[int, str]]) -> dict[int, int]:
    """For each joined member: how many joined members its room has (itself included)."""
    per_room: dict[str, int] = {}
    for _, room in joined:
        per_room[room] = per_room.get(room, 0) + 1
    return {index: per_room[room] for index, room in joined}


def _senders_by_worker(groups: list[list[tuple[int, str, str]]], wanted: set[int]) -> list[list[int]]:
    return [[index for index, _, _ in g if index in wanted] for g in groups]


def fanout(ctx: Context, server: Server) -> tuple[dict, dict]:
    """One sender at R msgs/s into a room of M members (the sender is one of them, so its
    echo is one of the M deliveries).

    First, on the fresh server, the ceiling search: in a room of ``ceiling.members`` it
    raises R until loss exceeds 0.1% or p99 exceeds 250 ms. (Not in the room of M = 1,000:
    there one message's 1,000 deliveries alone take the baseline about 250 ms, so its p99
    fails at any rate and the search would measure the burst, not the throughput.) Then
    the main rate R in the room of M, then (for the targets asked) R again under py-spy."""
    p = ctx.sizes["fanout"]
    m = p["members"]
    tokens = ctx.tokens_for(m, server)
    result: dict = {"members": m}
    samples: dict = {}
    c = p.get("ceiling")
    if c:
        cm = min(c["members"], m)
        room = [(i, tokens[i], "fanout-ceiling") for i in range(cm)]
        groups = [room[:1], *stats.split(room[1:], ctx.procs)]
        with _chat_pool(ctx, server, groups) as pool:
            setup = _chat_setup(ctx, pool, server, concurrency=p["concurrency"], settle_s=p["settle_s"])
            sizes = _room_sizes(setup["joined"])
            if 0 not in sizes:
                raise RuntimeError(f"the fanout sender could not join: {setup['counters']}")
            ctx.log(f"    ceiling search in a room of {len(sizes)}")
            result["ceiling"], samples["ceiling"] = _ceiling(
                ctx, pool, server, senders=_senders_by_worker(groups, {0}), sizes=sizes
            )
            result["ceiling"]["members"] = len(sizes)
        server.settle(timeout=60, window=ctx.quiet_window)
    members = [(i, tokens[i], "fanout") for i in range(m)]
    # The sender has a process of its own, so receiving does not delay its sends.
    groups = [members[:1], *stats.split(members[1:], ctx.procs)]
    result["generator_processes"] = len(groups)
    with _chat_pool(ctx, server, groups) as pool:
        setup = _chat_setup(ctx, pool, server, concurrency=p["concurrency"], settle_s=p["settle_s"])
        result["setup"] = {k: v for k, v in setup.items() if k != "joined"}
        result["joined"] = len(setup["joined"])
        sizes = _room_sizes(setup["joined"])
        senders = _senders_by_worker(groups, {0})
        if 0 not in sizes:
            raise RuntimeError(f"the fanout sender could not join: {setup['counters']}")
        ctx.log(f"    {result['joined']} joined in {setup['setup_s']}s; R={p['rate']:g}/s for {p['duration']:g}s")
        figures, samples["main"] = _chat_phase(ctx, pool, server, phase=1, rate=p["rate"], duration=p["duration"],
                                               senders=senders, spread=False, room_sizes=sizes,
                                               drain=(p["drain_min"], p["drain_max"]))  # fmt: skip
        result["main"] = figures
        ctx.log(f"    R={p['rate']}: p99 {figures['latency_ms']['p99']} ms, lost {figures['lost']}, "
                f"{figures['deliveries_per_s']} deliveries/s, server {figures['server_cpu_cores']} cores")  # fmt: skip
        if server.target in ctx.profile_targets:
            server.settle(timeout=60, window=ctx.quiet_window)
            result["profile"] = _profiled_phase(ctx, pool, server, rate=p["rate"], senders=senders, sizes=sizes)
    return result, samples


def _ceiling(ctx: Context, pool: Pool, server: Server, *, senders, sizes) -> tuple[dict, list]:
    """Raise R (times ``factor``) until a step fails, then bisect between the last rate that
    passed and the first that failed. A step passes with loss ≤ 0.1%, p99 ≤ 250 ms and no
    failures; each starts on a quiet server."""
    c = ctx.sizes["fanout"]["ceiling"]
    steps, samples = [], []
    best = None
    stop_reason = f"reached the largest rate tried ({c['max_rate']}/s)"
    passed, failed = None, None

    def step(i: int, rate: float) -> dict:
        server.settle(timeout=60, window=ctx.quiet_window)
        figures, _ = _chat_phase(ctx, pool, server, phase=100 + i, rate=rate, duration=c["step_s"],
                                 senders=senders, spread=False, room_sizes=sizes,
                                 drain=(c["drain_min"], c["drain_max"]))  # fmt: skip
        ok = (figures["loss_ratio"] <= LOSS_LIMIT and (figures["latency_ms"]["p99"] or 0) <= P99_LIMIT_MS
              and figures["failures"] == 0)  # fmt: skip
        row = {k: figures[k] for k in ("rate_per_sender", "deliveries_per_s", "loss_ratio", "lost", "failures",
                                       "server_cpu_cores", "server_cpu_us_per_delivery", "generator_cpu_share",
                                       "generator_bound")}  # fmt: skip
        row.update(p99_ms=figures["latency_ms"]["p99"], p50_ms=figures["latency_ms"]["p50"], passed=ok)
        steps.append(row)
        samples.append({"rate": rate, "p99": row["p99_ms"], "p50": row["p50_ms"], "dps": row["deliveries_per_s"],
                        "ok": ok})  # fmt: skip
        ctx.log(f"    ceiling R={rate:g}: p99 {row['p99_ms']} ms, loss {row['loss_ratio']}, "
                f"{row['deliveries_per_s']}/s {'ok' if ok else 'FAIL'}")  # fmt: skip
        return row

    rate = c["start_rate"]
    while len(steps) < c["max_steps"] and rate <= c["max_rate"]:
        row = step(len(steps), rate)
        if not row["passed"]:
            failed = rate
            stop_reason = "loss > 0.1% or p99 > 250 ms or failures"
            break
        passed = rate
        if row["generator_bound"]:
            stop_reason = "the load generator's cores were saturated: the ceiling is at least this"
            break
        rate = round(rate * c["factor"], 1)
    for _ in range(c["bisect"]):
        if passed is None or failed is None or len(steps) >= c["max_steps"] + c["bisect"]:
            break
        rate = round(math.sqrt(passed * failed), 1)
        if rate in (passed, failed):
            break
        if step(len(steps), rate)["passed"]:
            passed = rate
        else:
            failed = rate
    ok_steps = [r for r in steps if r["passed"]]
    best = max(ok_steps, key=lambda r: r["deliveries_per_s"], default=None)
    return {
        "steps": steps,
        "ceiling_rate": best["rate_per_sender"] if best else None,
        "ceiling_deliveries_per_s": best["deliveries_per_s"] if best else 0.0,
        "ceiling_server_cpu_us_per_delivery": best["server_cpu_us_per_delivery"] if best else None,
        "first_failing_rate": failed,
        "stopped_because": stop_reason,
        "lower_bound_only": bool(best and best["generator_bound"]),
    }, samples


def _profiled_phase(ctx: Context, pool: Pool, server: Server, *, rate: float, senders, sizes) -> dict:
    """A fanout phase at the main rate with py-spy attached (its own figures are not the
    benchmark's: sampling costs the server a little). Writes profile-<target>.svg and
    .txt (collapsed stacks) and returns the top frames."""
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if spy is None:
        return {"skipped": "py-spy is not installed (pip install -r bench/requirements.txt)"}
    seconds = ctx.sizes["fanout"]["profile_s"]
    pid = str(server.main[0].pid)
    svg = ctx.out / f"profile-{server.target}.svg"
    raw = ctx.out / f"profile-{server.target}.txt"
    pin = (
        ["taskset", "-c", ",".join(map(str, ctx.plan.generator))]
        if ctx.plan.generator and shutil.which("taskset")
        else []
    )
    common = ["record", "--pid", pid, "--duration", str(seconds), "--rate", "200", "--nonblocking"]
    spies = [
        subprocess.Popen([*pin, spy, *common, "--format", "flamegraph", "-o", str(svg)], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE),
        subprocess.Popen([*pin, spy, *common, "--format", "raw", "-o", str(raw)], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE),
    ]  # fmt: skip
    time.sleep(1.0)  # py-spy attaches
    figures, _ = _chat_phase(ctx, pool, server, phase=50, rate=rate, duration=max(1.0, seconds - 2), senders=senders,
                             spread=False, room_sizes=sizes, drain=(1.0, 5.0))  # fmt: skip
    errors = []
    for spy_process in spies:
        try:
            _, err = spy_process.communicate(timeout=seconds + 30)
        except subprocess.TimeoutExpired:
            spy_process.kill()
            _, err = spy_process.communicate()
        if spy_process.returncode:
            errors.append(err.decode(errors="replace")[-500:])
    if not raw.exists():
        return {"skipped": "py-spy failed: " + " | ".join(errors)}
    top = profile_top(raw)
    return {
        "seconds": seconds,
        "rate_per_sender": rate,
        "svg": svg.name if svg.exists() else None,
        "collapsed": raw.name,
        "under_profiler": {k: figures[k] for k in ("deliveries_per_s", "server_cpu_cores", "loss_ratio")}
        | {"p99_ms": figures["latency_ms"]["p99"]},
        **top,
    }


IDLE_LEAVES = ("EpollSelector.select ", "select (selectors.py", "wait (threading.py", "get (queue.py",
               "_worker (concurrent/futures/thread.py")  # fmt: skip


def profile_top(path: Path, *, n: int = 15) -> dict:
    """Top frames of py-spy's collapsed stacks, by own time and by time including callees,
    as shares of the busy samples (a thread waiting in select() or on a queue is idle)."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = busy = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        if frames[-1].startswith(IDLE_LEAVES):
            continue
        busy += count
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count

    def top(table: dict[str, int]) -> list[dict]:
        ranked = sorted(table.items(), key=lambda kv: -kv[1])[:n]
        return [{"frame": frame, "share": round(count / busy, 4)} for frame, count in ranked]

    return {"samples": total, "busy_samples": busy, "top_own": top(own) if busy else [],
            "top_inclusive": top(inclusive) if busy else []}  # fmt: skip


def rooms(ctx: Context, server: Server) -> tuple[dict, dict]:
    """C clients in rooms of S, each sending r msgs/s at its own random phase."""
    p = ctx.sizes["rooms"]
    c, s = p["clients"], p["room_size"]
    tokens = ctx.tokens_for(c, server)
    members = [(i, tokens[i], f"room-{i // s}") for i in range(c)]
    groups = stats.split(members, ctx.procs)
    result: dict = {"clients": c, "room_size": s, "rooms": math.ceil(c / s), "generator_processes": len(groups)}
    with _chat_pool(ctx, server, groups) as pool:
        setup = _chat_setup(ctx, pool, server, concurrency=p["concurrency"], settle_s=p["settle_s"])
        result["setup"] = {k: v for k, v in setup.items() if k != "joined"}
        result["joined"] = len(setup["joined"])
        sizes = _room_sizes(setup["joined"])
        senders = _senders_by_worker(groups, set(sizes))
        figures, samples = _chat_phase(ctx, pool, server, phase=1, rate=p["rate"], duration=p["duration"],
                                       senders=senders, spread=True, room_sizes=sizes,
                                       drain=(p["drain_min"], p["drain_max"]))  # fmt: skip
        result["main"] = figures
        ctx.log(f"    p99 {figures['latency_ms']['p99']} ms, lost {figures['lost']}, "
                f"{figures['deliveries_per_s']} deliveries/s")  # fmt: skip
    return result, {"main": samples}


def churn(ctx: Context, server: Server) -> tuple[dict, dict]:
    """Connect, join, disconnect at a target rate (open loop, bounded in flight)."""
    p = ctx.sizes["churn"]
    tokens = ctx.tokens_for(p["users"], server)
    chunks = stats.split(tokens, ctx.procs)
    specs = [{"role": "churn", "url": server.url, "tokens": chunk, "rooms": p["rooms"]} for chunk in chunks]
    with Pool(specs, cores=ctx.plan.generator) as pool:
        meter = Meter(server, pool, ctx)
        start_at = _phase_start()
        n = len(pool)
        kwargs = [{"rate": p["rate"] / n, "duration": p["duration"], "start_at": start_at,
                   "inflight": max(1, p["inflight"] // n), "limit": p["timeout"], "offset": i * 7919}
                  for i in range(n)]  # fmt: skip
        results = pool.call("send", kwargs, timeout=p["duration"] + p["timeout"] + 60)
        window = meter.stop()
    counters = stats.merge_counters(r["stats"] for r in results)
    cycles = [x for r in results for x in r["cycle_s"]]
    completed_in_window = sum(1 for r in results for t in r["done_at"] if t <= p["duration"])
    figures = {
        "target_rate": p["rate"],
        "duration_s": p["duration"],
        "inflight_cap": p["inflight"],
        "completed": len(cycles),
        "cycles_per_s": round(completed_in_window / p["duration"], 1),
        "started_late": sum(r["delayed"] for r in results),
        "cycle_ms": stats.summary(cycles, scale=1000),
        "connect_ms": stats.summary([x for r in results for x in r["connect_s"]], scale=1000),
        "join_ms": stats.summary([x for r in results for x in r["join_s"]], scale=1000),
        "server_cpu_ms_per_cycle": round(window["server_cpu_s"] / len(cycles) * 1000, 3) if cycles else None,
        **window,
        "counters": counters,
        "failures": stats.failures(counters),
    }
    ctx.log(f"    {figures['cycles_per_s']} cycles/s (target {p['rate']}), p99 {figures['cycle_ms']['p99']} ms, "
            f"{figures['failures']} failures")  # fmt: skip
    return figures, {"cycle_ms": [x * 1000 for x in cycles]}


def capacity_limit(requested: int) -> tuple[int, str | None]:
    """How many idle sockets this machine allows: open files of the server (inherits our
    hard limit) and the ephemeral ports of one loopback address pair."""
    import resource

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        ports = high - low + 1
    except (OSError, ValueError):
        ports = 28_000
    limit = min(hard - 1000, ports - 2000)
    if requested <= limit:
        return requested, None
    return limit, f"limited to {limit} sockets by RLIMIT_NOFILE ({hard}) and ephemeral ports ({ports})"


def capacity(ctx: Context, server: Server) -> tuple[dict, dict]:
    """N idle authenticated sockets, opened at a bounded concurrency and held with pings."""
    p = ctx.sizes["capacity"]
    n, why = capacity_limit(p["sockets"])
    tokens = ctx.tokens_for(n, server)
    chunks = stats.split(list(enumerate(tokens)), ctx.procs)
    specs = [{"role": "capacity", "url": server.url, "members": chunk} for chunk in chunks]
    result: dict = {"requested": p["sockets"], "sockets": n, "limited_by": why, "hold_s": p["hold"],
                    "ping_interval_s": p["ping_interval"], "connect_concurrency": p["concurrency"]}  # fmt: skip
    with Pool(specs, cores=ctx.plan.generator) as pool:
        per = max(1, p["concurrency"] // len(pool))
        warm = pool.call("open", {"count": p["warm"], "concurrency": per, "limit": 30.0})
        server.settle(timeout=15, window=ctx.quiet_window)
        rss0, redis0 = server.rss(), server.rss("aux")
        meter = Meter(server, pool, ctx)
        give_up = max(1, p["max_failures"] // len(pool))
        opened = pool.call("open", {"count": None, "concurrency": per, "limit": 15.0, "give_up_after": give_up,
                                    "ramp_limit": p["ramp_limit_s"]}, timeout=p["ramp_limit_s"] + 120)  # fmt: skip
        ramp = meter.stop()
        server.settle(timeout=30, window=ctx.quiet_window)
        rss1 = server.rss()
        meter = Meter(server, pool, ctx)
        held = pool.call("hold", {"duration": p["hold"], "interval": p["ping_interval"]}, timeout=p["hold"] + 120)
        hold = meter.stop()
        rss2, redis2 = server.rss(), server.rss("aux")
    ramp_n = sum(r["opened"] for r in opened)
    total_open = ramp_n + sum(r["opened"] for r in warm)
    elapsed = max(r["elapsed_s"] for r in opened)
    counters = stats.merge_counters([*(r["stats"] for r in warm), *(r["stats"] for r in opened),
                                     *(r["stats"] for r in held)])  # fmt: skip
    lost_pongs = max(0, sum(r["pings"] - r["pongs"] for r in held))
    result.update({
        "opened": total_open,
        "connect_failures": sum(v for k, v in counters.items() if k.startswith("connect_failed_")),
        "not_attempted": counters.get("connect_not_attempted", 0),  # after max_failures failures
        "not_attempted_in_time": counters.get("connect_not_attempted_in_time", 0),  # after ramp_limit_s
        "connects_per_s": round(ramp_n / elapsed, 1) if elapsed else None,
        "connect_ms": stats.summary([x for r in opened for x in r["connect_s"]], scale=1000),
        "ramp": ramp,
        "alive_after_hold": sum(r["alive"] for r in held),
        "pings": sum(r["pings"] for r in held),
        "pongs_missing": lost_pongs,
        "ping_rtt_ms": stats.summary([x for r in held for x in r["rtt_ms"]]),
        "hold": hold,
        "server_rss_idle_mib": round(rss0 / 2**20, 1),
        "server_rss_open_mib": round(rss1 / 2**20, 1),
        "server_rss_held_mib": round(rss2 / 2**20, 1),
        "server_kib_per_socket": round((rss2 - rss0) / 1024 / ramp_n, 2) if ramp_n else None,
        "redis_kib_per_socket": round((redis2 - redis0) / 1024 / ramp_n, 2) if ramp_n and redis0 else None,
        "counters": counters,
        "failures": stats.failures(counters) + lost_pongs,
    })  # fmt: skip
    ctx.log(f"    {total_open}/{n} open at {result['connects_per_s']}/s, {result['server_kib_per_socket']} KiB/socket, "
            f"{result['failures']} failures")  # fmt: skip
    timeline = sorted(x for r in opened for x in r["done_at"])
    return result, {"timeline": timeline, "rtt_ms": [x for r in held for x in r["rtt_ms"]]}


def history(ctx: Context, server: Server) -> tuple[dict, dict]:
    """A reconnect storm: N clients connect at once, join a room with `since`, and each
    must recover exactly the K messages posted after that id."""
    p = ctx.sizes["history"]
    n, k = p["clients"], p["messages"]
    tokens = ctx.tokens_for(n + 1, server)
    chunks = stats.split(list(enumerate(tokens[1:], start=1)), ctx.procs)
    specs = [{"role": "history", "url": server.url, "members": chunk, "seeder": tokens[0]} for chunk in chunks]
    room = "history"
    with Pool(specs, cores=ctx.plan.generator) as pool:
        ids = pool.call("seed", {"room": room, "count": k, "limit": 60.0}, only=[0], timeout=120)[0]["ids"]
        since = ids[0] - 1
        server.settle(timeout=30, window=ctx.quiet_window)
        meter = Meter(server, pool, ctx)
        start_at = _phase_start()
        results = pool.call("storm", {"room": room, "since": since, "expect": ids, "start_at": start_at,
                                      "limit": p["timeout"]}, timeout=p["timeout"] + 120)  # fmt: skip
        window = meter.stop()
    clients = [c for r in results for c in r["clients"]]
    ok = [c for c in clients if c["ok"]]
    counters = stats.merge_counters(r["stats"] for r in results)
    storm_s = max((c["recovered_s"] for c in ok), default=None)
    figures = {
        "clients": n,
        "messages": k,
        "recovered": len(ok),
        "failures": n - len(ok),
        "failure_kinds": stats.merge_counters({c["failure"]: 1} for c in clients if "failure" in c),
        "storm_s": round(storm_s, 3) if storm_s is not None else None,
        "recoveries_per_s": round(len(ok) / storm_s, 1) if storm_s else 0.0,
        "all_within_5s": len(ok) == n and storm_s is not None and storm_s <= 5.0,
        "recovered_ms": stats.summary([c["recovered_s"] for c in ok], scale=1000),
        "welcome_ms": stats.summary([c["welcome_s"] for c in clients if "welcome_s" in c], scale=1000),
        "join_to_recovered_ms": stats.summary([c["join_to_recovered_s"] for c in ok], scale=1000),
        **window,
        "counters": counters,
    }
    ctx.log(f"    {len(ok)}/{n} recovered {k} messages; last after {figures['storm_s']} s, "
            f"p99 {figures['recovered_ms']['p99']} ms")  # fmt: skip
    return figures, {"recovered_ms": [c["recovered_s"] * 1000 for c in ok]}


SCENARIOS = {"capacity": capacity, "fanout": fanout, "rooms": rooms, "churn": churn, "history": history}
