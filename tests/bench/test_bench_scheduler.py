"""``fleetcall bench scheduler`` and ``bench executor --gpus`` end to end on a few queries."""

from __future__ import annotations

import json

import pytest

from fleetcall.bench.scheduler import Setup, parse_options, run_policy
from fleetcall.bench.workloads import load_workload
from fleetcall.cli import main as cli
from fleetcall.errors import ConfigError

GPUS = ("A100-80G", "A100-80G", "A6000", "L40S")


def _setup(n: int = 12) -> Setup:
    return Setup(tuple(load_workload("trace1"))[:n], GPUS, "llama-3.1-70b")


def test_every_query_completes_under_every_policy():
    setup = _setup()
    for policy in ("rr-fcfs", "least-busy", "hexgen", "slack"):
        run = run_policy(setup, policy, rate=0.02)
        assert run["queries"] == run["completed"] == 12, policy
        assert run["latency_s"]["p50"] > 0 and set(run["utilisation"]) == {
            "A100-80G-0", "A100-80G-1", "A6000-2", "L40S-3"}


def test_runs_are_deterministic_given_the_seed():
    a, b = (run_policy(_setup(6), "slack", rate=0.05) for _ in range(2))
    assert a["latency_s"] == b["latency_s"]


def test_round_robin_sends_work_to_the_slow_gpu_and_pays_for_it():
    """rr-fcfs gives the A6000 (5x slower prefill in the measured profiles) a quarter of the
    calls; slack places by predicted finish, so its tail is far shorter."""
    setup = _setup(24)
    rr, slack = (run_policy(setup, p, rate=0.04) for p in ("rr-fcfs", "slack"))
    assert slack["latency_s"]["p95"] < rr["latency_s"]["p95"]
    assert slack["slo_attainment"] >= rr["slo_attainment"]


def test_policy_options_parse():
    assert parse_options(["hexgen.alpha=0.3", "slack.prefill_slots=null"]) == {
        "hexgen": {"alpha": 0.3}, "slack": {"prefill_slots": None}}
    with pytest.raises(ConfigError, match="POLICY.KNOB=VALUE"):
        parse_options(["alpha=0.3"])


def test_cli_json_has_runs_and_sweep(tmp_path):
    out = tmp_path / "sched.json"
    code = cli(["bench", "scheduler", "--queries", "6", "--rates", "0.02,0.04", "--policy", "rr-fcfs",
                "--policy", "slack", "--json", str(out)])
    assert code == 0
    rep = json.loads(out.read_text())
    assert len(rep["runs"]) == 4 and set(rep["max_rate_at_95"]) == {"rr-fcfs", "slack"}
    run = rep["runs"][0]
    assert {"policy", "rate", "queries", "completed", "latency_s", "slo_attainment", "throughput_qps"} <= run.keys()
    assert {"mean", "p50", "p95", "p99"} <= run["latency_s"].keys()
    assert run["stretch"]["mean"] >= 0.9 and run["stretch"]["p95"] >= run["stretch"]["p50"]
    assert set(rep["regret_p95"]) == {"0.02", "0.04"}
    assert rep["regret_p95"]["0.02"]["best_other"] == "rr-fcfs"


def test_cli_reports_simulated_calls_per_wall_second(tmp_path, capsys):
    """Every run says how many LLM calls it simulated and how fast (issue 12: capacity studies
    live on this speed): in the progress line and in the JSON."""
    out = tmp_path / "sched.json"
    assert cli(["bench", "scheduler", "--queries", "4", "--policy", "slack", "--json", str(out)]) == 0
    run = json.loads(out.read_text())["runs"][0]
    calls = sum(q.n_calls for q in load_workload("trace1")[:4])
    assert run["llm_calls"] == calls
    assert run["wall_s"] > 0 and run["cpu_s"] > 0
    assert run["calls_per_wall_s"] == pytest.approx(calls / run["wall_s"])
    assert run["calls_per_cpu_s"] == pytest.approx(calls / run["cpu_s"])
    assert f"{calls} LLM calls in" in capsys.readouterr().out


def test_cli_names_bad_input(capsys):
    with pytest.raises(SystemExit) as info:
        cli(["bench", "scheduler", "--gpus", "B300", "--queries", "2"])
    assert info.value.code == 2 and "B300" in capsys.readouterr().err


def test_executor_bench_on_emulated_gpus(tmp_path):
    out = tmp_path / "ex.json"
    assert cli(["bench", "executor", "--limit", "4", "--gpus", "A100-80G,L40S", "--json", str(out)]) == 0
    rep = json.loads(out.read_text())
    assert rep["gpus"] == ["A100-80G", "L40S"] and rep["bound_ratio"] is None
    assert rep["speedup_vs_react"]["min"] > 1.0 and rep["floors"]["all_correct"]


def test_tune_searches_the_grid_and_names_the_best(tmp_path, capsys):
    out = tmp_path / "tune.json"
    assert cli(["tune", "--policy", "hexgen", "--grid", "alpha=0,1", "--queries", "6",
                "--rate", "0.05", "--json", str(out)]) == 0
    rep = json.loads(out.read_text())
    assert [r["policy_options"]["alpha"] for r in rep["runs"]] and len(rep["runs"]) == 2
    assert rep["best"] == rep["runs"][0]["policy_options"]
    best, other = rep["runs"]
    assert (best["slo_attainment"], -best["latency_s"]["p95"]) >= (other["slo_attainment"], -other["latency_s"]["p95"])
    assert "use it: fleetcall bench scheduler --set hexgen.alpha=" in capsys.readouterr().out
