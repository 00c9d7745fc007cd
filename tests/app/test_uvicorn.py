"""The service under a real uvicorn on 127.0.0.1: many concurrent streamed runs, all answered."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import httpx
import uvicorn
from starlette.applications import Starlette

from fleetcall.demos import parallelqa

from tests.app.helpers import demo_app, sse_events

N_RUNS = 500        # concurrent streamed runs of the load test
TOKEN = "load-test-token"


@contextlib.asynccontextmanager
async def serving(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    """``app`` under uvicorn on a free port (lifespan on), and a client authorised for it."""
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    # keep-alive past the test: a pooled connection the server closed while idle would make the
    # next request on it fail with ReadError under a slow machine
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", backlog=N_RUNS * 2,
                                           timeout_keep_alive=120))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:   # uvicorn has no readiness event; callers bound this with a timeout
            await asyncio.sleep(0.01)
        limits = httpx.Limits(max_connections=N_RUNS + 10, max_keepalive_connections=N_RUNS + 10)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=30,
                                     headers={"authorization": f"Bearer {TOKEN}"}) as c:
            yield c
    finally:
        server.should_exit = True
        await task
        sock.close()


async def _streamed_run(c: httpx.AsyncClient) -> tuple[str, list[str], str | None]:
    async with c.stream("POST", "/v1/runs", json={"query": parallelqa.QUESTION, "stream": True}) as r:
        assert r.status_code == 200
        text = "".join([chunk async for chunk in r.aiter_text()])
    events = sse_events(text)
    return r.headers["x-run-id"], [name for name, _ in events], events[-1][1]["result"]["answer"]


async def _load() -> None:
    app = demo_app(token=TOKEN)   # scripted model ttft 0.05 s, tpot 0; searches 6 ms
    async with asyncio.timeout(60), serving(app) as c:
        assert (await c.get("/healthz", headers={"authorization": ""})).status_code == 200
        assert (await c.get("/metrics", headers={"authorization": ""})).status_code == 401
        outcomes = await asyncio.gather(*(_streamed_run(c) for _ in range(N_RUNS)))
        metrics = (await c.get("/metrics")).text
    assert len({run_id for run_id, _, _ in outcomes}) == N_RUNS
    for _, names, answer in outcomes:
        assert names[0] == "TaskPlanned" and names[-1] == "RunFinished"
        assert answer == parallelqa.expected_answer()
    assert f'fleetcall_runs_finished_total{{status="answered"}} {N_RUNS}' in metrics.splitlines()
    assert app.state.registry.closed and app.state.shutdown_report == []   # lifespan shutdown ran


async def _disconnect() -> None:
    app = demo_app(token=TOKEN, pace=100.0)   # searches take 60 s: the run outlives its client
    async with asyncio.timeout(20), serving(app) as c:
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
