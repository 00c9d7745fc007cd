"""``fleetcall bench scheduler --replicas K``: the herd benchmark on the virtual clock (no Ray),
and its options refused with a clear error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fleetcall.cli import main as cli

SMALL = ["bench", "scheduler", "--trace", "trace1", "--queries", "6", "--gpus", "A100-80G,A6000",
         "--model", "llama-3.1-8b", "--rate", "0.05", "--slots", "4"]


def test_the_herd_writes_each_k_and_mode(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "herd.json"
    assert cli([*SMALL, "--replicas", "1,2", "--json", str(out)]) == 0
    rep = json.loads(out.read_text())
    assert rep["benchmark"] == "scheduler-herd" and rep["policy"] == "slack"
    runs = [(r["replicas"], r["mode"], r["queries"], r["completed"]) for r in rep["runs"]]
    assert runs == [(1, "independent", 6, 6), (1, "shared", 6, 6),
                    (2, "independent", 6, 6), (2, "shared", 6, 6)]
    assert all(0 <= r["slo_attainment"] <= 1 and r["latency_s"]["p95"] > 0 for r in rep["runs"])
    table = capsys.readouterr().out
    assert "| K | independent SLO | independent p95" in table and "| 2 |" in table


def test_shared_or_independent_alone(tmp_path: Path) -> None:
    out = tmp_path / "herd.json"
    assert cli([*SMALL, "--replicas", "2", "--shared", "--json", str(out)]) == 0
    assert [r["mode"] for r in json.loads(out.read_text())["runs"]] == ["shared"]


@pytest.mark.parametrize("extra, words", [
    (["--replicas", "0"], "--replicas wants counts >= 1"),
    (["--replicas", "two"], "--replicas wants counts like"),
    (["--replicas", "2", "--rates", "0.1,0.2"], "--replicas compares one policy at one --rate"),
    (["--replicas", "2", "--rtt-ms", "-1"], "--rtt-ms must be >= 0"),
    (["--replicas", "2", "--speed", "4"], "--speed needs --clock real"),
    (["--replicas", "2", "--clock", "real", "--speed", "0"], "--speed must be a finite number > 0"),
    (["--replicas", "2", "--clock", "real", "--router", "sglang:round_robin"], "--router has no place"),
])
def test_bad_herd_options_are_named(extra: list[str], words: str,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli([*SMALL, *extra])
    assert info.value.code == 2 and words in capsys.readouterr().err


def test_the_core_cost_part_of_ray_overhead_runs_without_ray(tmp_path: Path) -> None:
    out = tmp_path / "cost.json"
    assert cli(["bench", "ray-overhead", "--no-ray", "--core-calls", "300", "--queued", "20",
                "--json", str(out)]) == 0
    rep = json.loads(out.read_text())
    assert "ray" not in rep
    for shape in ("sequential", "queued"):
        assert rep["core"][shape]["us_per_call"] > rep["core"][shape]["us_per_event"] > 0
    assert rep["shared_core"]["us_per_call"] > 0
