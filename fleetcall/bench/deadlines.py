"""Deadlines of benchmark queries, and the predicted work left in a query.

A deadline here is a budget in seconds after the query's arrival (the replay adds the arrival).
Two definitions:

- :func:`unloaded_deadlines` (the default of ``fleetcall bench scheduler``): ``scale`` x the
  query's unloaded latency -- its stages one after another, each as long as its slowest call,
  every call served alone (no queueing, no batching, no prefix cache) on the reference
  deployment, the FASTEST of the pool (:func:`fastest_deployment`). So ``scale = 1`` is the best
  the pool could ever do for that query, and every query gets a budget that fits its own shape.
- :func:`paper_deadlines`, HEXGEN-TEXT2SQL's: ``scale`` x the sum, over the steps of a *standard
  workflow*, of each step's average latency; one budget for every query. As in the paper's
  simulator: a step's latency is averaged over the pool's deployments (duplicates count, as
  its GPU list does) and here also over every call of that step in the workload (the paper
  uses the latency of the step's mean lengths); a parallel stage counts once. The standard
  workflow is the paper's (:data:`HEXGEN_STANDARD_WORKFLOW`, 4 revise rounds) when the
  workload has all its steps, else the workload's most common sequence of stage steps.

``scale`` may be a mapping ``tenant -> scale`` for per-tenant service classes.

    >>> from fleetcall.bench.workloads import CallSpec, QuerySpec
    >>> from fleetcall.gpumodel.perf import Deployment
    >>> a100 = Deployment.of("A100-80G", "llama-3.1-8b")
    >>> q = QuerySpec("q", ((CallSpec("s", 100, 10),), (CallSpec("s", 100, 10),) * 2))
    >>> unloaded_latency(q, a100) == 2 * call_latency(CallSpec("s", 100, 10), a100)
    True
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Mapping, Sequence

from fleetcall.bench.workloads import CallSpec, QuerySpec
from fleetcall.errors import ConfigError
from fleetcall.gpumodel.perf import Deployment

# The standard workflow of the paper's simulator (Hexgen-Flow, simulator/core/request.py): one
# entry per stage, the parallel stages (generate_candidate, evaluate) once each.
HEXGEN_STANDARD_WORKFLOW: tuple[str, ...] = (
    "Information Retriever", "extract_keywords", "Information Retriever",
    "Information Retriever", "Information Retriever", "generate_candidate_llama-agent",
    "revise", "revise", "revise", "revise", "unit_tester", "generate_unit_test", "unit_tester",
    "evaluate", "unit_tester",
)

Scale = float | Mapping[str, float]


@functools.lru_cache(maxsize=1 << 16)
def _latency(deployment: Deployment, prompt_tokens: int, output_tokens: int) -> float:
    return deployment.single_request_latency(prompt_tokens, output_tokens).total_s


def call_latency(call: CallSpec, deployment: Deployment) -> float:
    """Seconds ``call`` takes alone on ``deployment`` (memoised: replays ask per call)."""
    return _latency(deployment, call.prompt_tokens, call.output_tokens)


def stage_latencies(query: QuerySpec, deployment: Deployment) -> tuple[float, ...]:
    """Unloaded seconds of each stage: its slowest call, the calls running side by side."""
    return tuple(max(call_latency(c, deployment) for c in stage) for stage in query.stages)


def unloaded_latency(query: QuerySpec, deployment: Deployment) -> float:
    """Seconds ``query`` takes alone on ``deployment``: its stages one after another."""
    return sum(stage_latencies(query, deployment))


def remaining_work(query: QuerySpec, stage_index: int, deployment: Deployment) -> float:
    """Predicted unloaded seconds of the stages after ``stage_index`` (``remaining_work_s``)."""
    return sum(stage_latencies(query, deployment)[stage_index + 1:])


def fastest_deployment(deployments: Sequence[Deployment],
                       queries: Sequence[QuerySpec]) -> Deployment:
    """The deployment that serves the workload's queries fastest, alone (sum of unloaded
    latencies; the first such in pool order on ties)."""
    if not deployments:
        raise ConfigError("the pool has no deployments")
    return min(deployments, key=lambda d: sum(unloaded_latency(q, d) for q in queries))


def _scale_for(scale: Scale, tenant: str) -> float:
    value = scale.get(tenant) if isinstance(scale, Mapping) else scale
    if value is None:
        raise ConfigError(f"no deadline scale for tenant {tenant!r} "
                          f"(scales given for: {', '.join(sorted(scale) if isinstance(scale, Mapping) else ())})")
    if not value > 0:
        raise ConfigError(f"deadline scale must be > 0, got {value!r} for tenant {tenant!r}")
    return float(value)


def unloaded_deadlines(queries: Sequence[QuerySpec], deployments: Sequence[Deployment],
                       scale: Scale) -> list[float]:
    """Per query, ``scale`` x its unloaded latency on the pool's fastest deployment (seconds)."""
    reference = fastest_deployment(deployments, queries)
    return [_scale_for(scale, q.tenant) * unloaded_latency(q, reference) for q in queries]


def step_latencies(queries: Sequence[QuerySpec],
                   deployments: Sequence[Deployment]) -> dict[str, float]:
    """Per step, the mean over the workload's calls of that step and over the pool's
    deployments of the call's unloaded latency (seconds)."""
    if not deployments:
        raise ConfigError("the pool has no deployments")
    totals: dict[str, float] = {}
    counts: Counter[str] = Counter()
    for query in queries:
        for call in query.calls:
            mean = sum(call_latency(call, d) for d in deployments) / len(deployments)
            totals[call.step] = totals.get(call.step, 0.0) + mean
            counts[call.step] += 1
    return {step: totals[step] / counts[step] for step in totals}


def standard_workflow(queries: Sequence[QuerySpec]) -> tuple[str, ...]:
    """The paper's workflow if the workload has all its steps, else its most common sequence of
    stage steps (the first seen among equally common ones)."""
    steps = {call.step for q in queries for call in q.calls}
    if steps >= set(HEXGEN_STANDARD_WORKFLOW):
        return HEXGEN_STANDARD_WORKFLOW
    sequences = Counter(tuple(stage[0].step for stage in q.stages) for q in queries)
    if not sequences:
        raise ConfigError("no queries to take a standard workflow from")
    return sequences.most_common(1)[0][0]


def paper_deadlines(queries: Sequence[QuerySpec], deployments: Sequence[Deployment],
                    scale: Scale, *, workflow: Sequence[str] | None = None) -> list[float]:
    """Per query, ``scale`` x the sum over the standard workflow's stages of their step's mean
    latency (:func:`step_latencies`); the same base for every query of a tenant."""
    means = step_latencies(queries, deployments)
    steps = tuple(workflow) if workflow is not None else standard_workflow(queries)
    unknown = sorted(set(steps) - set(means))
    if unknown:
        raise ConfigError(f"standard workflow step(s) {', '.join(map(repr, unknown))} never "
                          f"occur in the workload")
    base = sum(means[step] for step in steps)
    return [_scale_for(scale, q.tenant) * base for q in queries]
