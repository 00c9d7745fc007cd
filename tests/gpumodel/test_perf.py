"""The GPU and model catalogs and the roofline iteration-time model (pure arithmetic)."""

from __future__ import annotations

import dataclasses

import pytest

from fleetcall.errors import ConfigError
from fleetcall.gpumodel import gpus, models
from fleetcall.gpumodel.gpus import CALIBRATED, GPUConfig, UnknownGPUError, get_gpu, register_gpu
from fleetcall.gpumodel.models import ModelConfig, UnknownModelError, get_model, register_model
from fleetcall.gpumodel.perf import (
    Deployment, iteration_cost, iteration_time, kv_bytes_per_token_per_gpu, kv_capacity_tokens,
    single_request_latency,
)
from fleetcall.gpumodel.perf import _sum_max_linear

REQUIRED_GPUS = ["H200", "H100", "A100-80G", "A100-40G", "L40S", "A6000", "A10G", "L4", "RTX-4090"]


@pytest.fixture
def scratch_catalogs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registrations made by a test stay in that test."""
    monkeypatch.setattr(gpus._CATALOG, "entries", dict(gpus._CATALOG.entries))
    monkeypatch.setattr(models._CATALOG, "entries", dict(models._CATALOG.entries))


# ---- GPU catalog -----------------------------------------------------------------------------


def test_catalog_has_the_required_gpus_with_sane_specs() -> None:
    for name in REQUIRED_GPUS:
        gpu = get_gpu(name)
        assert gpu.name == name
        assert gpu.memory_gb >= 24 and gpu.mem_bw_gbs >= 300 and gpu.bf16_tflops >= 70
    assert get_gpu("H200").mem_bw_gbs > get_gpu("H100").mem_bw_gbs > get_gpu("A100-80G").mem_bw_gbs


@pytest.mark.parametrize("alias, name", [
    ("A100", "A100-80G"), ("nvidia_A100", "A100-80G"), ("a100-80gb", "A100-80G"),
    ("A100_40G", "A100-40G"), ("l40s", "L40S"), ("RTX 4090", "RTX-4090"), ("nvidia_A6000", "A6000"),
])
def test_gpu_lookup_is_case_and_punctuation_insensitive_with_aliases(alias: str, name: str) -> None:
    assert get_gpu(alias).name == name


def test_unknown_gpu_error_lists_known_names() -> None:
    with pytest.raises(UnknownGPUError) as err:
        get_gpu("V100")
    assert isinstance(err.value, ConfigError) and isinstance(err.value, KeyError)
    message = str(err.value)
    assert "'V100'" in message and "A100-80G" in message and "L40S" in message


def test_measured_gpus_are_calibrated_and_the_rest_borrow_their_family() -> None:
    assert {get_gpu(n).name for n in CALIBRATED} == {"A100-80G", "A6000", "L40S"}
    assert all(get_gpu(n).calibrated for n in CALIBRATED)
    a100_40, a100_80 = get_gpu("A100-40G").efficiency, get_gpu("A100-80G").efficiency
    assert not get_gpu("A100-40G").calibrated
    assert (a100_40.bandwidth, a100_40.compute) == (a100_80.bandwidth, a100_80.compute)
    assert get_gpu("L4").efficiency.compute == get_gpu("L40S").efficiency.compute
    # Hopper was not measured: mean of all, and the L40S's big chunk overhead is not inherited
    assert 0 < get_gpu("H100").efficiency.bandwidth < 1
    assert get_gpu("RTX-4090").efficiency.chunk_overhead_s < CALIBRATED["L40S"].chunk_overhead_s


def test_register_gpu_from_config(scratch_catalogs: None) -> None:
    spec = register_gpu(GPUConfig(name="MI300X", arch="cdna3", memory_gb=192, mem_bw_gbs=5300,
                                  bf16_tflops=1307, bandwidth_efficiency=0.6, aliases=("mi300",)))
    assert get_gpu("mi300") is spec and spec.efficiency.bandwidth == 0.6
    assert not spec.calibrated and 0 < spec.efficiency.compute < 1
    with pytest.raises(ConfigError, match="replace=True"):
        register_gpu(spec)
    register_gpu(dataclasses.replace(spec, memory_gb=256), replace=True)
    assert get_gpu("MI300X").memory_gb == 256


def test_efficiency_must_be_a_fraction() -> None:
    with pytest.raises(ConfigError):
        gpus.Efficiency(1.5, 0.5, 0.5, 0.0, 0.0)
    with pytest.raises(ConfigError):
        gpus.Efficiency(0.5, 0.5, 0.5, -1.0, 0.0)


# ---- model catalog ---------------------------------------------------------------------------


def test_model_shapes_and_kv_bytes() -> None:
    assert get_model("Llama-3.1-8B").kv_bytes_per_token == 2 * 32 * 8 * 128 * 2  # 128 KiB
    assert get_model("llama-3.1-70b").kv_bytes_per_token == 2 * 80 * 8 * 128 * 2
    assert get_model("meta-llama/Llama-3.1-70B-Instruct").name == "llama-3.1-70b"
    small = get_model("llama-3.2-1b")
    assert small.tied_embeddings and small.streamed_params == small.params
    big = get_model("llama-3.1-8b")
    assert big.streamed_params == pytest.approx(big.params - 128256 * 4096)
    assert big.weight_bytes == pytest.approx(16.06e9)


def test_model_precision_suffix() -> None:
    fp8 = get_model("llama-3.1-70b@fp8")
    assert fp8.weight_bytes_per_param == 1.0 and fp8.name == "llama-3.1-70b@fp8"
    assert get_model("llama-3.1-70b@int4").weight_bytes == pytest.approx(70.55e9 / 2)
    both = get_model("llama-3.1-8b").with_precision("fp8", kv="fp8")
    assert both.kv_bytes_per_token == get_model("llama-3.1-8b").kv_bytes_per_token / 2
    with pytest.raises(ConfigError, match="known precisions"):
        get_model("llama-3.1-8b@fp7")


def test_unknown_model_error_lists_known_names(scratch_catalogs: None) -> None:
    with pytest.raises(UnknownModelError, match="llama-3.1-8b"):
        get_model("gpt-5")
    shape = register_model(ModelConfig(name="tiny", params_b=0.1, layers=4, hidden=512, heads=8,
                                       kv_heads=8, head_dim=64, vocab=32000))
    assert get_model("TINY") is shape
    with pytest.raises(ConfigError, match="already"):
        register_model(shape)


# ---- KV capacity -----------------------------------------------------------------------------


def test_kv_capacity_is_memory_left_after_weights_over_kv_bytes() -> None:
    gpu, model = get_gpu("A100-80G"), get_model("llama-3.1-8b")
    expected = (80 * 2**30 * 0.9 - model.weight_bytes - 2**30) // model.kv_bytes_per_token
    assert kv_capacity_tokens(gpu, model) == expected
    assert kv_capacity_tokens(gpu, model, gpu_mem_util=0.95) > expected
    assert kv_capacity_tokens(gpu, model, tp=2) > 2 * expected  # weights split too


def test_weights_that_do_not_fit_name_the_tp_that_would() -> None:
    with pytest.raises(ConfigError, match=r"does not fit on 1x A6000.*tp >= 4"):
        kv_capacity_tokens("A6000", "llama-3.1-70b")
    assert kv_capacity_tokens("A6000", "llama-3.1-70b", tp=4) > 50_000
    with pytest.raises(ConfigError, match="does not fit"):
        Deployment.of("L4", "llama-3.1-70b")


def test_kv_heads_are_replicated_beyond_the_kv_head_count() -> None:
    model = get_model("llama-3.1-8b")  # 8 KV heads
    assert kv_bytes_per_token_per_gpu(model, 8) == model.kv_bytes_per_token / 8
    assert kv_bytes_per_token_per_gpu(model, 16) == model.kv_bytes_per_token / 8


# ---- iteration time --------------------------------------------------------------------------


def test_iteration_time_is_monotone_in_batch_context_and_prefill() -> None:
    def t(**kw: int) -> float:
        return iteration_time("A100", "llama-3.1-8b", **kw)

    batches = [t(decode_batch=b, decode_context_tokens=1000 * b) for b in (1, 8, 64, 256, 1024)]
    assert batches == sorted(batches) and batches[-1] > batches[0]
    contexts = [t(decode_batch=8, decode_context_tokens=c) for c in (0, 10**4, 10**5, 10**6)]
    assert contexts == sorted(contexts) and contexts[-1] > contexts[0]
    prefills = [t(decode_batch=4, decode_context_tokens=4000, prefill_tokens=n)
                for n in (0, 128, 1024, 4096, 8192)]
    assert prefills == sorted(prefills) and prefills[-1] > prefills[0]


def test_small_decode_is_memory_bound_and_big_prefill_compute_bound() -> None:
    decode = iteration_cost("H100", "llama-3.1-8b", decode_batch=1, decode_context_tokens=500)
    assert decode.memory_bound
    prefill = iteration_cost("H100", "llama-3.1-8b", prefill_tokens=4096)
    assert not prefill.memory_bound
    gpu = get_gpu("H100")
    expected = 2 * get_model("llama-3.1-8b").streamed_params * 4096 / (
        gpu.flops * gpu.efficiency.compute)
    assert prefill.compute_s == pytest.approx(expected, rel=0.2)  # attention adds a little


def test_decode_step_is_weights_over_bandwidth_plus_overhead() -> None:
    gpu, model = get_gpu("A6000"), get_model("llama-3.1-70b")
    eff = gpu.efficiency
    step = iteration_time(gpu, model, decode_batch=1, decode_context_tokens=0, tp=4)
    weights = model.streamed_weight_bytes / 4 / (gpu.mem_bw * eff.bandwidth)
    assert step == pytest.approx(eff.iteration_overhead_s + weights)
    assert 0.05 < step < 0.07  # the HEXGEN profile's ~59 ms per token


def test_tensor_parallel_speeds_up_decode_and_continuations_cost_extra() -> None:
    one = iteration_time("A100", "llama-3.1-8b", decode_batch=1, decode_context_tokens=100)
    four = iteration_time("A100", "llama-3.1-8b", decode_batch=1, decode_context_tokens=100, tp=4)
    assert four < one
    plain = iteration_time("L40S", "llama-3.1-8b", prefill_tokens=512, prefill_context_tokens=2048)
    continued = iteration_time("L40S", "llama-3.1-8b", prefill_tokens=512,
                               prefill_context_tokens=2048, continued_prefills=1)
    assert continued - plain == pytest.approx(get_gpu("L40S").efficiency.chunk_overhead_s)
    with pytest.raises(ValueError):
        iteration_time("A100", "llama-3.1-8b", decode_batch=-1)
    with pytest.raises(ConfigError):
        iteration_time("A100", "llama-3.1-8b", decode_batch=1, tp=0)


# ---- a lone request --------------------------------------------------------------------------


def _stepped(gpu: str, model: str, inp: int, out: int, *, tp: int, cached: int, chunk: int
             ) -> tuple[float, float]:
    """(total, ttft) by summing iteration_time iteration by iteration."""
    g = get_gpu(gpu)
    ttft, done, first = g.efficiency.request_overhead_s, cached, True
    while done < inp:
        n = min(chunk, inp - done)
        ttft += iteration_time(g, model, prefill_tokens=n, prefill_context_tokens=done,
                               continued_prefills=0 if first else 1, tp=tp)
        done, first = done + n, False
    decode = sum(iteration_time(g, model, decode_batch=1, decode_context_tokens=inp + j, tp=tp)
                 for j in range(1, out))
    return ttft + decode, ttft


@pytest.mark.parametrize("gpu, model, inp, out, tp, cached, chunk", [
    ("A100", "llama-3.1-8b", 5000, 300, 4, 0, 2048),
    ("L40S", "llama-3.1-70b", 3000, 50, 4, 2999, 2048),
    ("H100", "llama-3.2-1b", 100, 2000, 1, 0, 512),
    ("RTX-4090", "llama-3.2-1b", 20000, 400, 1, 0, 8192),
    ("A6000", "llama-3.1-8b", 10, 1, 2, 0, 2048),
])
def test_single_request_latency_matches_the_iteration_sum(
        gpu: str, model: str, inp: int, out: int, tp: int, cached: int, chunk: int) -> None:
    lat = single_request_latency(gpu, model, inp, out, tp=tp, cached_tokens=cached,
                                 max_prefill_chunk=chunk)
    total, ttft = _stepped(gpu, model, inp, out, tp=tp, cached=cached, chunk=chunk)
    assert lat.ttft_s == pytest.approx(ttft, rel=1e-9)
    assert lat.total_s == pytest.approx(total, rel=1e-9)
    assert lat.tpot_s == pytest.approx((total - ttft) / (out - 1) if out > 1 else 0.0)


def test_closed_form_sum_handles_a_roofline_crossing() -> None:
    cases = [((1.0, 0.1), (0.0, 0.3), 0.0, 20), ((5.0, -0.2), (1.0, 0.1), 3.0, 40),
             ((1.0, 0.0), (2.0, 0.0), 0.0, 5), ((0.0, 1.0), (100.0, 0.0), -50.0, 10),
             ((1.0, 1.0), (1.0, 1.0), 2.0, 0)]
    for m, c, x0, steps in cases:
        brute = sum(max(m[0] + m[1] * (x0 + j), c[0] + c[1] * (x0 + j))
                    for j in range(1, steps + 1))
        assert _sum_max_linear(m, c, x0, steps) == pytest.approx(brute)


def test_single_request_latency_unpacks_and_validates() -> None:
    total, ttft, tpot = Deployment.of("A100", "llama-3.1-8b").single_request_latency(1000, 10)
    assert total > ttft > 0 and tpot > 0
    with pytest.raises(ValueError):
        single_request_latency("A100", "llama-3.1-8b", 0, 10)
    cached = single_request_latency("A100", "llama-3.1-8b", 8000, 10, cached_tokens=10**6)
    assert cached.ttft_s < single_request_latency("A100", "llama-3.1-8b", 8000, 10).ttft_s


def test_deployment_delegates_with_its_tp() -> None:
    d = Deployment.of("A6000", "llama-3.1-70b", tp=4)
    assert d.kv_capacity_tokens() == kv_capacity_tokens("A6000", "llama-3.1-70b", tp=4)
    assert d.iteration_time(decode_batch=2, decode_context_tokens=10) == iteration_time(
        "A6000", "llama-3.1-70b", decode_batch=2, decode_context_tokens=10, tp=4)
