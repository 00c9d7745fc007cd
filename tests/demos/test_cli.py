"""``fleetcall demo``: listing, errors before anything runs, one real-clock run with --json and --timeline."""

from __future__ import annotations

import json

from fleetcall.cli import main
from fleetcall.demos import parallelqa


def test_list(capsys) -> None:
    assert main(["demo", "--list"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert names == ["parallelqa", "text2sql", "replan"]


def test_unknown_demo_is_a_clear_error(capsys) -> None:
    assert main(["demo", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown demo 'nope'" in err and "parallelqa, text2sql, replan" in err


def test_bad_options_fail_before_running(capsys) -> None:
    assert main(["demo", "--timeline", "t.txt"]) == 2
    assert ".html" in capsys.readouterr().err
    assert main(["demo", "--pace", "0"]) == 2
    assert "pace must be a positive number" in capsys.readouterr().err


def test_real_clock_run_writes_json_and_timeline(tmp_path, capsys) -> None:
    out_json, out_html = tmp_path / "out.json", tmp_path / "t.html"
    code = main(["demo", "parallelqa", "--pool", "scripted", "--pace", "0.02", "--json", str(out_json), "--timeline", str(out_html)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "plan 0: 1. search(" in printed and "Speedup over ReAct" in printed   # plain lines: not a terminal
    outcome = json.loads(out_json.read_text())
    assert outcome["answer"] == parallelqa.expected_answer() == outcome["react_answer"]
    assert outcome["status"] == "answered" and outcome["react_status"] == "answered"
    assert outcome["react_latency_s"] > 0 and outcome["latency_s"] > 0   # real clock: no timing claims
    assert outcome["speedup_vs_react"] == outcome["react_latency_s"] / outcome["latency_s"]
    assert len(outcome["tasks"]) == 9 and all(t["status"] == "ok" for t in outcome["tasks"])
    assert "<svg" in out_html.read_text()
