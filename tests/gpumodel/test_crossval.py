"""Outliers and cross-validation of the calibrated GPU model (issue 12, Fidelity)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from fleetcall.errors import ConfigError
from fleetcall.gpumodel import calibrate, crossval
from fleetcall.gpumodel.calibrate import (
    BREAKDOWN, CalibrationReport, ProfileRow, check, format_report, load_profile, main,
    shipped_profiles,
)
from fleetcall.gpumodel.crossval import SPLITS, cross_validate, split_rows
from fleetcall.gpumodel.gpus import CALIBRATED
from fleetcall.gpumodel.noise import mape_without_worst_pct, outlier_stats


def _breakdown() -> Path:
    return next(p for p in shipped_profiles() if load_profile(p).format == BREAKDOWN)


def test_outliers_are_rows_far_beyond_the_typical_error() -> None:
    # median error 2%: 5x is 10%, so only the 30% row is an outlier
    errors = [1.0, 2.0, 3.0, 2.0, 30.0]
    o = outlier_stats(errors)
    assert o.n == 1 and o.worst_pct == 30.0
    assert o.share_pct == pytest.approx(100 * 30 / 38)
    assert o.mape_without_pct == pytest.approx(2.0)
    assert outlier_stats([0.0, 0.0, 5.0]).n == 0  # a zero median flags nothing
    assert outlier_stats(errors, factor=1.2).n == 2  # 3% and 30% exceed 2.4%
    assert o.without_worst_pct == {1: pytest.approx(2.0), 3: pytest.approx(1.5)}
    assert o.floor_without_pct is None  # no points given
    # the floor of the rows that are not outliers: 1000-token repeats 1.0 and 1.1 s (the
    # 30% row, 1004 tokens, is left out), best constant 1.0 (1/v-weighted median)
    points = [(1000, 1.0), (1002, 1.1), (1003, 1.0), (2000, 2.0), (1004, 1.5)]
    o = outlier_stats(errors, points=points)
    assert o.floor_without_pct == pytest.approx(100 * (0.1 / 1.1) / 3)
    with pytest.raises(ValueError, match="points for"):
        outlier_stats(errors, points=points[:2])


def test_mape_without_the_worst_rows() -> None:
    errors = [1.0, 2.0, 9.0, 4.0]
    assert mape_without_worst_pct(errors, 0) == pytest.approx(4.0)
    assert mape_without_worst_pct(errors, 1) == pytest.approx(7 / 3)
    assert mape_without_worst_pct(errors, 3) == pytest.approx(1.0)
    for bad in (-1, 4):
        with pytest.raises(ValueError):
            mape_without_worst_pct(errors, bad)
    with pytest.raises(ValueError):
        outlier_stats([])
    with pytest.raises(ValueError):
        outlier_stats([1.0, -1.0])


def test_a6000_ttft_error_is_carried_by_a_few_stalled_requests() -> None:
    """Issue 12's 6.0%: about a tenth of the A6000's requests stall by 0.1-0.6 s and carry
    nearly half of its TTFT MAPE; the rest sit within 5%, as the other GPUs' do."""
    report = check(load_profile(_breakdown()))
    gpus = {g.csv_gpu: g for g in report.gpus}
    a6000 = gpus["A6000"].outliers["ttft"]
    assert gpus["A6000"].ttft_mape_pct is not None and gpus["A6000"].ttft_mape_pct > 5.0
    assert 5 <= a6000.n <= 15 and a6000.share_pct > 40 and a6000.worst_pct > 30
    for g in gpus.values():
        assert set(g.outliers) == {"latency", "ttft", "tpot"}
        assert g.outliers["ttft"].mape_without_pct < 5.0, g
    # without its stalls the A6000 is near its own (stall-free) repeatability floor
    assert gpus["A6000"].outliers["ttft"].floor_without_pct is not None
    assert a6000.mape_without_pct < a6000.floor_without_pct + 1.5  # type: ignore[operator]
    assert a6000.without_worst_pct[10] < 4.0 < a6000.without_worst_pct[1]
    text = format_report(CalibrationReport(mode="check", files=[report]))
    assert "outliers (n share w/o floor)" in text and "TTFT" in text


def _rows(lengths: list[int]) -> list[ProfileRow]:
    return [ProfileRow(n, 10, "A100", 1.0, None, None) for n in lengths]


def test_splits_halve_each_gpu_by_prompt_length() -> None:
    rows = _rows([500, 100, 300, 200, 400])
    lengths = {s: tuple([r.input_tokens for r in half] for half in split_rows(rows, s))
               for s in SPLITS}
    assert lengths["short->long"] == ([100, 200], [300, 400, 500])
    assert lengths["long->short"] == ([300, 400, 500], [100, 200])
    assert lengths["even->odd"] == ([100, 300, 500], [200, 400])
    assert lengths["odd->even"] == ([200, 400], [100, 300, 500])
    with pytest.raises(ConfigError, match="unknown split"):
        split_rows(rows, "random")


def test_cross_validation_scores_only_held_out_rows() -> None:
    profile = load_profile(_breakdown())
    [held] = cross_validate([(profile, None)], splits=("even->odd",), max_evals=200)
    [f] = held.files
    assert held.split == "even->odd" and set(held.fitted) == {"A100-80G", "A6000", "L40S"}
    for g in f.gpus:
        assert g.n == 52  # the odd half of 105 rows
        assert g.ttft_mape_pct is not None and g.ttft_mape_pct < 15.0, g


def test_cross_validation_does_not_start_from_the_shipped_factors() -> None:
    """No prompt of the short half continues a 2048-token chunk, so the fit cannot know the
    L40S's 0.5 s step there: it keeps the neutral start's, and the long half's TTFT shows it."""
    profile = load_profile(_breakdown())
    [held] = cross_validate([(profile, None)], splits=("short->long",), max_evals=40)
    assert held.fitted["L40S"]["chunk_overhead_s"] == crossval.NEUTRAL_START.chunk_overhead_s
    assert CALIBRATED["L40S"].chunk_overhead_s > 0.4
    l40s = next(g for g in held.files[0].gpus if g.csv_gpu == "L40S")
    assert l40s.ttft_mape_pct is not None and l40s.ttft_mape_pct > 30


def test_a_gpu_with_one_row_is_refused_not_scored_with_shipped_factors() -> None:
    profile = load_profile(_breakdown())
    few = calibrate.Profile("x.csv", BREAKDOWN, profile.rows[:4])  # A100 x2, A6000, L40S
    with pytest.raises(ConfigError, match="too few rows of A6000"):
        cross_validate([(few, None)], splits=("short->long",), max_evals=10)


def test_cross_validate_command_prints_held_out_mape(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    with open(_breakdown(), newline="") as f:
        rows = list(csv.reader(f))
    path = tmp_path / "sample.csv"
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([rows[0], *rows[1::4]])
    real = crossval.fit
    monkeypatch.setattr(crossval, "fit",
                        lambda pairs, max_evals, start: real(pairs, max_evals=40, start=start))
    out = tmp_path / "cv.json"
    assert main([str(path), "--cross-validate", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "Held-out MAPE" in text and "short->long" in text and "odd->even" in text
    data = json.loads(out.read_text())
    assert data["mode"] == "cross-validate"
    assert [h["split"] for h in data["held_out"]] == list(SPLITS)


def test_cross_validate_with_check_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--check", str(_breakdown()), "--cross-validate"]) == 2
    assert "--cross-validate refits" in capsys.readouterr().err
