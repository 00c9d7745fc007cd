"""The fleet planner's first cut: what one endpoint of each GPU type and tensor-parallel degree
can serve of a workload, from the roofline performance model alone (no simulation).

Melange profiles each GPU's throughput per request size before it solves its bin packing; this
is the same step computed from :mod:`fleetcall.gpumodel.perf` for a workload of agentic
queries (every call of every query counts):

- ``gpu_s_per_query``: seconds of the endpoint's time one query takes at full batch: each
  call's prefill alone (compute-bound, one prompt at a time) plus its decode steps at the batch
  the endpoint sustains (``slots``, or fewer when the KV cache cannot hold that many calls of the
  workload's mean length), each step's time shared by the batch.
- ``speed``: the query's unloaded latency here over its unloaded latency on the deadline's
  reference deployment (mean over queries; < 1 is faster than the reference).
- ``usable_load``: the share of that throughput usable within the deadlines. A query served
  ``speed`` times slower than the reference with deadline ``slo_scale`` x its reference latency
  may be stretched ``slo_scale / speed`` times by queueing; with processor sharing's stretch
  ``1 / (1 - load)`` that allows ``load <= 1 - speed / slo_scale`` (0 when the endpoint is too
  slow even alone).
- ``slo_qps = usable_load / gpu_s_per_query``: queries per second it serves within the SLO.

A mix's estimated capacity is the sum over its endpoints; its *headroom* is that over the rate.
The estimate is crude on purpose (it ignores prefix caching, stage structure and the
dispatcher): it orders and prunes mixes; simulation decides (:mod:`fleetcall.fleet.search`).

    >>> from fleetcall.bench.workloads import load_workload
    >>> from fleetcall.gpumodel.perf import Deployment
    >>> ref = Deployment.of("A100-80G", "llama-3.1-70b", tp=4)
    >>> cap = endpoint_capacity(EndpointKind("A100-80G", 4), "llama-3.1-70b", load_workload("trace1"),
    ...                         reference=ref, slo_scale=3.0)
    >>> round(cap.speed, 3), 0 < cap.slo_qps < 1 / cap.gpu_s_per_query
    (1.0, True)
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

from fleetcall.bench.deadlines import unloaded_latency
from fleetcall.bench.workloads import QuerySpec
from fleetcall.errors import ConfigError
from fleetcall.gpumodel.gpus import get_gpu
from fleetcall.gpumodel.models import get_model
from fleetcall.gpumodel.perf import Deployment, kv_capacity_tokens

TP_DEGREES: tuple[int, ...] = (1, 2, 4, 8)  # tensor-parallel degrees the planner considers


@dataclass(frozen=True, slots=True, order=True)
class EndpointKind:
    """One endpoint's hardware: ``tp`` GPUs of type ``gpu`` (a catalog name) serving the model."""

    gpu: str
    tp: int

    @property
    def label(self) -> str:
        """``"A100-80G/tp4"``."""
        return f"{self.gpu}/tp{self.tp}"


@dataclass(frozen=True, slots=True)
class Capacity:
    """The first-cut figures of one endpoint kind for one workload (see the module doc)."""

    kind: EndpointKind
    kv_tokens: int            # KV cache the endpoint holds, tokens
    batch: int                # calls decoding together at full load (slots, or what the KV holds)
    gpu_s_per_query: float    # endpoint seconds one query takes at full batch
    speed: float              # unloaded latency here / on the reference (mean over queries)
    in_budget: float          # share of queries whose unloaded latency here is within the deadline
    usable_load: float        # share of the throughput usable within the SLO, in [0, 1)
    slo_qps: float            # queries/s served within the SLO: usable_load / gpu_s_per_query


def tp_options(gpu: str, model: str, queries: Sequence[QuerySpec],
               degrees: Sequence[int] = TP_DEGREES) -> list[int]:
    """The tensor-parallel degrees (of ``degrees``) at which ``model`` fits on ``gpu`` with a KV
    cache holding the workload's longest call (prompt + output): the memory limits.

    Raises ConfigError (naming the GPU and the model) if none does.
    """
    longest = max(c.prompt_tokens + c.output_tokens for q in queries for c in q.calls)
    fits = []
    reasons = []
    for tp in degrees:
        try:
            kv = kv_capacity_tokens(gpu, model, tp=tp)
        except ConfigError as exc:
            reasons.append(f"tp={tp}: {exc}")
            continue
        if kv >= longest:
            fits.append(tp)
        else:
            reasons.append(f"tp={tp}: KV cache of {kv} tokens cannot hold the longest call "
                           f"({longest} tokens)")
    if not fits:
        raise ConfigError(f"{get_model(model).name} fits no tensor-parallel degree "
                          f"({', '.join(map(str, degrees))}) of {get_gpu(gpu).name} for this "
                          f"workload: " + "; ".join(reasons[-1:]))
    return fits


@functools.lru_cache(maxsize=1 << 16)
def _prefill_s(deployment: Deployment, prompt_tokens: int) -> float:
    """Seconds of a prompt's prefill iterations alone (no request overhead, no decode)."""
    lone = deployment.single_request_latency(prompt_tokens, 1)
    return lone.ttft_s - deployment.gpu.efficiency.request_overhead_s


def endpoint_capacity(kind: EndpointKind, model: str, queries: Sequence[QuerySpec], *,
                      reference: Deployment, slo_scale: float, slots: int = 16) -> Capacity:
    """The first-cut :class:`Capacity` of one endpoint of ``kind`` for ``queries``.

    reference: the deployment the deadlines are relative to (budget = ``slo_scale`` x the query's
        unloaded latency there). slots: calls an endpoint runs at once.
    Raises ConfigError if the model does not fit ``kind`` or ``queries`` is empty.
    """
    if not queries:
        raise ConfigError("no queries to estimate capacity for")
    deployment = Deployment.of(kind.gpu, model, tp=kind.tp)
    calls = [c for q in queries for c in q.calls]
    kv = deployment.kv_capacity_tokens()
    mean_context = sum(c.prompt_tokens + c.output_tokens for c in calls) / len(calls)
    batch = max(1, min(slots, int(kv // mean_context)))
    # One decode step of a full batch, each request attending to a mean context halfway through
    # its answer: its time is shared by the batch.
    mid_context = sum(c.prompt_tokens + c.output_tokens / 2 for c in calls) / len(calls)
    step_s = deployment.iteration_time(decode_batch=batch, decode_context_tokens=int(batch * mid_context))
    busy = sum(_prefill_s(deployment, c.prompt_tokens) + (c.output_tokens - 1) * step_s / batch
               for c in calls)
    gpu_s_per_query = busy / len(queries)
    here = [unloaded_latency(q, deployment) for q in queries]
    there = [unloaded_latency(q, reference) for q in queries]
    speed = sum(a / b for a, b in zip(here, there)) / len(queries)
    in_budget = sum(1 for a, b in zip(here, there) if a <= slo_scale * b) / len(queries)
    usable = max(0.0, 1.0 - speed / slo_scale)
    return Capacity(kind, kv, batch, gpu_s_per_query, speed, in_budget, usable,
                    usable / gpu_s_per_query)
