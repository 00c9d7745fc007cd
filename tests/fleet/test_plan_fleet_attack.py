"""``fleetcall plan-fleet`` under attack (issue 14): inputs that used to crash with a traceback
after the whole search, write somewhere other than they said, or print an answer its own
validation contradicts. Each is named, exits 2, and (for output paths) fails before simulating."""

from __future__ import annotations

import json

import pytest

from fleetcall.cli import main as cli
from tests.fleet.test_plan_fleet_cli import TINY


def _exits_2(capsys, args: list[str], message: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        cli(args)
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert message in captured.err and "Traceback" not in captured.err
    return captured.out


def _set(args: list[str], option: str, value: str) -> list[str]:
    args = list(args)
    if option in args:
        args[args.index(option) + 1] = value
    else:
        args += [option, value]
    return args


@pytest.mark.parametrize("slots", ["0", "-3"])
def test_slots_below_one_is_named_and_exits_2(capsys, slots):
    _exits_2(capsys, _set(TINY, "--slots", slots), f"--slots must be >= 1, got {slots}")


@pytest.mark.parametrize("option", ["--json", "--plot"])
@pytest.mark.parametrize("where", ["DIR", "NO_PARENT", "PARENT_IS_FILE"])
def test_an_output_path_that_cannot_be_written_exits_2_before_any_simulation(tmp_path, capsys, option, where):
    if option == "--plot":
        pytest.importorskip("matplotlib")
    (tmp_path / "file").write_text("x")
    suffix = ".json" if option == "--json" else ".png"
    path = {"DIR": tmp_path, "NO_PARENT": tmp_path / "nope" / f"out{suffix}",
            "PARENT_IS_FILE": tmp_path / "file" / f"out{suffix}"}[where]
    out = _exits_2(capsys, [*TINY, option, str(path)], f"{option} {path}:")
    assert "first cut" not in out  # refused before the search, not after it


@pytest.mark.parametrize("name", ["plot.txt", "plot"])
def test_a_plot_path_matplotlib_would_not_write_as_named_exits_2(tmp_path, capsys, name):
    # .txt: matplotlib raises (a traceback after the search); no suffix: it wrote plot.png and
    # the command printed "wrote plot"
    pytest.importorskip("matplotlib")
    _exits_2(capsys, [*TINY, "--plot", str(tmp_path / name)], "--plot")
    assert list(tmp_path.iterdir()) == []


def test_a_validation_shorter_than_the_screen_is_refused(capsys):
    # --validate 5 with --queries 16: the "full length" runs were shorter than the screens, no
    # confirmation ran, and the next cheaper mix "met" its validation while the plan still
    # named the dearer one the cheapest meeting the target at full length
    _exits_2(capsys, _set(TINY, "--validate", "5"), "--validate (5) must be 0 or at least --queries (16)")


def test_prices_whose_mix_costs_overflow_are_refused(tmp_path, capsys):
    prices = tmp_path / "huge.toml"
    prices.write_text('"A100-80G" = 1e308\n"L40S" = 1e308\n')
    _exits_2(capsys, _set(TINY, "--prices", str(prices)), "A100-80G")


@pytest.mark.parametrize("rate", ["1e-20", "1e-300"])
def test_a_rate_too_low_for_the_simulated_clock_is_refused(capsys, rate):
    # at 1e-20 q/s the arrivals lie ~1e21 s out, where a float has no sub-second resolution:
    # every call "timed out after 0 s" and the command said no mix meets the target (exit 1)
    _exits_2(capsys, _set(TINY, "--rate", rate), "--rate")


def test_a_rule_mix_cheaper_than_the_search_choice_becomes_the_answer(tmp_path, capsys):
    # trace1 at 0.04 q/s, seed 8: the main search settled on 2 x L40S/tp8 ($13.76/h) while the
    # cheapest-single-type rule found 3 x L40S/tp4 ($10.32/h), met in the screen and confirmed at
    # full length; the plan still answered the dearer mix and printed "the plan saves -33%"
    out = tmp_path / "plan.json"
    args = ["plan-fleet", "--trace", "trace1", "--rate", "0.04", "--gpus", "A100-80G,L40S",
            "--prices", "example", "--model", "llama-3.1-70b", "--queries", "20", "--validate", "60",
            "--seed", "8", "--no-progress", "--json", str(out)]
    assert cli(args) == 0
    assert "saves -" not in capsys.readouterr().out
    plan = json.loads(out.read_text())
    choice = plan["choice"]
    assert choice["meets"]
    met = [r for r in plan["frontier"] if r["meets"]]
    assert choice["cost_per_hour"] == min(r["cost_per_hour"] for r in met)
    assert all(saved >= 0 for saved in plan["savings"].values())
