"""Roofline model of one continuous-batching engine iteration, and of a lone request.

Pure arithmetic, no clock and no I/O: the emulated GPUs ask it how long an iteration takes, the
dispatcher asks it what a call will cost. One engine iteration (vLLM-style continuous batching)
runs one decode step for every running request plus a chunk of pending prefill; per GPU of a
tensor-parallel group of ``tp``::

    memory  = weights/tp / (bw * e_bw) + KV bytes touched/tp / (bw * e_kv)
    compute = (2 * streamed params * tokens + 4 * layers * heads * head_dim * attention pairs)/tp
              / (bf16 FLOP/s * e_c)
    time    = iteration overhead + max(memory, compute)

Weights are read once per iteration whatever the batch, so small decode batches are bound by
memory and large prefill chunks by compute; the efficiency factors ``e_*`` and the overheads are
the GPU's calibrated :class:`~fleetcall.gpumodel.gpus.Efficiency`. Example::

    >>> d = Deployment.of("A100", "llama-3.1-8b")
    >>> d.iteration_time(decode_batch=1, decode_context_tokens=1000) < 0.02
    True

:func:`single_request_latency` walks one request alone through the engine (prefill in chunks of
``max_prefill_chunk`` tokens, then ``output - 1`` decode steps) in closed form, so it is cheap
enough to call per dispatch decision.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

from fleetcall.errors import ConfigError
from fleetcall.gpumodel.gpus import GPUSpec, get_gpu
from fleetcall.gpumodel.models import ModelShape, get_model

ACTIVATION_RESERVE_GIB = 1.0  # per GPU: activations and CUDA graphs, kept out of the KV cache
DEFAULT_PREFILL_CHUNK = 2048  # tokens of prefill per iteration (vLLM's chunked-prefill default)


@dataclass(frozen=True, slots=True)
class IterationCost:
    """The parts of one iteration's time, seconds."""

    memory_s: float    # moving weights and KV cache at the achieved bandwidth
    compute_s: float   # the iteration's FLOPs at the achieved throughput
    overhead_s: float  # fixed per-iteration cost

    @property
    def total_s(self) -> float:
        return self.overhead_s + max(self.memory_s, self.compute_s)

    @property
    def memory_bound(self) -> bool:
        return self.memory_s >= self.compute_s


class RequestLatency(NamedTuple):
    """A lone request's latency, seconds (a tuple: ``total, ttft, tpot = ...`` works)."""

    total_s: float  # arrival to last token
    ttft_s: float   # arrival to first token (request overhead + every prefill chunk)
    tpot_s: float   # mean time of one decode step after the first token (0 if output <= 1)


@dataclass(frozen=True, slots=True)
class _Rates:
    """Per-unit costs of one deployment (seconds), precomputed for the closed forms."""

    weights_s: float    # streaming the weights once
    kv_token_s: float   # reading or writing one token of KV cache
    token_s: float      # matmul FLOPs of one token
    pair_s: float       # attention FLOPs of one (query, context token) pair
    overhead_s: float   # fixed per iteration
    chunk_s: float      # extra per prefill chunk that continues a prompt


def kv_bytes_per_token_per_gpu(model: ModelShape, tp: int = 1) -> float:
    """KV bytes one context token takes on each GPU of a TP group (KV heads are split over the
    group; when ``tp`` exceeds the KV heads each GPU keeps one replicated head, as vLLM does)."""
    return model.kv_bytes_per_token * max(1.0 / tp, 1.0 / model.kv_heads)


def _rates(gpu: GPUSpec, model: ModelShape, tp: int) -> _Rates:
    if tp < 1:
        raise ConfigError(f"tensor parallel degree must be >= 1, got {tp}")
    eff = gpu.efficiency
    bw, flops = gpu.mem_bw, gpu.flops * eff.compute
    return _Rates(
        weights_s=model.streamed_weight_bytes / tp / (bw * eff.bandwidth),
        kv_token_s=kv_bytes_per_token_per_gpu(model, tp) / (bw * eff.kv_bandwidth),
        token_s=model.flops_per_token / tp / flops,
        pair_s=model.attention_flops_per_pair / tp / flops,
        overhead_s=eff.iteration_overhead_s,
        chunk_s=eff.chunk_overhead_s,
    )


def iteration_cost(gpu: GPUSpec | str, model: ModelShape | str, *, decode_batch: int = 0,
                   decode_context_tokens: int = 0, prefill_tokens: int = 0,
                   prefill_context_tokens: int = 0, continued_prefills: int = 0,
                   tp: int = 1) -> IterationCost:
    """The roofline parts of one iteration; see :func:`iteration_time` for the arguments."""
    counts = (decode_batch, decode_context_tokens, prefill_tokens, prefill_context_tokens,
              continued_prefills)
    if min(counts) < 0:
        raise ValueError("token and batch counts must be >= 0")
    r = _rates(get_gpu(gpu), get_model(model), tp)
    n = prefill_tokens
    kv_tokens = decode_context_tokens + prefill_context_tokens + n
    pairs = decode_context_tokens + n * prefill_context_tokens + n * (n + 1) / 2
    return IterationCost(
        memory_s=r.weights_s + r.kv_token_s * kv_tokens,
        compute_s=r.token_s * (decode_batch + n) + r.pair_s * pairs,
        overhead_s=r.overhead_s + r.chunk_s * continued_prefills,
    )


def iteration_time(gpu: GPUSpec | str, model: ModelShape | str, *, decode_batch: int = 0,
                   decode_context_tokens: int = 0, prefill_tokens: int = 0,
                   prefill_context_tokens: int = 0, continued_prefills: int = 0,
                   tp: int = 1) -> float:
    """Seconds of one engine iteration.

    decode_batch: requests that each decode one token this iteration.
    decode_context_tokens: sum over those requests of their context (KV tokens attended).
    prefill_tokens: prompt tokens computed this iteration (the prefill chunk).
    prefill_context_tokens: tokens already in the KV cache before the chunk, that the chunk
        attends to (exact for one prefilling request; for several, pass the sums).
    continued_prefills: prefilling requests whose earlier chunks ran in earlier iterations
        (each costs the GPU's ``chunk_overhead_s``; a prefix-cache hit is not a continuation).
    tp: tensor-parallel degree (weights, KV and FLOPs split over ``tp`` GPUs).
    """
    return iteration_cost(gpu, model, decode_batch=decode_batch,
                          decode_context_tokens=decode_context_tokens,
                          prefill_tokens=prefill_tokens,
                          prefill_context_tokens=prefill_context_tokens,
                          continued_prefills=continued_prefills, tp=tp).total_s


def _prefill_time(r: _Rates, new_tokens: int, context: int, chunk: int) -> float:
    """Seconds of the prefill iterations of ``new_tokens`` after ``context`` cached tokens."""
    total, continued = 0.0, False  # the first chunk continues nothing
    while new_tokens > 0:
        n = min(chunk, new_tokens)
        memory = r.weights_s + r.kv_token_s * (context + n)
        compute = r.token_s * n + r.pair_s * (n * context + n * (n + 1) / 2)
        total += r.overhead_s + max(memory, compute) + (r.chunk_s if continued else 0.0)
        continued = True
        context += n
        new_tokens -= n
    return total


def _sum_linear(a: float, b: float, x0: float, first: int, last: int) -> float:
    """Sum of a + b * (x0 + j) for j in [first, last] (0 if the range is empty)."""
    n = last - first + 1
    if n <= 0:
        return 0.0
    return n * (a + b * x0) + b * (first + last) * n / 2


def _sum_max_linear(m: tuple[float, float], c: tuple[float, float], x0: float, steps: int) -> float:
    """Sum over j = 1..steps of max(m0 + m1*x, c0 + c1*x), x = x0 + j, in closed form.

    The difference of two lines changes sign at most once, so the sum splits into two
    arithmetic series at the crossing.
    """
    (m0, m1), (c0, c1) = m, c
    if steps <= 0:
        return 0.0
    slope = m1 - c1
    if slope == 0.0:
        line = m if m0 >= c0 else c
        return _sum_linear(line[0], line[1], x0, 1, steps)
    cross = (c0 - m0) / slope - x0  # j where the lines meet
    split = min(max(math.floor(cross), 0), steps)  # j <= split on one side, > split on the other
    low, high = (c, m) if slope > 0 else (m, c)   # which line is larger below / above the crossing
    return (_sum_linear(low[0], low[1], x0, 1, split)
            + _sum_linear(high[0], high[1], x0, split + 1, steps))


def single_request_latency(gpu: GPUSpec | str, model: ModelShape | str, input_tokens: int,
                           output_tokens: int, *, tp: int = 1, cached_tokens: int = 0,
                           max_prefill_chunk: int = DEFAULT_PREFILL_CHUNK) -> RequestLatency:
    """Latency of one request running alone: prefill in chunks, then ``output - 1`` decodes.

    cached_tokens: prompt tokens found in the prefix cache (at least the last prompt token is
        always computed, as in vLLM), so prefill computes only the rest but attends to them.
    The first token comes out of the last prefill iteration; decode step ``j`` attends to
    ``input + j`` tokens.
    """
    if input_tokens < 1 or output_tokens < 1:
        raise ValueError("input_tokens and output_tokens must be >= 1")
    if max_prefill_chunk < 1:
        raise ValueError("max_prefill_chunk must be >= 1")
    g = get_gpu(gpu)
    r = _rates(g, get_model(model), tp)
    cached = min(max(cached_tokens, 0), input_tokens - 1)
    ttft = g.efficiency.request_overhead_s + _prefill_time(r, input_tokens - cached, cached,
                                                           max_prefill_chunk)
    steps = output_tokens - 1
    decode = steps * r.overhead_s + _sum_max_linear(
        (r.weights_s, r.kv_token_s), (r.token_s, r.pair_s), float(input_tokens), steps)
    return RequestLatency(total_s=ttft + decode, ttft_s=ttft,
                          tpot_s=decode / steps if steps else 0.0)


def kv_capacity_tokens(gpu: GPUSpec | str, model: ModelShape | str, *, tp: int = 1,
                       gpu_mem_util: float = 0.9) -> int:
    """Tokens of KV cache a deployment holds: memory left after weights, over KV bytes per token.

    Like vLLM, ``gpu_mem_util`` of each GPU's memory is the budget; weights (split over ``tp``)
    and an activation reserve come out of it. Raises :class:`ConfigError` if the weights do
    not fit, naming the smallest TP degree that would.
    """
    if not 0.0 < gpu_mem_util <= 1.0:
        raise ConfigError(f"gpu_mem_util must be in (0, 1], got {gpu_mem_util}")
    g, m = get_gpu(gpu), get_model(model)
    free = _free_kv_bytes(g, m, tp, gpu_mem_util)
    if free <= 0:
        fits = [n for n in (1, 2, 4, 8, 16) if _free_kv_bytes(g, m, n, gpu_mem_util) > 0]
        hint = f"use tp >= {fits[0]}" if fits else "it does not fit even with tp=16"
        raise ConfigError(
            f"{m.name} ({m.weight_bytes / 1e9:.1f} GB of weights) does not fit on {tp}x {g.name} "
            f"({g.memory_gb:g} GiB at gpu_mem_util={gpu_mem_util}): {hint}")
    return int(free // kv_bytes_per_token_per_gpu(m, tp))


def _free_kv_bytes(gpu: GPUSpec, model: ModelShape, tp: int, util: float) -> float:
    reserve = ACTIVATION_RESERVE_GIB * 2**30
    return gpu.memory_bytes * util - model.weight_bytes / tp - reserve


@dataclass(frozen=True, slots=True)
class Deployment:
    """One model served on ``tp`` GPUs of one type: what an emulated endpoint is made of."""

    gpu: GPUSpec
    model: ModelShape
    tp: int = 1                                   # tensor-parallel degree
    gpu_mem_util: float = 0.9                     # fraction of each GPU's memory vLLM may use
    max_prefill_chunk: int = DEFAULT_PREFILL_CHUNK  # prefill tokens per iteration

    @classmethod
    def of(cls, gpu: GPUSpec | str, model: ModelShape | str, *, tp: int = 1,
           gpu_mem_util: float = 0.9,
           max_prefill_chunk: int = DEFAULT_PREFILL_CHUNK) -> "Deployment":
        """A deployment from catalog names (checks that the weights fit)."""
        d = cls(get_gpu(gpu), get_model(model), tp, gpu_mem_util, max_prefill_chunk)
        d.kv_capacity_tokens()
        return d

    def kv_capacity_tokens(self) -> int:
        return kv_capacity_tokens(self.gpu, self.model, tp=self.tp, gpu_mem_util=self.gpu_mem_util)

    def iteration_time(self, *, decode_batch: int = 0, decode_context_tokens: int = 0,
                       prefill_tokens: int = 0, prefill_context_tokens: int = 0,
                       continued_prefills: int = 0) -> float:
        return iteration_time(self.gpu, self.model, decode_batch=decode_batch,
                              decode_context_tokens=decode_context_tokens,
                              prefill_tokens=prefill_tokens,
                              prefill_context_tokens=prefill_context_tokens,
                              continued_prefills=continued_prefills, tp=self.tp)

    def single_request_latency(self, input_tokens: int, output_tokens: int, *,
                               cached_tokens: int = 0) -> RequestLatency:
        return single_request_latency(self.gpu, self.model, input_tokens, output_tokens,
                                      tp=self.tp, cached_tokens=cached_tokens,
                                      max_prefill_chunk=self.max_prefill_chunk)


def default_tp(gpu: GPUSpec | str, model: ModelShape | str) -> int:
    """The smallest tensor-parallel degree in (1, 2, 4, 8) that leaves at least 10% of vLLM's
    memory budget (``gpu_mem_util`` 0.9 of each GPU) for the KV cache: weights that barely fit
    leave too little cache to batch. Raises :class:`ConfigError` if even tp=8 does not.

        >>> default_tp("A100-80G", "llama-3.1-70b")
        4
    """
    g, m = get_gpu(gpu), get_model(model)
    budget = g.memory_bytes * 0.9
    for tp in (1, 2, 4, 8):
        if _free_kv_bytes(g, m, tp, 0.9) >= 0.1 * budget:
            return tp
    raise ConfigError(f"{m.name} ({m.weight_bytes / 1e9:.1f} GB of weights) leaves under 10% of "
                      f"the memory budget for KV cache even on 8x {g.name}")
