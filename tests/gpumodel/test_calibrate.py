"""Calibration against the shipped vLLM profiles: the 15% floor, formats, the CLI, the fit."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from fleetcall.errors import ConfigError
from fleetcall.gpumodel import calibrate
from fleetcall.gpumodel.calibrate import (
    BREAKDOWN, DEFAULT_ASSUMPTIONS, FLOOR_PCT, SINGLE, Assumption, check, detect_format, fit,
    load_profile, main, shipped_profiles,
)
from fleetcall.gpumodel.gpus import CALIBRATED, UnknownGPUError


@pytest.fixture(scope="module")
def shipped() -> dict[str, Path]:
    paths = {load_profile(p).format: p for p in shipped_profiles()}
    assert set(paths) == {SINGLE, BREAKDOWN}
    return paths


def _write(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.mark.parametrize("fmt", [SINGLE, BREAKDOWN])
def test_shipped_factors_meet_the_floor_on_each_shipped_file(shipped: dict[str, Path],
                                                             fmt: str) -> None:
    report = check(load_profile(shipped[fmt]))
    assert {g.csv_gpu for g in report.gpus} == {"A100", "A6000", "L40S"}
    for g in report.gpus:
        assert g.n > 100
        assert g.latency_mape_pct < FLOOR_PCT, g
        if fmt == BREAKDOWN:  # TTFT and TPOT are measured there, and fit as well
            assert g.ttft_mape_pct is not None and g.ttft_mape_pct < FLOOR_PCT, g
            assert g.tpot_mape_pct is not None and g.tpot_mape_pct < FLOOR_PCT, g
    assert report.passed


def test_the_model_assumption_matters(shipped: dict[str, Path]) -> None:
    """The breakdown file is not the 70B: checked as one, it fails by far."""
    wrong = Assumption("llama-3.1-70b", tp=4, prefix_cached=False)
    report = check(load_profile(shipped[BREAKDOWN]), wrong)
    assert not report.passed
    assert min(g.latency_mape_pct for g in report.gpus) > 100


@pytest.mark.parametrize("header, fmt", [
    (["input_tokens", "output_tokens", "gpu", "latency_s"], SINGLE),
    (["input_tokens", "output_tokens", "gpu", "total_s", "ttft_s", "tpot_s"], BREAKDOWN),
    ([" gpu", "latency_s ", "input_tokens", "output_tokens", "extra"], SINGLE),
])
def test_format_is_detected_from_columns(header: list[str], fmt: str) -> None:
    assert detect_format(header) == fmt


def test_unknown_columns_name_both_expected_formats(tmp_path: Path) -> None:
    path = _write(tmp_path / "bad.csv", ["prompt", "completion", "gpu", "seconds"],
                  [[1, 2, "A100", 3]])
    with pytest.raises(ConfigError) as err:
        load_profile(path)
    message = str(err.value)
    assert "latency_s" in message and "ttft_s" in message and "tpot_s" in message


def test_bad_values_and_empty_files_are_config_errors(tmp_path: Path) -> None:
    header = ["input_tokens", "output_tokens", "gpu", "latency_s"]
    with pytest.raises(ConfigError, match="line"):
        load_profile(_write(tmp_path / "a.csv", header, [[100, "many", "A100", 1.0]]))
    with pytest.raises(ConfigError, match="no rows"):
        load_profile(_write(tmp_path / "b.csv", header, []))


def test_gpu_not_in_catalog_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                             ) -> None:
    path = _write(tmp_path / "v100.csv", ["input_tokens", "output_tokens", "gpu", "latency_s"],
                  [[100, 10, "V100", 1.0]])
    with pytest.raises(UnknownGPUError, match="known GPUs"):
        check(load_profile(path))
    assert main(["--check", str(path)]) == 2
    assert "unknown GPU 'V100'" in capsys.readouterr().err


def test_check_command_prints_a_table_and_writes_json(shipped: dict[str, Path], tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report.json"
    assert main(["--check", str(shipped[BREAKDOWN]), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "PASS" in text and "A100-80G" in text and "TTFT" in text and "llama-3.1-8b" in text
    data = json.loads(out.read_text())
    assert data["mode"] == "check" and data["passed"] is True
    gpus = data["files"][0]["gpus"]
    assert {g["csv_gpu"] for g in gpus} == {"A100", "A6000", "L40S"}
    assert all(g["latency_mape_pct"] < FLOOR_PCT for g in gpus)


def test_check_command_fails_under_a_wrong_model(shipped: dict[str, Path],
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--check", str(shipped[SINGLE]), "--model", "llama-3.1-8b"]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_default_assumptions_per_format() -> None:
    assert DEFAULT_ASSUMPTIONS[SINGLE].model == "llama-3.1-70b"
    assert DEFAULT_ASSUMPTIONS[SINGLE].prefix_cached
    assert DEFAULT_ASSUMPTIONS[BREAKDOWN].model == "llama-3.1-8b"
    assert not DEFAULT_ASSUMPTIONS[BREAKDOWN].prefix_cached
    assert {a.tp for a in DEFAULT_ASSUMPTIONS.values()} == {4}


def test_nelder_mead_finds_a_quadratic_minimum() -> None:
    best = calibrate._nelder_mead(lambda x: (x[0] - 1) ** 2 + 3 * (x[1] + 2) ** 2, [0.0, 0.0],
                                  step=0.5, max_evals=400, tol=1e-12)
    assert best == pytest.approx([1.0, -2.0], abs=1e-3)


def test_fit_on_a_sample_keeps_every_gpu_under_the_floor(
        shipped: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A short fit (few rows, few evaluations): fast, and still good."""
    paths = []
    for fmt, path in shipped.items():
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
        paths.append(_write(tmp_path / f"{fmt}.csv", rows[0], rows[1::25]))
    pairs = [(load_profile(p), None) for p in paths]
    fitted = fit(pairs, max_evals=300)
    assert set(fitted) == set(CALIBRATED)
    for profile, _ in pairs:
        report = check(profile, efficiencies=fitted)
        assert all(g.latency_mape_pct < FLOOR_PCT for g in report.gpus), report


def test_fit_command_prints_factors_to_ship(shipped: dict[str, Path], tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    with open(shipped[BREAKDOWN], newline="") as f:
        rows = list(csv.reader(f))
    path = _write(tmp_path / "sample.csv", rows[0], rows[1::16])
    monkeypatch.setattr(calibrate, "fit", lambda pairs: fit(pairs, max_evals=60))
    out = tmp_path / "fit.json"
    assert main([str(path), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "Fitted efficiency factors" in text and '"L40S": Efficiency(bandwidth=' in text
    data = json.loads(out.read_text())
    assert data["mode"] == "fit" and set(data["fitted"]) == set(CALIBRATED)
    assert 0 < data["fitted"]["A6000"]["compute"] <= 1
