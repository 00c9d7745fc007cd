"""The service through httpx's ASGI transport, on the virtual clock (instant, deterministic)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Coroutine
from typing import Any, TypeVar

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from fleetcall.service.app import create_app
from fleetcall.demos import parallelqa
from fleetcall.executor import events as ev
from fleetcall.executor.result import RunStatus
from fleetcall.router.pool import EndpointPool, script_responder
from fleetcall.vclock import run_virtual

from tests.service.helpers import client, demo_app, sse_events

T = TypeVar("T")
ANSWER = parallelqa.expected_answer()
SLOW = 1000.0   # search pace making a run last ~600 s of (virtual) time: still in flight when checked


def vrun(coro: Coroutine[Any, Any, T]) -> T:
    return run_virtual(coro)


def error_type(response: httpx.Response) -> str:
    return response.json()["error"]["type"]


# -- auth, limits, validation ------------------------------------------------------------------
def test_token_is_required_except_for_healthz() -> None:
    async def main() -> None:
        app = demo_app(token="s3cret")
        async with client(app) as c:
            assert (await c.get("/healthz")).json() == {"status": "ok"}
            for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": "Basic s3cret"},
                            {"authorization": "s3cret"}):
                for method, path in (("GET", "/v1/endpoints"), ("GET", "/metrics"), ("GET", "/v1/runs/x"),
                                     ("DELETE", "/v1/runs/x"), ("POST", "/v1/runs")):
                    r = await c.request(method, path, headers=headers, json={"query": "q"})
                    assert r.status_code == 401, (method, path, headers)
                    assert error_type(r) == "unauthorized"
            assert app.state.registry.metrics.runs_started == 0   # nothing ran unauthenticated
            ok = {"authorization": "Bearer s3cret"}
            assert (await c.get("/v1/endpoints", headers=ok)).json() == []
            r = await c.post("/v1/runs", headers=ok, json={"query": parallelqa.QUESTION})
            assert r.status_code == 200 and r.json()["answer"] == ANSWER

    vrun(main())


def test_bodies_over_the_limit_get_413() -> None:
    async def chunks() -> AsyncIterator[bytes]:   # no content-length: the limit applies while reading
        for _ in range(10):
            yield b" " * 50

    async def main() -> None:
        app = demo_app(max_body_bytes=200)
        async with client(app) as c:
            big = json.dumps({"query": "x" * 300})
            r = await c.post("/v1/runs", content=big, headers={"content-type": "application/json"})
            assert r.status_code == 413 and error_type(r) == "too_large"
            r = await c.post("/v1/runs", content=chunks())
            assert r.status_code == 413 and error_type(r) == "too_large"
            r = await c.post("/v1/runs", json={"query": parallelqa.QUESTION})
            assert r.status_code == 200   # a body within the limit runs
            assert app.state.registry.metrics.runs_started == 1

    vrun(main())


@pytest.mark.parametrize(("body", "status", "kind"), [
    (b"{not json", 400, "invalid_json"),
    (b"\xff\xfe", 400, "invalid_json"),
    (b"[1, 2]", 422, "invalid_request"),
    (b"{}", 422, "invalid_query"),
    (b'{"query": "   "}', 422, "invalid_query"),
    (b'{"query": 7}', 422, "invalid_query"),
    (b'{"query": "q", "mode": "fast"}', 422, "invalid_mode"),
    (b'{"query": "q", "deadline_s": -1}', 422, "invalid_deadline"),
    (b'{"query": "q", "deadline_s": 0}', 422, "invalid_deadline"),
    (b'{"query": "q", "deadline_s": "soon"}', 422, "invalid_deadline"),
    (b'{"query": "q", "deadline_s": true}', 422, "invalid_deadline"),
    (b'{"query": "q", "deadline_s": Infinity}', 422, "invalid_deadline"),
    (b'{"query": "q", "stream": "yes"}', 422, "invalid_request"),
    (b'{"query": "q", "tools": ["rm -rf"]}', 422, "invalid_request"),
])
def test_bad_input_is_a_json_4xx(body: bytes, status: int, kind: str) -> None:
    async def main() -> None:
        app = demo_app()
        async with client(app) as c:
            r = await c.post("/v1/runs", content=body)
            assert r.status_code == status
            assert error_type(r) == kind and r.json()["error"]["message"]
            assert app.state.registry.metrics.runs_started == 0

    vrun(main())


def test_unknown_routes_and_methods_answer_json() -> None:
    async def main() -> None:
        async with client(demo_app()) as c:
            r = await c.get("/v2/nothing")
            assert r.status_code == 404 and error_type(r) == "not_found"
            r = await c.put("/v1/runs")
            assert r.status_code == 405 and "error" in r.json()

    vrun(main())


# -- runs --------------------------------------------------------------------------------------
def test_sync_run_returns_the_result_and_is_kept() -> None:
    async def main() -> None:
        async with client(demo_app()) as c:
            r = await c.post("/v1/runs", json={"query": parallelqa.QUESTION, "deadline_s": 30})
            assert r.status_code == 200
            body = r.json()
            assert body["status"] == "answered" and body["answer"] == ANSWER
            assert body["id"] == body["query_id"] == r.headers["x-run-id"]
            assert body["deadline"] is not None and len(body["tasks"]) == 9
            got = await c.get(f"/v1/runs/{body['id']}")
            assert got.json()["state"] == "finished"
            assert got.json()["result"]["answer"] == ANSWER
            react = (await c.post("/v1/runs", json={"query": parallelqa.QUESTION, "mode": "react"})).json()
            assert react["mode"] == "react" and react["answer"] == ANSWER

    vrun(main())


def test_a_tight_deadline_times_the_run_out() -> None:
    async def main() -> None:
        async with client(demo_app(pace=1.0)) as c:
            r = await c.post("/v1/runs", json={"query": parallelqa.QUESTION, "deadline_s": 0.3})
            assert r.status_code == 200 and r.json()["status"] == "timed_out"

    vrun(main())


def test_stream_yields_events_in_order_ending_with_run_finished() -> None:
    async def main() -> None:
        async with client(demo_app()) as c:
            r = await c.post("/v1/runs", json={"query": parallelqa.QUESTION, "stream": True})
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            events = sse_events(r.text)
            names = [name for name, _ in events]
            assert names[0] == "TaskPlanned" and names[-2:] == ["AnswerReady", "RunFinished"]
            assert names.count("TaskPlanned") == names.count("TaskStarted") == names.count("TaskFinished") == 9
            order = {(name, data.get("task_id", data.get("task", {}).get("id"))): i
                     for i, (name, data) in enumerate(events)}
            for task_id in range(1, 10):
                assert order[("TaskPlanned", task_id)] < order[("TaskStarted", task_id)] < order[("TaskFinished", task_id)]
            result = events[-1][1]["result"]
            assert result["answer"] == ANSWER and result["query_id"] == r.headers["x-run-id"]
            assert events[-2][1]["answer"] == ANSWER
            kept = (await c.get(f"/v1/runs/{result['query_id']}")).json()
            assert kept["state"] == "finished" and kept["result"]["status"] == "answered"

    vrun(main())


def test_get_and_delete_a_running_run() -> None:
    async def main() -> None:
        app = demo_app(pace=SLOW)
        async with client(app) as c:
            assert (await c.get("/v1/runs/nope")).status_code == 404
            r = await c.delete("/v1/runs/nope")
            assert r.status_code == 404 and error_type(r) == "not_found"
            posting = asyncio.create_task(c.post("/v1/runs", json={"query": parallelqa.QUESTION}))
            await asyncio.sleep(1.0)   # planned, searches under way
            (run_id,) = app.state.registry.running
            assert (await c.get(f"/v1/runs/{run_id}")).json() == {"id": run_id, "state": "running"}
            r = await c.delete(f"/v1/runs/{run_id}")
            assert r.status_code == 202 and r.json() == {"id": run_id, "state": "cancelling"}
            done = await posting
            assert done.status_code == 200 and done.json()["status"] == "cancelled"
            got = (await c.get(f"/v1/runs/{run_id}")).json()
            assert got["state"] == "finished" and got["result"]["status"] == "cancelled"
            again = await c.delete(f"/v1/runs/{run_id}")
            assert again.status_code == 200 and again.json()["status"] == "cancelled"

    vrun(main())


def test_finished_runs_are_kept_in_a_bounded_lru() -> None:
    async def main() -> None:
        async with client(demo_app(max_runs=2)) as c:
            ids = [(await c.post("/v1/runs", json={"query": parallelqa.QUESTION})).json()["id"] for _ in range(3)]
            assert (await c.get(f"/v1/runs/{ids[0]}")).status_code == 404
            assert [(await c.get(f"/v1/runs/{i}")).status_code for i in ids[1:]] == [200, 200]

    vrun(main())


def test_a_run_cancelled_before_its_first_step_still_settles() -> None:
    async def main() -> None:
        app = demo_app()
        registry = app.state.registry
        seen: list[ev.Event] = []
        handle = registry.start(parallelqa.QUESTION, None, "compiled", seen.append)
        handle.cancel()   # before the loop ever ran the run's task
        result = await registry.outcome(handle)
        assert result.status is RunStatus.CANCELLED
        assert isinstance(seen[-1], ev.RunFinished)   # a stream of it would end, not hang
        assert registry.running == {} and registry.metrics.runs_finished == {"cancelled": 1}

    vrun(main())


# -- pool, metrics, shutdown, embedding ----------------------------------------------------------
def test_endpoints_and_metrics_report_pool_and_runs() -> None:
    async def main() -> None:
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
                assert sum(e["calls"] for e in endpoints) >= 2 and endpoints[0]["breaker"] == "closed"
                text = (await c.get("/metrics")).text
        lines = set(text.splitlines())
        assert "fleetcall_runs_started_total 2" in lines
        assert 'fleetcall_runs_finished_total{status="answered"} 2' in lines
        assert 'fleetcall_tasks_total{status="ok"} 18' in lines
        assert 'fleetcall_llm_calls_total{kind="planner"} 2' in lines
        assert 'fleetcall_llm_calls_total{kind="joiner"} 2' in lines
        assert "fleetcall_llm_queue_wait_seconds_count 4" in lines
        assert "# TYPE fleetcall_endpoint_latency_seconds summary" in lines
        latency_counts = [int(line.rsplit(" ", 1)[1]) for line in lines
                          if line.startswith("fleetcall_endpoint_latency_seconds_count{endpoint=")]
        assert sum(latency_counts) == 4
        assert 'fleetcall_endpoint_errors_total{endpoint="L40S-1"} 0' in lines

    vrun(main())


def test_shutdown_cancels_in_flight_runs_and_reports_them() -> None:
    async def main() -> None:
        app = demo_app(pace=SLOW)
        async with client(app) as c:
            posting = asyncio.create_task(c.post("/v1/runs", json={"query": parallelqa.QUESTION}))
            streaming = asyncio.create_task(c.post("/v1/runs", json={"query": parallelqa.QUESTION, "stream": True}))
            await asyncio.sleep(1.0)
            in_flight = set(app.state.registry.running)
            assert len(in_flight) == 2
            assert app.state.shutdown_report == []
        assert set(app.state.shutdown_report) == in_flight   # the lifespan exit cancelled both
        assert (await posting).json()["status"] == "cancelled"
        names = [name for name, _ in sse_events((await streaming).text)]
        assert names[-1] == "RunFinished"
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://fleet") as c:
            r = await c.post("/v1/runs", json={"query": parallelqa.QUESTION})
            assert r.status_code == 503 and error_type(r) == "shutting_down"

    vrun(main())


def test_mounted_inside_a_parent_app_sharing_its_lifespan() -> None:
    async def main() -> None:
        fleet = demo_app(pace=SLOW, token="t")

        @contextlib.asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            async with fleet.router.lifespan_context(fleet):
                yield

        parent = Starlette(routes=[Mount("/fleet", app=fleet)], lifespan=lifespan)
        async with client(parent, token="t") as c:
            assert (await c.get("/fleet/healthz")).json() == {"status": "ok"}
            assert (await c.get("/fleet/v1/endpoints", headers={"authorization": ""})).status_code == 401
            posting = asyncio.create_task(c.post("/fleet/v1/runs", json={"query": parallelqa.QUESTION}))
            await asyncio.sleep(1.0)
            (run_id,) = fleet.state.registry.running
            assert (await c.get(f"/fleet/v1/runs/{run_id}")).json()["state"] == "running"
        assert fleet.state.shutdown_report == [run_id]
        assert (await posting).json()["status"] == "cancelled"

    vrun(main())


# -- serialisation -----------------------------------------------------------------------------
def test_events_and_labels_serialise_safely() -> None:
    from fleetcall.service.app import ServiceMetrics, event_json, jsonable

    assert jsonable({"s": {3}, "t": (1, float("nan")), "o": object}) == {"s": [3], "t": [1, None], "o": str(object)}
    text = event_json(ev.AnswerReady("line one\nline two", 1.5))
    assert text == 'event: AnswerReady\ndata: {"answer":"line one\\nline two","time":1.5}\n\n'
    metrics = ServiceMetrics()
    metrics.llm_calls['we"ird\\kind\n'] = 1
    assert 'fleetcall_llm_calls_total{kind="we\\"ird\\\\kind\\n"} 1' in metrics.render(0, None).splitlines()


def test_runs_past_the_in_flight_cap_get_429_and_the_rest_finish() -> None:
    async def main() -> None:
        app = demo_app(pace=1.0, max_in_flight=2)
        async with client(app) as c:
            first = [asyncio.create_task(c.post("/v1/runs", json={"query": parallelqa.QUESTION}))
                     for _ in range(2)]
            await asyncio.sleep(0.1)   # both in flight
            r = await c.post("/v1/runs", json={"query": parallelqa.QUESTION})
            assert r.status_code == 429 and error_type(r) == "overloaded"
            assert [(await t).json()["answer"] for t in first] == [ANSWER, ANSWER]
            after = await c.post("/v1/runs", json={"query": parallelqa.QUESTION})   # room again
            assert after.status_code == 200 and after.json()["answer"] == ANSWER
        with pytest.raises(ValueError, match="max_in_flight"):
            demo_app(max_in_flight=0)

    vrun(main())
