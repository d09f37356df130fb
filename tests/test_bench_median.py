"""bench.run.median_run: which of several runs of a scenario the report shows."""

from bench.run import median_run


def run(**figures):
    return figures, {"sample": figures}


def test_the_median_run_is_kept_whole_and_lists_every_runs_value():
    runs = [
        run(cycles_per_s=300.0, failures=4),
        run(cycles_per_s=390.0, failures=0),
        run(cycles_per_s=350.0, failures=1),
    ]
    figures, sample = median_run("churn", runs)
    assert figures["cycles_per_s"] == 350.0 and figures["failures"] == 1, "all figures from one run, not mixed"
    assert sample == {"sample": runs[2][0]}
    assert figures["runs"] == {"by": "cycles_per_s", "values": [300.0, 390.0, 350.0], "median_of": 3, "chosen": 3}


def test_nested_figures_rank_and_a_failed_run_ranks_last():
    runs = [
        run(ceiling={"ceiling_deliveries_per_s": 30000.0}),
        run(error="RuntimeError: boom"),
        run(ceiling={"ceiling_deliveries_per_s": 42000.0}),
    ]
    figures, _ = median_run("fanout", runs)
    assert figures["ceiling"]["ceiling_deliveries_per_s"] == 42000.0
    assert figures["runs"]["values"] == [30000.0, None, 42000.0]


def test_one_run_is_returned_as_it_is():
    only = run(storm_s=4.2)
    assert median_run("history", [only]) == only
