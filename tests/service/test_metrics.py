"""The service's /metrics: prometheus-client on a registry per app, read back with its own parser."""

from __future__ import annotations

import asyncio

import prometheus_client
from prometheus_client.parser import text_string_to_metric_families

from fleetcall.demos import parallelqa
from fleetcall.executor.result import LLMCallRecord, RunResult, RunStatus, TaskRecord
from fleetcall.router.health import EndpointSnapshot
from fleetcall.router.pool import EndpointPool, script_responder
from fleetcall.service.app import create_app
from fleetcall.service.metrics import PoolCollector, ServiceMetrics
from fleetcall.vclock import run_virtual

from tests.service.helpers import client, demo_app, metric_samples, sample

ANSWER = parallelqa.expected_answer()


def test_metrics_report_runs_tasks_calls_and_the_pool() -> None:
    async def main() -> str:
        pool = EndpointPool.emulated(["A100-80G", "L40S"], "llama-3.2-1b",
                                     responder=script_responder(parallelqa.respond))
        async with pool:
            orchestrator = parallelqa.build(lambda _respond: pool, pace=0.01)
            app = create_app(orchestrator, pool=pool)
            async with client(app) as c:
                for _ in range(2):
                    r = await c.post("/v1/runs", json={"query": parallelqa.QUESTION})
                    assert r.json()["answer"] == ANSWER
                endpoints = (await c.get("/v1/endpoints")).json()
                assert [e["name"] for e in endpoints] == ["A100-80G-0", "L40S-1"]
                r = await c.get("/metrics")
                assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
                return r.text

    text = run_virtual(main())
    s = metric_samples(text)
    assert sample(s, "fleetcall_runs_started_total") == 2
    assert sample(s, "fleetcall_runs_total", status="answered") == 2
    assert sample(s, "fleetcall_runs_total", status="failed") == 0   # every status present
    assert sample(s, "fleetcall_runs_in_flight") == 0
    assert sample(s, "fleetcall_run_duration_seconds_count", mode="compiled") == 2
    assert sample(s, "fleetcall_run_duration_seconds_bucket", mode="compiled", le="+Inf") == 2
    assert sample(s, "fleetcall_tasks_total", status="ok") == 18
    tools = {dict(labels)["tool"]: v for (name, labels), v in s.items()
             if name == "fleetcall_task_duration_seconds_count"}
    assert sum(tools.values()) == 18 and "search" in tools
    assert sample(s, "fleetcall_llm_calls_total", kind="planner") == 2
    assert sample(s, "fleetcall_llm_calls_total", kind="joiner") == 2
    names = ("A100-80G-0", "L40S-1")
    for metric in ("fleetcall_llm_call_duration_seconds_count", "fleetcall_llm_queue_wait_seconds_count",
                   "fleetcall_llm_ttft_seconds_count"):
        assert sum(sample(s, metric, endpoint=n) or 0 for n in names) == 4, metric
    for n in names:
        assert sample(s, "fleetcall_endpoint_in_flight", endpoint=n) == 0
        assert sample(s, "fleetcall_endpoint_queued", endpoint=n) == 0
        assert sample(s, "fleetcall_endpoint_errors_total", endpoint=n) == 0
        assert sample(s, "fleetcall_endpoint_breaker", endpoint=n, fleetcall_endpoint_breaker="closed") == 1
        assert sample(s, "fleetcall_endpoint_breaker", endpoint=n, fleetcall_endpoint_breaker="open") == 0
    assert sum(sample(s, "fleetcall_endpoint_calls_total", endpoint=n) or 0 for n in names) >= 4
    assert any(sample(s, "fleetcall_endpoint_ttft_ewma_seconds", endpoint=n) for n in names)


def test_in_flight_runs_are_a_gauge_read_at_scrape_time() -> None:
    async def main() -> None:
        app = demo_app(pace=1000.0)   # searches take 600 s
        async with client(app) as c:
            posting = asyncio.create_task(c.post("/v1/runs", json={"query": parallelqa.QUESTION}))
            await asyncio.sleep(1.0)
            s = metric_samples((await c.get("/metrics")).text)
            assert sample(s, "fleetcall_runs_in_flight") == 1
            assert sample(s, "fleetcall_runs_total", status="answered") == 0
            (run_id,) = app.state.registry.running
            await c.delete(f"/v1/runs/{run_id}")
            assert (await posting).json()["status"] == "cancelled"
            s = metric_samples((await c.get("/metrics")).text)
            assert sample(s, "fleetcall_runs_in_flight") == 0
            assert sample(s, "fleetcall_runs_total", status="cancelled") == 1
            # a scripted model has no endpoint: its calls count under endpoint="none"
            assert sample(s, "fleetcall_llm_call_duration_seconds_count", endpoint="none") == 1

    run_virtual(main())


def test_each_app_has_its_own_registry_and_the_global_one_is_untouched() -> None:
    async def main() -> None:
        first, second = demo_app(), demo_app()
        async with client(first) as c1, client(second) as c2:
            assert (await c1.post("/v1/runs", json={"query": parallelqa.QUESTION})).json()["answer"] == ANSWER
            assert sample(metric_samples((await c1.get("/metrics")).text), "fleetcall_runs_started_total") == 1
            assert sample(metric_samples((await c2.get("/metrics")).text), "fleetcall_runs_started_total") == 0

    run_virtual(main())
    default = prometheus_client.generate_latest(prometheus_client.REGISTRY).decode()
    assert "fleetcall_" not in default


WEIRD = 'we"ird\\ \nname'   # a quote, a backslash and a newline: each must be escaped


def test_label_values_are_escaped_and_parse_back() -> None:
    metrics = ServiceMetrics()
    result = RunResult(
        query_id="r", query="q", status=RunStatus.ANSWERED, started_at=0.0, finished_at=2.0,
        tasks=[TaskRecord(round=0, id=1, tool=WEIRD, status="ok", start=0.5, end=1.0)],
        llm_calls=[LLMCallRecord(kind=WEIRD, round=0, start=0.0, end=0.4,
                                 info={"endpoint": WEIRD, "queue_s": 0.1, "ttft_s": 0.2, "total_s": 0.3})])
    metrics.record(result)
    s = metric_samples(metrics.render().decode())
    assert sample(s, "fleetcall_task_duration_seconds_count", tool=WEIRD) == 1
    assert sample(s, "fleetcall_task_duration_seconds_sum", tool=WEIRD) == 0.5
    assert sample(s, "fleetcall_llm_calls_total", kind=WEIRD) == 1
    assert sample(s, "fleetcall_llm_call_duration_seconds_sum", endpoint=WEIRD) == 0.3
    assert sample(s, "fleetcall_llm_queue_wait_seconds_sum", endpoint=WEIRD) == 0.1
    assert sample(s, "fleetcall_llm_ttft_seconds_sum", endpoint=WEIRD) == 0.2
    assert sample(s, "fleetcall_run_duration_seconds_sum", mode="compiled") == 2.0


def test_pool_collector_reports_each_breaker_state() -> None:
    snaps = [EndpointSnapshot(name, 2, 3, 10, 4, 0.25, 0.01, 0.5, state, "HTTP 500", rate_limited=5,
                              cooldowns=6, breaker_trips=7)
             for name, state in (("a", "closed"), ("b", "open"), (WEIRD, "half-open"))]
    registry = prometheus_client.CollectorRegistry()
    registry.register(PoolCollector(lambda: snaps))
    families = {f.name: f for f in text_string_to_metric_families(prometheus_client.generate_latest(registry).decode())}
    assert families["fleetcall_endpoint_calls"].type == "counter"
    s = metric_samples(prometheus_client.generate_latest(registry).decode())
    for name, state in (("a", "closed"), ("b", "open"), (WEIRD, "half-open")):
        for other in ("closed", "open", "half-open"):
            assert sample(s, "fleetcall_endpoint_breaker", endpoint=name,
                          fleetcall_endpoint_breaker=other) == (1 if other == state else 0)
        assert sample(s, "fleetcall_endpoint_in_flight", endpoint=name) == 2
        assert sample(s, "fleetcall_endpoint_queued", endpoint=name) == 3
        assert sample(s, "fleetcall_endpoint_calls_total", endpoint=name) == 10
        assert sample(s, "fleetcall_endpoint_errors_total", endpoint=name) == 4
        assert sample(s, "fleetcall_endpoint_ttft_ewma_seconds", endpoint=name) == 0.25
        assert sample(s, "fleetcall_endpoint_rate_limited_total", endpoint=name) == 5
        assert sample(s, "fleetcall_endpoint_cooldowns_total", endpoint=name) == 6
        assert sample(s, "fleetcall_endpoint_breaker_trips_total", endpoint=name) == 7


def _plan_or_finish(body: dict) -> str:
    """An emulated endpoint's answers for a run: the joiner's prompt offers Replan(, the planner's not."""
    if "Replan(" in body["messages"][0]["content"]:
        return "Thought: done.\nAction: Finish(2)"
    return '1. math("1 + 1")\n2. join()\n<END_OF_PLAN>'


def test_cooldowns_and_breaker_trips_of_a_faulty_pool_are_counted_per_endpoint() -> None:
    """Runs over a pool with an endpoint that answers every request with a 429 (Retry-After
    1,000 s: one cooldown that outlasts the test) and one that answers with a 500 (breaker of one
    failure, cooldown 1,000 s: one trip), beside a good one. Every run still answers, and
    /metrics counts exactly one cooldown and one trip, each at its endpoint."""
    from fleetcall import Orchestrator
    from fleetcall.router.config import BreakerConfig
    from fleetcall.sim.emulator import Faults
    from tests.router.helpers import Server, fleet

    async def main() -> str:
        servers = (Server("limited", Faults(rate_limit_rate=1.0, retry_after_s=1000.0), responder=_plan_or_finish),
                   Server("broken", Faults(error_rate=1.0), responder=_plan_or_finish),
                   Server("good", responder=_plan_or_finish))
        async with fleet(*servers, policy="rr-fcfs", breaker=BreakerConfig(failures=1, cooldown_s=1000.0)) \
                as (pool, _):
            app = create_app(Orchestrator(llm=pool), pool=pool)
            async with client(app) as c:
                for _ in range(3):
                    r = await c.post("/v1/runs", json={"query": "What is 1 + 1?"})
                    assert r.json()["answer"] == "2", r.json()
                return (await c.get("/metrics")).text

    text = run_virtual(main())
    s = metric_samples(text)
    families = {f.name: f.type for f in text_string_to_metric_families(text)}
    assert families["fleetcall_endpoint_cooldowns"] == families["fleetcall_endpoint_breaker_trips"] == "counter"
    cooldowns = {n: sample(s, "fleetcall_endpoint_cooldowns_total", endpoint=n) for n in ("limited", "broken", "good")}
    trips = {n: sample(s, "fleetcall_endpoint_breaker_trips_total", endpoint=n) for n in ("limited", "broken", "good")}
    assert cooldowns == {"limited": 1, "broken": 0, "good": 0}
    assert trips == {"limited": 0, "broken": 1, "good": 0}
    assert sample(s, "fleetcall_endpoint_rate_limited_total", endpoint="limited") == 1
    assert sample(s, "fleetcall_endpoint_breaker", endpoint="broken", fleetcall_endpoint_breaker="open") == 1
    assert sample(s, "fleetcall_endpoint_errors_total", endpoint="broken") == 1
