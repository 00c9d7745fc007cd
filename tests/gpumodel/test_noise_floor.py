"""The repeatability floor of a profile: how far any model of prompt length can get (issue 12)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetcall.gpumodel.noise import monotone_fit, monotone_held_out_pct, monotone_mape_pct
from fleetcall.gpumodel.calibrate import (
    BREAKDOWN, CalibrationReport, check, format_report, load_profile, repeat_floor_pct,
    shipped_profiles,
)


def test_floor_is_the_spread_of_repeated_measurements() -> None:
    # three repeats of one prompt length (0.9, 1.0, 1.2 s): the best constant is 1.0 s
    # (the 1/v-weighted median), off by 0.1/0.9 and 0.2/1.2.
    points = [(1000, 0.9), (1004, 1.0), (1010, 1.2), (3000, 2.0), (3002, 2.0), (3005, 2.0)]
    expected = 100 * (0.1 / 0.9 + 0.0 + 0.2 / 1.2) / 6
    assert repeat_floor_pct(points) == pytest.approx(expected)


def test_lone_measurements_say_nothing_about_noise() -> None:
    assert repeat_floor_pct([(100, 1.0), (500, 2.0), (900, 3.0)]) is None
    assert repeat_floor_pct([(100, 1.0), (105, 2.0)]) is None  # a group of 2 is too small
    assert repeat_floor_pct([(100, 1.0), (111, 1.5), (122, 2.0)]) is None  # 11 tokens apart


def test_floor_never_exceeds_what_a_per_group_constant_model_scores() -> None:
    points = [(1000 + i, 1.0 + 0.05 * (i % 4)) for i in range(8)]
    floor = repeat_floor_pct(points)
    assert floor is not None
    for c in (1.0, 1.05, 1.1, 1.15):
        assert floor <= 100 * sum(abs(c - v) / v for _, v in points) / len(points) + 1e-9


def test_shipped_a6000_ttft_sits_on_its_noise_floor() -> None:
    """Issue 12's 6.0% A6000 TTFT: repeats of one prompt length on the A6000 already spread by
    about 5% (MAPE around their own best constant), so no model of prompt length can reach 5%
    on that column; the shipped model is within 1.5 points of the floor on every GPU."""
    path = next(p for p in shipped_profiles() if load_profile(p).format == BREAKDOWN)
    report = check(load_profile(path))
    gpus = {g.csv_gpu: g for g in report.gpus}
    a6000 = gpus["A6000"]
    assert a6000.ttft_floor_pct is not None and a6000.ttft_floor_pct > 5.0
    for g in gpus.values():
        assert g.ttft_floor_pct is not None and g.tpot_floor_pct is not None
        assert g.ttft_mape_pct is not None and g.tpot_mape_pct is not None
        assert g.ttft_mape_pct < g.ttft_floor_pct + 1.5, g
        assert g.tpot_mape_pct < g.tpot_floor_pct + 1.5, g
    assert "TTFT floor" in format_report(CalibrationReport(mode="check", files=[report]))


# -- the best monotone model: what any model of prompt length can reach (issue 12) ---------------

def _mape(points: list[tuple[int, float]], f) -> float:  # type: ignore[no-untyped-def]
    return 100.0 * sum(abs(f(t) - v) / v for t, v in points) / len(points)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 40), st.floats(0.1, 10.0)), min_size=1, max_size=12),
       st.lists(st.floats(0.1, 10.0), min_size=3, max_size=3))
def test_the_monotone_fit_beats_every_other_non_decreasing_function(
        points: list[tuple[int, float]], levels: list[float]) -> None:
    steps = monotone_fit(points)
    values = [v for _, _, v in steps]
    assert values == sorted(values)
    assert [s[0] for s in steps] == sorted(s[0] for s in steps)
    best = monotone_mape_pct(points)
    assert best is not None
    # a few other non-decreasing functions: constants, and steps at a threshold
    a, b, c = sorted(levels)
    for f in (lambda t: a, lambda t: b, lambda t: a if t < 20 else c,
              lambda t: b if t < 10 else c, lambda t: a if t < 30 else b):
        assert best <= _mape(points, f) + 1e-9


def test_a_monotone_series_is_fitted_exactly_and_held_out_by_interpolation() -> None:
    points = [(t, 0.001 * t + 0.05) for t in range(100, 2000, 100)]
    assert monotone_mape_pct(points) == pytest.approx(0.0)
    # linear: exact between the training points, flat beyond them (the two end points of
    # one half are off: 0.15 s predicted 0.25, 1.95 predicted 1.85)
    held_out = monotone_held_out_pct(points)
    assert held_out is not None and 0.0 < held_out < 5.0
    assert monotone_held_out_pct(points[:3]) is None  # too few to halve
    assert monotone_mape_pct([]) is None


def test_no_model_of_prompt_length_reaches_5pct_on_other_a6000_measurements() -> None:
    # Issue 12's fidelity goal (5% MAPE on every column) against the shipped A6000 TTFT: the
    # best non-decreasing function of prompt length reaches under 5% only on the rows it was
    # fitted to (a lookup table of their noise); fitted on alternate rows it scores over 6% on
    # the others, as the shipped roofline does (6.1% / 6.9% held out, 6.0% in sample).
    profile = next(p for p in (load_profile(path) for path in shipped_profiles())
                   if p.format == BREAKDOWN)
    fits = {g.csv_gpu: g for g in check(profile).gpus}
    a6000 = fits["A6000"]
    assert a6000.ttft_monotone_pct is not None and a6000.ttft_monotone_held_out_pct is not None
    assert a6000.ttft_monotone_pct < 5.0 < 6.0 < a6000.ttft_monotone_held_out_pct
    assert a6000.ttft_monotone_pct <= a6000.ttft_mape_pct
    for gpu in ("A100", "L40S"):
        assert fits[gpu].ttft_monotone_held_out_pct is not None
        assert fits[gpu].ttft_monotone_held_out_pct < 5.0
    text = format_report(CalibrationReport(mode="check", files=[check(profile)]))
    assert "best non-decreasing function of prompt length" in text
