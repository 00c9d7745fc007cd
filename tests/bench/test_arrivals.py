"""Arrival processes: rates, burstiness, recorded traces, determinism."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from fleetcall.bench.arrivals import (
    from_csv, from_specs, gamma, make_arrivals, poisson, scale_to_rate,
)
from fleetcall.bench.workloads import CallSpec, QuerySpec, load_mooncake
from fleetcall.errors import ConfigError, WorkloadError


def _gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in zip(times, times[1:])]


def _cv(values: list[float]) -> float:
    return statistics.pstdev(values) / statistics.fmean(values)


def test_poisson_mean_rate_and_cv() -> None:
    times = poisson(2.0, 5000, seed=3)
    assert times[0] == 0.0 and times == sorted(times) and len(times) == 5000
    assert (len(times) - 1) / times[-1] == pytest.approx(2.0, rel=0.05)
    assert _cv(_gaps(times)) == pytest.approx(1.0, abs=0.06)


@pytest.mark.parametrize("cv", [0.5, 1.0, 3.0])
def test_gamma_mean_rate_and_cv(cv: float) -> None:
    times = gamma(0.5, cv, 5000, seed=1)
    assert (len(times) - 1) / times[-1] == pytest.approx(0.5, rel=0.05 * cv)
    assert _cv(_gaps(times)) == pytest.approx(cv, rel=0.1)


def test_processes_are_deterministic_given_the_seed() -> None:
    assert gamma(1.0, 2.0, 50, seed=9) == gamma(1.0, 2.0, 50, seed=9)
    assert gamma(1.0, 2.0, 50, seed=9) != gamma(1.0, 2.0, 50, seed=10)
    assert gamma(1.0, 1.0, 50, seed=4) == poisson(1.0, 50, seed=4)
    assert poisson(1.0, 0) == [] and poisson(1.0, 1) == [0.0]


@pytest.mark.parametrize("call", [lambda: poisson(0.0, 3), lambda: poisson(1.0, -1),
                                  lambda: gamma(1.0, 0.0, 3), lambda: make_arrivals("gamma", None, 3)])
def test_bad_parameters_raise(call) -> None:  # type: ignore[no-untyped-def]  # lambdas
    with pytest.raises(ConfigError):
        call()


def _csv(tmp_path: Path, times: list[float]) -> Path:
    path = tmp_path / "a.csv"
    path.write_text("input_tokens,timestamp_s\n" + "".join(f"5,{t}\n" for t in times))
    return path


def test_csv_replays_gaps_from_zero(tmp_path: Path) -> None:
    path = _csv(tmp_path, [10.0, 11.0, 13.0, 16.0])
    assert from_csv(path) == [0.0, 1.0, 3.0, 6.0]
    assert from_csv(path, n=2) == [0.0, 1.0]
    with pytest.raises(WorkloadError, match="5 arrivals asked, the trace has 4"):
        from_csv(path, n=5)


def test_csv_scaled_to_a_rate_keeps_the_shape(tmp_path: Path) -> None:
    path = _csv(tmp_path, [10.0, 11.0, 13.0, 16.0])
    times = from_csv(path, rate=1.0)  # 3 gaps over 6 s is 0.5/s; scaled to 1/s
    assert times == pytest.approx([0.0, 0.5, 1.5, 3.0])
    assert make_arrivals(path, 1.0, 4) == times


def test_real_azure_trace_scales_to_the_asked_rate() -> None:
    raw = from_csv("azure-conv", n=2000)
    assert raw[0] == 0.0 and raw == sorted(raw)
    scaled = from_csv("azure-conv", n=2000, rate=0.75)
    assert (len(scaled) - 1) / scaled[-1] == pytest.approx(0.75)
    assert _cv(_gaps(scaled)) == pytest.approx(_cv(_gaps(raw)))


def test_bad_csv_is_named(tmp_path: Path) -> None:
    path = tmp_path / "b.csv"
    path.write_text("t\n1\n")
    with pytest.raises(WorkloadError, match="no 'timestamp_s' column"):
        from_csv(path)
    path.write_text("timestamp_s\n1\nsoon\n")
    with pytest.raises(WorkloadError, match="line 3"):
        from_csv(path)
    with pytest.raises(WorkloadError, match="cannot scale"):
        scale_to_rate([1.0, 1.0], 2.0)


def _query(arrival: float | None) -> QuerySpec:
    return QuerySpec("q", ((CallSpec("s", 1, 1),),), arrival_s=arrival)


def test_recorded_arrivals_from_the_specs() -> None:
    assert from_specs([_query(5.0), _query(3.0), _query(9.0)]) == [2.0, 0.0, 6.0]
    with pytest.raises(WorkloadError, match="no recorded arrival"):
        from_specs([_query(1.0), _query(None)])
    mooncake = load_mooncake("mooncake")[:500]
    recorded = make_arrivals("recorded", None, 500, queries=mooncake)
    assert recorded[0] == 0.0 and recorded == sorted(recorded)
    faster = make_arrivals("recorded", 2.0, 500, queries=mooncake)
    assert 499 / faster[-1] == pytest.approx(2.0)


def test_make_arrivals_by_name() -> None:
    assert make_arrivals("poisson", 1.0, 10, seed=2) == poisson(1.0, 10, seed=2)
    assert make_arrivals("gamma", 1.0, 10, seed=2, cv=4.0) == gamma(1.0, 4.0, 10, seed=2)
    with pytest.raises(WorkloadError, match="no such file"):
        make_arrivals("weibull", 1.0, 10)
