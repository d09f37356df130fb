"""report.json, report.md (each figure with its ratio to the baseline of the same run)
and one PNG per scenario."""

from __future__ import annotations

import json
from pathlib import Path

from bench import stats

BASELINE = "baseline"
OTHER_LOAD = 0.2  # cores used by other processes in a window above which the report warns

# (label, path in the scenario's figures, better: "high" | "low" | "")
HEADLINES: dict[str, list[tuple[str, str, str]]] = {
    "capacity": [
        ("idle sockets open", "opened", "high"),
        ("connects/s (ramp)", "connects_per_s", "high"),
        ("connect p99 (ms)", "connect_ms.p99", "low"),
        ("failures (connects, drops, lost pongs)", "failures", "low"),
        ("server RSS per socket (KiB)", "server_kib_per_socket", "low"),
        ("Redis RSS per socket (KiB)", "redis_kib_per_socket", "low"),
        ("server RSS with all open (MiB)", "server_rss_held_mib", "low"),
        ("ping round trip p99 (ms)", "ping_rtt_ms.p99", "low"),
        ("server CPU while holding (cores)", "hold.server_cpu_cores", "low"),
    ],
    "fanout": [
        ("members joined", "joined", "high"),
        ("setup: connect + join + settle (s)", "setup.setup_s", "low"),
        ("latency p50 (ms)", "main.latency_ms.p50", "low"),
        ("latency p95 (ms)", "main.latency_ms.p95", "low"),
        ("latency p99 (ms)", "main.latency_ms.p99", "low"),
        ("latency max (ms)", "main.latency_ms.max", "low"),
        ("deliveries/s", "main.deliveries_per_s", "high"),
        ("lost deliveries", "main.lost", "low"),
        ("duplicate deliveries", "main.duplicates", "low"),
        ("server CPU per delivery (µs)", "main.server_cpu_us_per_delivery", "low"),
        ("server CPU (cores)", "main.server_cpu_cores", "low"),
        ("ceiling: members in the room", "ceiling.members", ""),
        ("ceiling: deliveries/s", "ceiling.ceiling_deliveries_per_s", "high"),
        ("ceiling: sender rate R (msgs/s)", "ceiling.ceiling_rate", "high"),
        ("ceiling: server CPU per delivery (µs)", "ceiling.ceiling_server_cpu_us_per_delivery", "low"),
    ],
    "rooms": [
        ("clients joined", "joined", "high"),
        ("latency p50 (ms)", "main.latency_ms.p50", "low"),
        ("latency p95 (ms)", "main.latency_ms.p95", "low"),
        ("latency p99 (ms)", "main.latency_ms.p99", "low"),
        ("latency max (ms)", "main.latency_ms.max", "low"),
        ("messages sent", "main.sent", "high"),
        ("deliveries/s", "main.deliveries_per_s", "high"),
        ("lost deliveries", "main.lost", "low"),
        ("server CPU per delivery (µs)", "main.server_cpu_us_per_delivery", "low"),
        ("server CPU (cores)", "main.server_cpu_cores", "low"),
    ],
    "churn": [
        ("cycles/s achieved", "cycles_per_s", "high"),
        ("target cycles/s", "target_rate", ""),
        ("failures", "failures", "low"),
        ("cycle latency p50 (ms)", "cycle_ms.p50", "low"),
        ("cycle latency p99 (ms)", "cycle_ms.p99", "low"),
        ("connect p99 (ms)", "connect_ms.p99", "low"),
        ("join p99 (ms)", "join_ms.p99", "low"),
        ("server CPU per cycle (ms)", "server_cpu_ms_per_cycle", "low"),
        ("server CPU (cores)", "server_cpu_cores", "low"),
    ],
    "history": [
        ("clients recovered", "recovered", "high"),
        ("failures", "failures", "low"),
        ("storm: last recovery after (s)", "storm_s", "low"),
        ("recoveries/s", "recoveries_per_s", "high"),
        ("recovery p50 (ms from storm start)", "recovered_ms.p50", "low"),
        ("recovery p99 (ms from storm start)", "recovered_ms.p99", "low"),
        ("welcome p99 (ms from storm start)", "welcome_ms.p99", "low"),
        ("join → recovered p99 (ms)", "join_to_recovered_ms.p99", "low"),
        ("all recovered within 5 s", "all_within_5s", "high"),
    ],
}


def lookup(data: dict | None, path: str):
    for key in path.split("."):
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def ratio(value, base) -> float | None:
    if isinstance(value, bool) or isinstance(base, bool):
        return None
    if not isinstance(value, int | float) or not isinstance(base, int | float) or not base:
        return None
    return round(value / base, 3)


def with_ratios(results: dict) -> dict:
    """{scenario: {target: {label: {"value", "baseline", "ratio", "better"}}}} for every
    headline figure of every non-baseline target."""
    table: dict = {}
    for scenario, by_target in results.items():
        base = by_target.get(BASELINE)
        for target, figures in by_target.items():
            rows = {}
            for label, path, better in HEADLINES.get(scenario, []):
                value = lookup(figures, path)
                base_value = lookup(base, path)
                rows[label] = {"value": value, "baseline": base_value, "ratio": ratio(value, base_value),
                               "better": better}  # fmt: skip
            table.setdefault(scenario, {})[target] = rows
    return table


def targets_check(results: dict, sizes: dict) -> list[dict]:
    """The issue's targets, checked for each non-baseline target that ran the scenario."""
    checks = []
    for target in sorted({t for by in results.values() for t in by} - {BASELINE, "bare"}):

        def get(scenario, path, target=target):
            return lookup(results.get(scenario, {}).get(target), path)

        def base(scenario, path):
            return lookup(results.get(scenario, {}).get(BASELINE), path)

        f = sizes["fanout"]
        if get("fanout", "main") is not None:
            lost, p99 = get("fanout", "main.lost"), get("fanout", "main.latency_ms.p99")
            checks.append({"target": target, "goal": f"fanout M={f['members']} R={f['rate']:g}: zero loss, p99 ≤ 100 ms",
                           "measured": f"lost {lost}, p99 {p99} ms",
                           "met": lost == 0 and p99 is not None and p99 <= 100})  # fmt: skip
        if get("fanout", "ceiling") is not None and base("fanout", "ceiling") is not None:
            r = ratio(
                get("fanout", "ceiling.ceiling_deliveries_per_s"), base("fanout", "ceiling.ceiling_deliveries_per_s")
            )
            checks.append({"target": target, "goal": "fanout ceiling ≥ 5× baseline",
                           "measured": f"{get('fanout', 'ceiling.ceiling_deliveries_per_s')} vs "
                                       f"{base('fanout', 'ceiling.ceiling_deliveries_per_s')} deliveries/s (×{r})",
                           "met": r is not None and r >= 5})  # fmt: skip
        r_ = sizes["rooms"]
        if get("rooms", "main") is not None:
            p99 = get("rooms", "main.latency_ms.p99")
            checks.append({"target": target,
                           "goal": f"rooms C={r_['clients']} S={r_['room_size']} r={r_['rate']:g}: p99 ≤ 25 ms",
                           "measured": f"p99 {p99} ms, lost {get('rooms', 'main.lost')}",
                           "met": p99 is not None and p99 <= 25})  # fmt: skip
        if get("churn", "cycles_per_s") is not None and base("churn", "cycles_per_s") is not None:
            v, b = get("churn", "cycles_per_s"), base("churn", "cycles_per_s")
            checks.append({"target": target, "goal": "churn ≥ baseline cycles/s",
                           "measured": f"{v} vs {b} cycles/s (×{ratio(v, b)})", "met": v >= b})  # fmt: skip
        c = sizes["capacity"]
        if get("capacity", "opened") is not None:
            kib, opened = get("capacity", "server_kib_per_socket"), get("capacity", "opened")
            checks.append({"target": target, "goal": f"capacity {c['sockets']:,} idle sockets ≤ 40 KiB/socket",
                           "measured": f"{opened} open, {kib} KiB/socket, {get('capacity', 'failures')} failures",
                           "met": opened >= c["sockets"] and kib is not None and kib <= 40})  # fmt: skip
        h = sizes["history"]
        if get("history", "clients") is not None:
            checks.append({"target": target,
                           "goal": f"recovery storm: {h['clients']:,} clients rejoining with since, all recovered within 5 s",
                           "measured": f"{get('history', 'recovered')} recovered, last after {get('history', 'storm_s')} s",
                           "met": bool(get("history", "all_within_5s"))})  # fmt: skip
    return checks


def _fmt(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def markdown(report: dict) -> str:
    meta = report["meta"]
    lines = [
        f"# Benchmark report {meta['started']}",
        "",
        f"- Machine: {meta['machine']['cpu_model']}, {meta['machine']['nproc']} cores, "
        f"{meta['machine']['memory_gib']} GiB, Linux {meta['machine']['kernel']}",
        f"- Pinning: {meta['pinning']}",
        f"- Load generator: {meta['generator']}",
        f"- Versions: {', '.join(f'{k} {v}' for k, v in meta['versions'].items())}",
        f"- Commit: {meta['commit']}",
        f"- Load average at start: {' '.join(meta.get('loadavg_at_start') or ['?'])}",
        f"- Mode: {'QUICK (small sizes: a smoke run, not figures)' if meta['quick'] else 'full'}; "
        f"took {meta.get('took_s', '?')} s"
        + (
            f"; each scenario run {meta['repeat']} times per target, the median run shown"
            if meta.get("repeat", 1) > 1
            else ""
        ),
        "",
        "Targets:",
        "",
    ]
    for name, note in meta["targets"].items():
        lines.append(f"- **{name}**: {note}")
    lines.append("")
    targets = [t for t in meta["targets"] if t != BASELINE]
    table = with_ratios(report["results"])
    for scenario, by_target in report["results"].items():
        lines += [f"## {scenario}", "", _scenario_sizes(scenario, report["sizes"]), ""]
        shown = [t for t in targets if t in by_target]
        header = "| figure | baseline |" + "".join(f" {t} | {t}/baseline |" for t in shown)
        lines += [header, "|" + "---|" * (2 + 2 * len(shown))]
        for label, _, better in HEADLINES.get(scenario, []):
            arrow = {"high": " ↑", "low": " ↓"}.get(better, "")
            row = [f"{label}{arrow}", _fmt(lookup(table[scenario].get(BASELINE), f"{label}.value"))]
            for t in shown:
                cell = table[scenario][t][label]
                row += [_fmt(cell["value"]), f"×{cell['ratio']:g}" if cell["ratio"] is not None else "–"]
            lines.append("| " + " | ".join(row) + " |")
        medians = {t: f["runs"] for t, f in by_target.items() if isinstance(f, dict) and f.get("runs")}
        for t, runs in medians.items():
            lines.append(f"\n{t}: the median of {runs['median_of']} runs by `{runs['by']}` (run {runs['chosen']}); "
                         f"all runs: {', '.join(_fmt(v) for v in runs['values'])}")  # fmt: skip
        errors = {t: f["error"] for t, f in by_target.items() if isinstance(f, dict) and "error" in f}
        for t, err in errors.items():
            lines.append(f"\n**{t} failed**: `{err}`")
        bound = [t for t, f in by_target.items() if _generator_bound(f)]
        if bound:
            lines.append(f"\nThe load generator's cores were saturated during part of this scenario for: "
                         f"{', '.join(bound)} (those figures describe the client as much as the server).")  # fmt: skip
        busy = {t: _other_load(f) for t, f in by_target.items()}
        busy = {t: v for t, v in busy.items() if v > OTHER_LOAD}
        if busy:
            lines.append("\nOther processes on the machine were busy during this scenario (most, in cores: "
                         + ", ".join(f"{t} {v:.2f}" for t, v in busy.items())
                         + "): those figures are less reliable.")  # fmt: skip
        if scenario == "fanout":
            lines += _ceiling_lines(by_target)
            lines += _profile_lines(by_target)
        if (report.get("plots") or {}).get(scenario):
            lines += ["", f"![{scenario}]({report['plots'][scenario]})"]
        lines.append("")
    checks = report.get("targets_check") or []
    if checks:
        lines += ["## Targets of the issue", "", "| target | goal | measured | met |", "|---|---|---|---|"]
        for c in checks:
            lines.append(f"| {c['target']} | {c['goal']} | {c['measured']} | {'yes' if c['met'] else 'no'} |")
        lines.append("")
    for note in meta.get("notes", []):
        lines.append(f"- {note}")
    lines += ["", "↑ higher is better, ↓ lower is better; a ratio is target/baseline measured in this same run."]
    return "\n".join(lines) + "\n"


def _other_load(figures) -> float:
    """The most CPU (cores) that processes outside the benchmark used in any window."""
    if not isinstance(figures, dict):
        return 0.0
    own = figures.get("other_cpu_cores") or 0.0
    return max([own, *(_other_load(v) for v in figures.values() if isinstance(v, dict))])


def _generator_bound(figures) -> bool:
    if not isinstance(figures, dict):
        return False
    if figures.get("generator_bound"):
        return True
    return any(_generator_bound(v) for v in figures.values() if isinstance(v, dict))


def _scenario_sizes(scenario: str, sizes: dict) -> str:
    s = sizes.get(scenario, {})
    flat = {k: v for k, v in s.items() if not isinstance(v, dict)}
    return "Sizes: " + ", ".join(f"{k}={v}" for k, v in flat.items())


def _ceiling_lines(by_target: dict) -> list[str]:
    lines = []
    for target, figures in by_target.items():
        ceiling = lookup(figures, "ceiling")
        if not ceiling:
            continue
        steps = ", ".join(f"R={s['rate_per_sender']:g}: p99 {s['p99_ms']} ms, loss {s['loss_ratio']:g}"
                          f"{'' if s['passed'] else ' ✗'}" for s in ceiling["steps"])  # fmt: skip
        lines.append(f"\nCeiling search, {target} (room of {ceiling.get('members', '?')}): {steps}. "
                     f"Stopped: {ceiling['stopped_because']}.")  # fmt: skip
    return lines


def _profile_lines(by_target: dict) -> list[str]:
    lines = []
    for target, figures in by_target.items():
        profile = lookup(figures, "profile")
        if not profile:
            continue
        if "skipped" in profile:
            lines.append(f"\nProfile ({target}): {profile['skipped']}")
            continue
        lines += ["", f"Profile of {target} during fanout at R={profile['rate_per_sender']:g} "
                      f"({profile['samples']} py-spy samples over {profile['seconds']} s, "
                      f"{profile.get('busy_samples', '?')} busy; [flamegraph]({profile['svg']}), "
                      f"[collapsed stacks]({profile['collapsed']})). Top frames by own time, as shares of the "
                      "busy samples:", ""]  # fmt: skip
        for row in profile["top_own"][:12]:
            lines.append(f"- {row['share'] * 100:.1f}% `{row['frame']}`")
        lines += ["", "Including callees:", ""]
        for row in profile["top_inclusive"][:25]:
            lines.append(f"- {row['share'] * 100:.1f}% `{row['frame']}`")
    return lines


def write(out: Path, report: dict, samples: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    report["plots"] = plot(out, samples, report["results"])
    report["ratios"] = with_ratios(report["results"])
    report["targets_check"] = targets_check(report["results"], report["sizes"])
    (out / "report.json").write_text(json.dumps(report, indent=2, default=_jsonable) + "\n")
    (out / "report.md").write_text(markdown(report))


def _jsonable(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


# --- plots ---------------------------------------------------------------------------------


def plot(out: Path, samples: dict, results: dict) -> dict:
    """One PNG per scenario; {} if matplotlib is missing (install bench/requirements.txt)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return {}
    made = {}
    for scenario, by_target in samples.items():
        drawer = DRAWERS.get(scenario)
        if drawer is None or not by_target:
            continue
        fig = drawer(plt, by_target, results.get(scenario, {}))
        for ax in fig.axes:
            _plain_ticks(ax)
        name = f"{scenario}.png"
        fig.savefig(out / name, dpi=110, bbox_inches="tight")
        plt.close(fig)
        made[scenario] = name
    return made


def _plain_ticks(ax) -> None:
    """Log axes labelled 1, 10, 100 rather than 10^0, 10^1, 10^2."""
    from matplotlib.ticker import FuncFormatter

    for axis in (ax.xaxis, ax.yaxis):
        if axis.get_scale() == "log":
            axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            axis.set_minor_formatter(FuncFormatter(lambda v, _: ""))


def _cdf(ax, values, label) -> None:
    xs, ys = stats.cdf_points(values)
    if xs:
        ax.plot([max(x, 1e-3) for x in xs], ys, label=label)


def _cdf_axes(ax, xlabel: str, title: str) -> None:
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("fraction ≤ x")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)


def _draw_fanout(plt, by_target, results):
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    for target, s in by_target.items():
        main = results.get(target, {}).get("main", {})
        _cdf(a, s.get("main", {}).get("latency_ms", []),
             f"{target} (p99 {lookup(main, 'latency_ms.p99')} ms)")  # fmt: skip
        steps = s.get("ceiling") or []
        if steps:
            b.plot([x["dps"] for x in steps], [x["p99"] or 0 for x in steps], marker="o", label=target)
    _cdf_axes(a, "delivery latency (ms)", "fanout: latency CDF at the main rate")
    b.axhline(250, color="grey", linestyle="--", linewidth=1)
    b.set_xscale("log")
    b.set_yscale("log")
    b.set_xlabel("deliveries/s")
    b.set_ylabel("p99 latency (ms)")
    b.set_title("fanout ceiling search, smaller room (dashed: 250 ms)")
    b.grid(True, which="both", alpha=0.3)
    b.legend(fontsize=8)
    return fig


def _draw_rooms(plt, by_target, results):
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    for target, s in by_target.items():
        main = s.get("main", {})
        _cdf(a, main.get("latency_ms", []), target)
        pairs = sorted(zip(main.get("sent_at", []), main.get("latency_ms", []), strict=False))
        if pairs:
            buckets: dict[int, list[float]] = {}
            for t, lat in pairs:
                buckets.setdefault(int(t), []).append(lat)
            xs = sorted(buckets)
            b.plot(xs, [stats.summary(buckets[x])["p99"] for x in xs], label=f"{target} p99")
    _cdf_axes(a, "end-to-end latency (ms)", "rooms: latency CDF")
    b.set_yscale("log")
    b.set_xlabel("seconds into the run")
    b.set_ylabel("p99 latency per second (ms)")
    b.set_title("rooms: p99 over time")
    b.grid(True, which="both", alpha=0.3)
    b.legend(fontsize=8)
    return fig


def _draw_churn(plt, by_target, results):
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for target, s in by_target.items():
        _cdf(ax, s.get("cycle_ms", []), f"{target} ({lookup(results.get(target), 'cycles_per_s')} cycles/s)")
    _cdf_axes(ax, "connect + join + close (ms)", "churn: cycle latency CDF")
    return fig


def _draw_capacity(plt, by_target, results):
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    for target, s in by_target.items():
        timeline = s.get("timeline", [])
        a.plot(timeline, range(1, len(timeline) + 1), label=target)
        _cdf(b, s.get("rtt_ms", []), target)
    a.set_xlabel("seconds since the ramp started")
    a.set_ylabel("sockets open")
    a.set_title("capacity: connect ramp")
    a.grid(True, alpha=0.3)
    a.legend(fontsize=8)
    _cdf_axes(b, "ping → pong round trip (ms)", "capacity: ping RTT while holding")
    return fig


def _draw_history(plt, by_target, results):
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for target, s in by_target.items():
        _cdf(ax, s.get("recovered_ms", []), f"{target} (last {lookup(results.get(target), 'storm_s')} s)")
    ax.axvline(5000, color="grey", linestyle="--", linewidth=1)
    _cdf_axes(ax, "time from storm start to all messages recovered (ms)", "history: reconnect storm")
    return fig


DRAWERS = {
    "fanout": _draw_fanout,
    "rooms": _draw_rooms,
    "churn": _draw_churn,
    "capacity": _draw_capacity,
    "history": _draw_history,
}
