"""``fleetcall bench executor``: the workload, the bound and the report, on a few questions."""

from __future__ import annotations

import json

import pytest

from fleetcall.bench import executor as bench
from fleetcall.bench.parallelqa import LatencyModel, ParallelQAModel, Question, load_parallelqa
from fleetcall.cli import main as cli
from fleetcall.errors import ConfigError
from fleetcall.vclock import run_virtual


def test_packaged_dataset_is_parallelqa():
    questions = load_parallelqa()
    assert len(questions) == 113
    assert {q.branch for q in questions} == {2, 3, 4, 5}


def test_bad_dataset_is_named(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('[{"question": "x"}]')
    with pytest.raises(ConfigError, match="entry 0"):
        load_parallelqa(path)


def test_compiled_meets_its_bound_and_beats_both_baselines():
    questions = [q for q in load_parallelqa() if q.branch in (2, 5)][:6]
    outcomes = run_virtual(bench.run_questions(questions, LatencyModel()))
    for o in outcomes:
        assert all(o.correct.values())
        assert 0.999 <= o.bound_ratio <= 1.05
        assert o.latency["react"] > o.latency["compiled"]
        assert o.latency["parallel_calls"] > o.latency["compiled"]


def test_bound_exposes_an_executor_that_runs_tasks_in_waves(monkeypatch):
    """If tasks did not start the moment they are ready (here: one search at a time), the
    latency/bound ratio must show it: the bound is not derived from what the executor did."""
    from fleetcall.tools.base import ToolOptions
    q = Question("w", "wide question", 5)
    model = ParallelQAModel([q], LatencyModel())
    tools = model.tools()
    tools[0].options = ToolOptions(max_concurrency=1)
    monkeypatch.setattr(ParallelQAModel, "tools", lambda self: tools)
    (outcome,) = run_virtual(bench.run_questions([q], LatencyModel()))
    assert outcome.bound_ratio > 1.3


def test_bound_counts_every_part_of_the_critical_path():
    q = Question("1", "q", 2)
    zero = LatencyModel(ttft_s=0.0, tpot_s=0.0, search_min_s=1.0, search_max_s=1.0, math_s=0.5)
    # searches in parallel (1 s), math on each (0.5 s), the comparison (0.5 s), instant joiner
    assert bench.critical_path_bound(ParallelQAModel([q], zero), q) == pytest.approx(2.0)
    slow_join = LatencyModel(ttft_s=1.0, tpot_s=0.0, search_min_s=1.0, search_max_s=1.0, math_s=0.5)
    # the planner's first chunk now comes at 1 s, and the joiner takes 1 s more
    assert bench.critical_path_bound(ParallelQAModel([q], slow_join), q) == pytest.approx(4.0)


def test_cli_writes_the_json_the_issue_asks_for(tmp_path, capsys):
    out = tmp_path / "executor.json"
    assert cli(["bench", "executor", "--limit", "8", "--json", str(out)]) == 0
    rep = json.loads(out.read_text())
    assert rep["queries"] == 8
    for key in ("speedup_vs_react", "speedup_vs_parallel_calls"):
        assert {"mean", "min"} <= rep[key].keys()
    assert {"mean", "max"} <= rep["bound_ratio"].keys()
    assert rep["by_branch"] and all("speedup_vs_react" in v for v in rep["by_branch"].values())
    assert "ParallelQA, 8 queries" in capsys.readouterr().out
