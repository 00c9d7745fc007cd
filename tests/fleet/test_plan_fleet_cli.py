"""``fleetcall plan-fleet`` end to end: a tiny plan (few queries, two GPU types) in seconds, and
every kind of bad input named, exit 2."""

from __future__ import annotations

import json

import pytest

from fleetcall.cli import main as cli

TINY = ["plan-fleet", "--trace", "trace1", "--rate", "0.02", "--slo-scale", "3", "--gpus", "A100-80G,L40S",
        "--prices", "example", "--model", "llama-3.1-8b", "--queries", "16", "--max-gpus", "4",
        "--no-progress"]


def test_a_tiny_plan_names_the_cheapest_mix_meeting_the_target_and_its_frontier(tmp_path, capsys):
    out = tmp_path / "plan.json"
    assert cli([*TINY, "--validate", "24", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "cheapest mix meeting 95%" in text and "cost per query within SLO" in text
    plan = json.loads(out.read_text())
    choice = plan["choice"]
    assert choice["meets"] and choice["attainment"] >= 0.95 and choice["gpus"] <= 4
    assert choice["cost_per_hour"] == pytest.approx(
        sum(e["count"] * e["tp"] * plan["prices_per_gpu_hour"][e["gpu"]] for e in choice["endpoints"]))
    assert choice["utilisation"] and choice["p95_s"] > 0 and choice["cost_per_query_in_slo"] > 0
    # every simulated mix cheaper than the choice missed (the choice is the cheapest found) ...
    assert all(not r["meets"] for r in plan["frontier"] if r["cost_per_hour"] < choice["cost_per_hour"])
    assert any(r["mix"] == choice["mix"] and r["on_frontier"] for r in plan["frontier"])
    # ... and fewer mixes were simulated than the first cut listed
    assert plan["search"]["simulated"] <= plan["search"]["near_frontier"] <= plan["search"]["enumerated"]
    assert set(plan["rules"]) == {"all-A100", "cheapest single type"}
    for name, saved in plan["savings"].items():
        rule = plan["rules"][name]
        assert saved == pytest.approx(1 - choice["cost_per_hour"] / rule["cost_per_hour"]) and saved >= 0
    runs = plan["validation"]["runs"]
    assert runs["chosen"]["queries"] == 24 and runs["chosen"]["meets"] and not runs["chosen"]["stopped_early"]
    if "next cheaper" in runs:
        assert runs["next cheaper"]["cost_per_hour"] < choice["cost_per_hour"]


def test_the_plot_is_drawn(tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "frontier.png"
    assert cli([*TINY, "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_no_mix_within_max_gpus_meeting_the_target_exits_1_and_each_simulation_is_logged(capsys):
    args = [a for a in TINY if a != "--no-progress"]  # stderr is no terminal here: lines, no bars
    assert cli([*args[:4], "0.5", *args[5:], "--max-gpus", "1"]) == 1
    captured = capsys.readouterr()
    assert "no mix within 1 GPUs met" in captured.out
    assert "missed: stopped early after" in captured.err


@pytest.mark.parametrize("change, message", [
    (["--gpus", "A100-80G,Z100"], "unknown GPU 'Z100'"),
    (["--gpus", "A100-80G,L4"], "no price for L4"),
    (["--model", "llama-3.1-70b", "--gpus", "A10G,L4", "--prices", "PRICES", "--tp", "1,2"],
     "fits none of the GPUs"),
    (["--prices", "BAD"], "not valid TOML"),
    (["--prices", "MISSING"], "no such file"),
    (["--model", "gpt-9"], "unknown model 'gpt-9'"),
    (["--policy", "fastest"], "unknown policy 'fastest'"),
    (["--attainment", "1.5"], "--attainment must be in"),
    (["--rate", "-1"], "--rate must be a positive"),
    (["--rate", "nan"], "--rate must be a positive"),
    (["--slo-scale", "0"], "--slo-scale must be a positive"),
    (["--trace", "no-such-trace.json"], "no such file"),
    (["--tp", "four"], "--tp wants"),
    (["--confirm", "-1"], "--confirm must be >= 0"),
    (["--model", "llama-3.1-70b@fp32", "--reference", "L4"], "name another with --reference"),
])
def test_bad_input_is_named_and_exits_2(tmp_path, capsys, change, message):
    (tmp_path / "bad.toml").write_text('"A100" = ')
    (tmp_path / "small.toml").write_text('"A10G" = 1.0\n"L4" = 0.8\n')
    paths = {"BAD": str(tmp_path / "bad.toml"), "MISSING": str(tmp_path / "nope.toml"),
             "PRICES": str(tmp_path / "small.toml")}
    args = list(TINY)
    for i in range(0, len(change), 2):
        value = paths.get(change[i + 1], change[i + 1])
        if change[i] in args:
            args[args.index(change[i]) + 1] = value
        else:
            args += [change[i], value]
    with pytest.raises(SystemExit) as exit_info:
        cli(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_validation_in_processes_matches_validation_in_process():
    from fleetcall.bench.workloads import load_workload
    from fleetcall.fleet.planner import Question, plan_fleet
    from fleetcall.fleet.prices import load_prices

    def plan(jobs: int):
        q = Question(tuple(load_workload("trace1")), 0.02, 3.0, 0.95, ("A100-80G", "L40S"),
                     load_prices("example"), "llama-3.1-8b", max_gpus=2, search_queries=8,
                     validate_queries=10, jobs=jobs)
        return plan_fleet(q)

    one, two = plan(1), plan(2)
    assert len(one.validation) >= 2
    assert {k: (m.counts, o.attainment, o.p95_s) for k, (m, o) in one.validation.items()} == \
        {k: (m.counts, o.attainment, o.p95_s) for k, (m, o) in two.validation.items()}
