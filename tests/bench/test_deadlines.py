"""Deadlines: unloaded latency on the fastest deployment, the paper's definition, remaining work."""

from __future__ import annotations

import pytest

from fleetcall.bench.deadlines import (
    HEXGEN_STANDARD_WORKFLOW, call_latency, fastest_deployment, paper_deadlines, remaining_work,
    stage_latencies, standard_workflow, step_latencies, unloaded_deadlines, unloaded_latency,
)
from fleetcall.bench.workloads import CallSpec, QuerySpec, load_hexgen_trace
from fleetcall.errors import ConfigError
from fleetcall.gpumodel.perf import Deployment

MODEL = "llama-3.1-8b"
A100 = Deployment.of("A100-80G", MODEL)
L4 = Deployment.of("L4", MODEL)


def _alone(d: Deployment, prompt: int, output: int) -> float:
    return d.single_request_latency(prompt, output).total_s


def _query(tenant: str = "default") -> QuerySpec:
    return QuerySpec("q", (
        (CallSpec("plan", 1000, 50),),
        (CallSpec("gen", 2000, 200), CallSpec("gen", 500, 400), CallSpec("gen", 100, 10)),
        (CallSpec("check", 300, 5),),
    ), tenant=tenant)


def test_unloaded_latency_is_sum_of_stage_maxima() -> None:
    q = _query()
    stages = stage_latencies(q, A100)
    assert stages[0] == pytest.approx(_alone(A100, 1000, 50))
    assert stages[1] == pytest.approx(max(_alone(A100, 2000, 200), _alone(A100, 500, 400),
                                          _alone(A100, 100, 10)))
    assert unloaded_latency(q, A100) == pytest.approx(sum(stages))
    assert call_latency(q.stages[2][0], A100) == pytest.approx(_alone(A100, 300, 5))


def test_remaining_work_counts_only_later_stages() -> None:
    q = _query()
    stages = stage_latencies(q, A100)
    assert remaining_work(q, 0, A100) == pytest.approx(stages[1] + stages[2])
    assert remaining_work(q, 1, A100) == pytest.approx(stages[2])
    assert remaining_work(q, 2, A100) == 0.0


def test_unloaded_deadlines_use_the_fastest_deployment_and_tenant_scales() -> None:
    queries = [_query("gold"), _query("bronze")]
    assert fastest_deployment([L4, A100, L4], queries) is A100
    base = unloaded_latency(queries[0], A100)
    assert unloaded_deadlines(queries, [L4, A100], 3.0) == pytest.approx([3 * base, 3 * base])
    assert unloaded_deadlines(queries, [L4, A100], {"gold": 1.5, "bronze": 4.0}) == \
        pytest.approx([1.5 * base, 4 * base])
    with pytest.raises(ConfigError, match="tenant 'bronze'"):
        unloaded_deadlines(queries, [A100], {"gold": 2.0})
    with pytest.raises(ConfigError, match="no deployments"):
        unloaded_deadlines(queries, [], 2.0)


def test_step_latencies_average_over_calls_and_deployments() -> None:
    means = step_latencies([_query()], [A100, L4])
    expected = sum(_alone(d, p, o) for d in (A100, L4) for p, o in
                   ((2000, 200), (500, 400), (100, 10))) / 6
    assert means["gen"] == pytest.approx(expected)
    assert set(means) == {"plan", "gen", "check"}


def test_paper_deadline_is_one_budget_from_the_standard_workflow() -> None:
    queries = load_hexgen_trace("trace1")
    assert standard_workflow(queries) == HEXGEN_STANDARD_WORKFLOW
    pool = [A100, A100, L4]
    means = step_latencies(queries, pool)
    budgets = paper_deadlines(queries, pool, 2.0)
    assert len(set(budgets)) == 1 and len(budgets) == 90
    assert budgets[0] == pytest.approx(2.0 * sum(means[s] for s in HEXGEN_STANDARD_WORKFLOW))
    custom = paper_deadlines(queries, pool, 1.0, workflow=["revise", "evaluate"])
    assert custom[0] == pytest.approx(means["revise"] + means["evaluate"])
    with pytest.raises(ConfigError, match="'nope'"):
        paper_deadlines(queries, pool, 1.0, workflow=["nope"])


def test_standard_workflow_of_other_workloads_is_the_most_common_shape() -> None:
    short = QuerySpec("a", ((CallSpec("x", 10, 1),),))
    queries = [_query(), short, short]
    assert standard_workflow(queries) == ("x",)
    [budget, *_] = paper_deadlines(queries, [A100], 1.0)
    assert budget == pytest.approx(_alone(A100, 10, 1))
