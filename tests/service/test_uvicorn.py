"""The service under a real uvicorn on 127.0.0.1: 500 concurrent streamed runs served by emulated
endpoints, all answered."""

from __future__ import annotations

import asyncio

import httpx
from starlette.applications import Starlette

from fleetcall.service.app import create_app
from fleetcall.demos import parallelqa
from fleetcall.router.pool import EndpointPool, script_responder

from tests.service.helpers import N_RUNS, demo_app, metric_samples, sample, serving, sse_events

TOKEN = "load-test-token"


async def _streamed_run(c: httpx.AsyncClient) -> tuple[str, list[str], str | None]:
    async with c.stream("POST", "/v1/runs", json={"query": parallelqa.QUESTION, "stream": True}) as r:
        assert r.status_code == 200
        text = "".join([chunk async for chunk in r.aiter_text()])
    events = sse_events(text)
    return r.headers["x-run-id"], [name for name, _ in events], events[-1][1]["result"]["answer"]


def _emulated_app() -> tuple[Starlette, EndpointPool]:
    """The parallelqa orchestrator on a pool of three emulated GPUs (a 1B model, so the engines
    keep up in real time on two cores); the scripted replies are the endpoints' responder."""
    pool = EndpointPool.emulated(["A100-80G", "A100-80G", "L40S"], "llama-3.2-1b", slots=256,
                                 responder=script_responder(parallelqa.respond), stream_interval_s=1.0)
    orchestrator = parallelqa.build(lambda responder: pool, pace=0.01)
    return create_app(orchestrator, pool=pool, token=TOKEN), pool


async def _load() -> None:
    app, pool = _emulated_app()
    # Bounded as a whole (300 s); no bound on one read: with both cores busy, 500 runs in this
    # one process can leave a stream silent for more than 30 s without anything being wrong.
    async with asyncio.timeout(300), serving(app, TOKEN, httpx.Timeout(60, read=None)) as c:
        assert (await c.get("/healthz", headers={"authorization": ""})).status_code == 200
        assert (await c.get("/metrics", headers={"authorization": ""})).status_code == 401
        outcomes = await asyncio.gather(*(_streamed_run(c) for _ in range(N_RUNS)))
        metrics = (await c.get("/metrics")).text
        endpoints = (await c.get("/v1/endpoints")).json()
    await pool.aclose()
    assert sum(e["calls"] for e in endpoints) >= 2 * N_RUNS   # a planner and a joiner call each
    assert len({e["name"] for e in endpoints if e["calls"]}) == 3  # spread over the pool
    assert len({run_id for run_id, _, _ in outcomes}) == N_RUNS
    for _, names, answer in outcomes:
        assert names[0] == "TaskPlanned" and names[-1] == "RunFinished"
        assert answer == parallelqa.expected_answer()
    samples = metric_samples(metrics)
    assert sample(samples, "fleetcall_runs_total", status="answered") == N_RUNS
    assert sample(samples, "fleetcall_run_duration_seconds_count", mode="compiled") == N_RUNS
    assert app.state.registry.closed and app.state.shutdown_report == []   # lifespan shutdown ran


async def _disconnect() -> None:
    app = demo_app(token=TOKEN, pace=100.0)   # searches take 60 s: the run outlives its client
    async with asyncio.timeout(20), serving(app, TOKEN) as c:
        async with c.stream("POST", "/v1/runs", json={"query": parallelqa.QUESTION, "stream": True}) as r:
            async for line in r.aiter_lines():
                assert line == "event: TaskPlanned"
                break
        handle = app.state.registry.running[r.headers["x-run-id"]]
        result = await app.state.registry.outcome(handle)   # settles once the server sees the close
        assert result.status.value == "cancelled"


def test_500_concurrent_streamed_runs_under_uvicorn() -> None:
    asyncio.run(_load())


def test_a_stream_whose_client_leaves_cancels_its_run() -> None:
    asyncio.run(_disconnect())
