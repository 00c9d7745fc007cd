"""The shared simulation runner: mixed tensor-parallel degrees, the early stop, progress."""

from __future__ import annotations

import pytest

from fleetcall.bench.workloads import load_workload, repeat_queries
from fleetcall.errors import ConfigError
from fleetcall.fleet.runner import StopRule, Workload, simulate

MODEL = "llama-3.1-8b"


def _work(n: int, rate: float) -> Workload:
    return Workload.build(repeat_queries(load_workload("trace1"), n), rate=rate, slo_scale=3.0,
                          model=MODEL, reference=("A100-80G", 1))


def test_each_endpoint_gets_its_own_gpu_and_tp():
    result = simulate(_work(6, 0.01), [("A100-80G", 1), ("L40S", 2)])
    assert not result.stopped and result.summary is not None
    assert set(result.summary["utilisation"]) == {"A100-80G-0", "L40S-1"}
    assert result.summary["completed"] == 6


def test_an_overloaded_cluster_is_stopped_once_it_cannot_reach_the_target():
    work = _work(40, 0.2)
    seen = []
    stopped = simulate(work, [("L40S", 1)], stop=StopRule(0.95), on_query=lambda: seen.append(1))
    whole = simulate(work, [("L40S", 1)])
    allowed = StopRule(0.95).allowed_misses(40)
    assert allowed == 2
    assert stopped.stopped and stopped.summary is None and stopped.misses == allowed + 1
    assert stopped.attainment is None and stopped.attainment_max < 0.95
    assert stopped.sim_s < whole.sim_s and len(seen) < 40
    # the stop is never wrong: the whole run misses the target too
    assert whole.attainment is not None and whole.attainment <= stopped.attainment_max


def test_a_run_that_meets_the_target_is_not_stopped_and_counts_every_query():
    work = _work(8, 0.005)
    seen = []
    result = simulate(work, [("A100-80G", 1), ("A100-80G", 1)], stop=StopRule(0.95),
                      on_query=lambda: seen.append(1))
    assert not result.stopped and result.attainment == 1.0 and len(seen) == 8


def test_bad_clusters_and_workloads_are_config_errors():
    with pytest.raises(ConfigError, match="no endpoint"):
        simulate(_work(2, 0.01), [])
    with pytest.raises(ConfigError, match="rate"):
        _work(2, 0.0)
    with pytest.raises(ConfigError):
        simulate(_work(2, 0.01), [("Z100", 1)])
