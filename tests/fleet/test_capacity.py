"""The first cut: tensor-parallel degrees within memory, and each endpoint kind's capacity."""

from __future__ import annotations

import pytest

from fleetcall.bench.workloads import load_workload
from fleetcall.errors import ConfigError
from fleetcall.fleet.capacity import EndpointKind, endpoint_capacity, tp_options
from fleetcall.gpumodel.perf import Deployment

MODEL = "llama-3.1-70b"
TRACE = tuple(load_workload("trace1"))
REF = Deployment.of("A100-80G", MODEL, tp=4)


def test_tp_options_are_the_degrees_whose_memory_holds_the_weights_and_the_longest_call():
    assert tp_options("A100-80G", MODEL, TRACE) == [2, 4, 8]   # 141 GB of weights on 80 GB cards
    assert tp_options("L40S", MODEL, TRACE) == [4, 8]          # 48 GB cards
    assert tp_options("A100-80G", "llama-3.1-8b", TRACE) == [1, 2, 4, 8]


def test_a_model_that_fits_no_degree_is_a_config_error_naming_gpu_and_model():
    with pytest.raises(ConfigError, match="llama-3.1-70b fits no tensor-parallel degree .* of A10G"):
        tp_options("A10G", MODEL, TRACE, degrees=(1, 2))


def _cap(gpu: str, tp: int, scale: float = 3.0):
    return endpoint_capacity(EndpointKind(gpu, tp), MODEL, TRACE, reference=REF, slo_scale=scale)


def test_the_reference_itself_runs_at_speed_one_and_faster_hardware_serves_more():
    a100 = _cap("A100-80G", 4)
    assert a100.speed == pytest.approx(1.0) and a100.in_budget == 1.0
    assert _cap("A100-80G", 8).speed < 1.0 < _cap("A6000", 4).speed
    assert _cap("H100", 4).slo_qps > a100.slo_qps > _cap("A6000", 4).slo_qps > 0
    # usable load shrinks as the endpoint gets slower relative to the deadline
    assert _cap("A100-80G", 4, scale=1.5).usable_load < a100.usable_load


def test_an_endpoint_too_slow_for_the_deadline_contributes_nothing():
    slow = _cap("A6000", 4, scale=2.0)  # 2.6x slower than the reference, budget 2x
    assert slow.usable_load == 0.0 and slow.slo_qps == 0.0 and slow.in_budget < 1.0


def test_kv_memory_limits_the_batch():
    small = _cap("A100-80G", 2)
    assert small.batch < 16 and small.kv_tokens < _cap("A100-80G", 4).kv_tokens
