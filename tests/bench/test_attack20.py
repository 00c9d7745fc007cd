"""Attacks on ``bench scheduler``'s paired bootstrap interval beside slack's p95 excess
(``report.regret``, ``report.paired_interval``, the CLI's line and JSON) and on its
``--policy LABEL=POLICY`` labels."""

from __future__ import annotations

import json
import math
import random
from typing import Any

import pytest

from fleetcall.bench import report
from fleetcall.bench.report import MIN_INTERVAL_VALUES, paired_interval, percentile, regret
from fleetcall.bench.scheduler import policy_labels, regret_line
from fleetcall.cli import main as cli
from fleetcall.errors import ConfigError


def _runs(mine: list[float | None], theirs: list[float | None]) -> list[dict[str, Any]]:
    def run(policy: str, latencies: list[float | None]) -> dict[str, Any]:
        done = [v for v in latencies if v is not None]
        return {"policy": policy, "rate": 1.0, "latency_s": {"p95": percentile(done, 95)},
                "query_latency_s": latencies}
    return [run("slack", mine), run("hexgen", theirs)]


def test_one_query_gives_no_zero_width_interval() -> None:
    # One query is every resample of itself: the interval was [x, x], as if the excess were
    # known exactly (`bench scheduler --queries 1` printed "+0.0% [+0.0%, +0.0%]").
    out = regret(_runs([12.0], [10.0]))[1.0]
    assert out["excess"] == pytest.approx(0.2) and "interval" not in out
    assert paired_interval([12.0], [10.0], 95.0) is None


def test_an_interval_needs_enough_completed_queries_on_each_side() -> None:
    rng = random.Random(3)
    theirs: list[float | None] = [rng.expovariate(0.1) for _ in range(60)]
    mine: list[float | None] = [v * rng.uniform(0.9, 1.1) for v in theirs if v is not None]
    assert "interval" in regret(_runs(mine, theirs))[1.0]
    # slack completed only MIN - 1 of the 60 (the rest failed): its p95 is of 19 values
    few = [v if i < MIN_INTERVAL_VALUES - 1 else None for i, v in enumerate(mine)]
    assert "interval" not in regret(_runs(few, theirs))[1.0]
    assert "interval" not in regret(_runs(theirs, few))[1.0]  # the other side alike
    enough = [v if i < MIN_INTERVAL_VALUES else None for i, v in enumerate(mine)]
    low, high = regret(_runs(enough, theirs))[1.0]["interval"]
    assert math.isfinite(low) and low <= high


@pytest.mark.parametrize("kwargs", [{"resamples": 0}, {"resamples": -5}, {"level": 0.0},
                                    {"level": 1.0}, {"level": 95.0}, {"level": math.nan},
                                    {"q": 150.0}, {"q": -1.0}, {"q": math.nan}])
def test_paired_interval_names_bad_arguments(kwargs: dict[str, float]) -> None:
    # resamples=0 returned (0.0, 0.0): an interval from no resample at all; a level of 95
    # (a percent, not a fraction) or q of 150 indexed the sorted excesses out of range.
    a = [float(i) for i in range(1, 101)]
    q = kwargs.pop("q", 95.0)
    with pytest.raises(ValueError, match="paired_interval wants"):
        paired_interval(a, a, q, **kwargs)  # type: ignore[arg-type]


def test_the_interval_reads_back_from_the_json_and_counts_a_query_failed_on_one_side() -> None:
    # (held before: a query one policy failed is left out of that side's p95 only, as in
    # summarize, and a report written as JSON gives the same interval read back)
    rng = random.Random(11)
    theirs: list[float | None] = [rng.lognormvariate(3.0, 0.8) for _ in range(300)]
    mine: list[float | None] = list(theirs)
    longest = max(range(300), key=lambda i: theirs[i] or 0.0)
    mine[longest] = None  # slack failed the longest query: its p95 is of the other 299
    runs = _runs(mine, theirs)
    out = regret(runs)[1.0]
    assert out["excess"] < 0.0
    text = json.dumps({"runs": runs, "regret_p95": {"1.0": out}}, allow_nan=False)
    assert regret(json.loads(text)["runs"])[1.0]["interval"] == pytest.approx(out["interval"])
    low, high = out["interval"]
    assert low <= 0.0 and low <= out["excess"] <= high <= 0.0  # never above: same or fewer


def test_cli_says_why_a_one_query_run_has_no_interval(tmp_path: Any,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "one.json"
    assert cli(["bench", "scheduler", "--queries", "1", "--policy", "hexgen", "--policy",
                "slack", "--json", str(out)]) == 0
    line = next(s for s in capsys.readouterr().out.splitlines() if s.startswith("slack's p95"))
    assert f"[no interval: under {MIN_INTERVAL_VALUES} queries completed]" in line
    assert "interval" not in json.loads(out.read_text())["regret_p95"]["1.0"]


def test_a_label_naming_another_policy_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    # `--policy hexgen=slack --policy slack` ran slack twice, one run named "hexgen", and
    # reported slack against itself: "+0.0% [+0.0%, +0.0%] (hexgen)".
    for items in (["hexgen=slack", "slack"], ["slack=hexgen", "hexgen"], ["rr-fcfs=slack"]):
        with pytest.raises(ConfigError, match="the label names another policy"):
            policy_labels(items)
    assert policy_labels(["slack=slack", "cheap=slack"]) == [("slack", "slack"),
                                                             ("cheap", "slack")]
    with pytest.raises(SystemExit) as info:
        cli(["bench", "scheduler", "--queries", "1", "--policy", "hexgen=slack", "--policy",
             "slack"])
    assert info.value.code == 2
    assert "--policy hexgen=slack: the label names another policy" in capsys.readouterr().err


def test_the_module_doctests_still_hold() -> None:
    import doctest
    assert doctest.testmod(report).failed == 0


def test_the_line_says_when_the_compared_runs_completed_different_queries() -> None:
    # A run that fails (times out) its slow queries has the lower p95 over the ones it
    # completed: slack failing the 60 longest of 600 queries read "-35.0% [-45.1%, -26.6%]
    # (hexgen)", a clear win, with nothing on the line to say it served 10% fewer queries.
    rng = random.Random(1)
    theirs: list[float | None] = [rng.lognormvariate(3.0, 0.8) for _ in range(600)]
    longest = sorted(range(600), key=lambda i: theirs[i] or 0.0)[-60:]
    mine = [None if i in longest else v for i, v in enumerate(theirs)]
    runs = [{**run, "completed": 600 - run["query_latency_s"].count(None), "queries": 600}
            for run in _runs(mine, theirs)]
    excess = regret(runs)
    assert excess[1.0]["excess"] < -0.3 and excess[1.0]["interval"][1] < -0.2
    line = regret_line(excess, runs)
    assert line.endswith("(hexgen; slack completed 540 of 600, hexgen 600)"), line
    same = [{**run, "completed": 600} for run in runs]  # (as if every query completed)
    assert regret_line(excess, same).endswith("(hexgen)")
