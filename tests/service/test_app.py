"""The service through httpx's ASGI transport, on the virtual clock (instant, deterministic)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import re
from collections.abc import AsyncIterator, Coroutine
from typing import Any, TypeVar

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from fleetcall.demos import parallelqa
from fleetcall.executor import events as ev
from fleetcall.executor.result import RunStatus
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
def started(app: Starlette) -> float | None:
    return app.state.registry.metrics.value("fleetcall_runs_started_total")


BAD_AUTH: list[dict[str, str | bytes]] = [
    {}, {"authorization": "Bearer wrong"}, {"authorization": "Basic s3cret"}, {"authorization": "s3cret"},
    {"authorization": "Bearer"}, {"authorization": "Bearer "}, {"authorization": "Bearer s3cret extra"},
    {"authorization": "Bearer\ts3cret"}, {"authorization": b"Bearer s3cr\xe9t"},
    {"authorization": b"Bearer \xff\xfe"}, {"authorization": "Bearer " + "s" * 10_000},
]


def test_token_is_required_except_for_healthz() -> None:
    async def main() -> None:
        app = demo_app(token="s3cret")
        async with client(app) as c:
            assert (await c.get("/healthz")).json() == {"status": "ok"}
            for headers in BAD_AUTH:
                for method, path in (("GET", "/v1/endpoints"), ("GET", "/metrics"), ("GET", "/v1/runs/x"),
                                     ("DELETE", "/v1/runs/x"), ("POST", "/v1/runs"), ("GET", "/v1/models"),
                                     ("POST", "/v1/chat/completions")):
                    r = await c.request(method, path, headers=headers, json={"query": "q"})
                    assert r.status_code == 401, (method, path, headers)
                    assert r.json()["error"]["type"] in ("unauthorized", "authentication_error")
                    assert r.headers["www-authenticate"] == "Bearer"
            assert started(app) == 0   # nothing ran unauthenticated
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
            assert started(app) == 1

    vrun(main())


HUGE = "9" * 400   # issue 9: a 400-digit deadline answered a plain-text 500


@pytest.mark.parametrize(("body", "status", "kind", "field"), [
    # not JSON at all, or JSON that parsers disagree on
    (b"{not json", 400, "invalid_json", None),
    (b"", 400, "invalid_json", None),
    (b"   ", 400, "invalid_json", None),
    (b"\xff\xfe", 400, "invalid_json", None),
    (b'{"query": "caf\xe9"}', 400, "invalid_json", None),                 # invalid UTF-8 in a string
    (b'{"query": "\\ud800"}', 400, "invalid_json", None),                  # a lone surrogate
    (b"\xef\xbb\xbf" + b'{"query": "q"}', 400, "invalid_json", None),     # a byte-order mark
    (b'{"query": "q", "query": "rm -rf"}', 400, "invalid_json", None),    # a duplicate key
    (b'{"query": "q", "deadline_s": NaN}', 400, "invalid_json", None),
    (b'{"query": "q", "deadline_s": Infinity}', 400, "invalid_json", None),
    (b'{"query": "q", "deadline_s": -Infinity}', 400, "invalid_json", None),
    (b'{"query": "q", "deadline_s": ' + b"9" * 5000 + b"}", 400, "invalid_json", None),
    (b"[" * 5000 + b"]" * 5000, 400, "invalid_json", None),               # nested too deep
    (b'{"query": "q"} trailing', 400, "invalid_json", None),
    # JSON, but not a valid request: 422 naming the field
    (b"[1, 2]", 422, "invalid_request", "(body)"),
    (b"null", 422, "invalid_request", "(body)"),
    (b'"query"', 422, "invalid_request", "(body)"),
    (b"12", 422, "invalid_request", "(body)"),
    (b"{}", 422, "invalid_request", "query"),
    (b'{"query": "   "}', 422, "invalid_request", "query"),
    (b'{"query": ""}', 422, "invalid_request", "query"),
    (b'{"query": null}', 422, "invalid_request", "query"),
    (b'{"query": 7}', 422, "invalid_request", "query"),
    (b'{"query": ["q"]}', 422, "invalid_request", "query"),
    (b'{"query": {"text": "q"}}', 422, "invalid_request", "query"),
    (b'{"query": "q", "mode": "fast"}', 422, "invalid_request", "mode"),
    (b'{"query": "q", "mode": null}', 422, "invalid_request", "mode"),
    (b'{"query": "q", "deadline_s": ' + HUGE.encode() + b"}", 422, "invalid_request", "deadline_s"),
    (b'{"query": "q", "deadline_s": -' + HUGE.encode() + b"}", 422, "invalid_request", "deadline_s"),
    (b'{"query": "q", "deadline_s": 1e400}', 422, "invalid_request", "deadline_s"),   # inf once parsed
    (b'{"query": "q", "deadline_s": 1e308}', 422, "invalid_request", "deadline_s"),   # past MAX_DEADLINE_S
    (b'{"query": "q", "deadline_s": 86401}', 422, "invalid_request", "deadline_s"),
    (b'{"query": "q", "deadline_s": -1}', 422, "invalid_request", "deadline_s"),
    (b'{"query": "q", "deadline_s": 0}', 422, "invalid_request", "deadline_s"),
    (b'{"query": "q", "deadline_s": -0.0}', 422, "invalid_request", "deadline_s"),
    (b'{"query": "q", "deadline_s": 1e-400}', 422, "invalid_request", "deadline_s"),  # 0 once parsed
    (b'{"query": "q", "deadline_s": "soon"}', 422, "invalid_request", "deadline_s"),
    (b'{"query": "q", "deadline_s": "5"}', 422, "invalid_request", "deadline_s"),
    (b'{"query": "q", "deadline_s": true}', 422, "invalid_request", "deadline_s"),
    (b'{"query": "q", "deadline_s": [5]}', 422, "invalid_request", "deadline_s"),
    (b'{"query": "q", "stream": "yes"}', 422, "invalid_request", "stream"),
    (b'{"query": "q", "stream": 1}', 422, "invalid_request", "stream"),
    (b'{"query": "q", "stream": null}', 422, "invalid_request", "stream"),
    # unknown fields are refused, named
    (b'{"query": "q", "tools": ["rm -rf"]}', 422, "invalid_request", "tools"),
    (b'{"query": "q", "deadline": 5}', 422, "invalid_request", "deadline"),
])
def test_bad_input_is_a_json_4xx(body: bytes, status: int, kind: str, field: str | None) -> None:
    async def main() -> None:
        app = demo_app()
        async with client(app) as c:
            r = await c.post("/v1/runs", content=body)
            assert r.status_code == status
            error = r.json()["error"]
            assert error["type"] == kind and error["message"]
            assert set(error) >= {"message", "type", "param", "code"}
            if field is not None:
                assert error["param"] == field and field in error["message"]
                assert [f["field"] for f in error["fields"]] == [field]
            assert started(app) == 0

    vrun(main())


def test_every_offending_field_is_listed() -> None:
    async def main() -> None:
        async with client(demo_app()) as c:
            r = await c.post("/v1/runs", json={"query": 1, "deadline_s": "x", "colour": "red"})
            assert r.status_code == 422
            fields = {f["field"]: f for f in r.json()["error"]["fields"]}
            assert set(fields) == {"query", "deadline_s", "colour"}
            assert all(f["message"] and f["kind"] for f in fields.values())

    vrun(main())


@pytest.mark.parametrize(("content_type", "status"), [
    ("text/plain", 415), ("application/x-www-form-urlencoded", 415), ("multipart/form-data; boundary=x", 415),
    ("application/json; charset=latin-1", 415), ("application/jsonx", 415), ("json", 415),
    ("application/json", 200), ("Application/JSON; charset=UTF-8", 200), ("application/vnd.api+json", 200),
])
def test_a_body_must_be_sent_as_json(content_type: str, status: int) -> None:
    async def main() -> None:
        app = demo_app()
        async with client(app) as c:
            r = await c.post("/v1/runs", content=json.dumps({"query": parallelqa.QUESTION}),
                             headers={"content-type": content_type})
            assert r.status_code == status, r.text
            if status != 200:
                assert error_type(r) == "unsupported_media_type" and started(app) == 0

    vrun(main())


def test_a_bad_run_id_in_the_path_is_a_json_404() -> None:
    async def main() -> None:
        async with client(demo_app()) as c:
            for run_id in ("x", "a" * 21, "a" * 23, "a" * 5000, "%00" * 8, "..%2F..%2Fetc", "%C3%A9" * 22,
                           "a%20b" + "c" * 18, "a.b" + "c" * 19, "%FF%FE" + "a" * 20, "aaaaaaaaaaaaaaaaaaaaa$"):
                for method in ("GET", "DELETE"):
                    r = await c.request(method, f"/v1/runs/{run_id}")
                    assert r.status_code == 404, (method, run_id)
                    assert error_type(r) == "not_found" and len(r.text) < 500

    vrun(main())


def test_run_ids_are_random_and_reveal_no_count() -> None:
    async def main() -> None:
        async with client(demo_app()) as c:
            ids = [(await c.post("/v1/runs", json={"query": parallelqa.QUESTION})).json()["id"] for _ in range(5)]
        assert len(set(ids)) == 5
        for run_id in ids:   # secrets.token_urlsafe(16): 128 random bits, no counter
            assert re.fullmatch(r"[A-Za-z0-9_-]{22}", run_id), run_id
            assert base64.urlsafe_b64decode(run_id + "==") and len(base64.urlsafe_b64decode(run_id + "==")) == 16
        assert len({run_id[-3:] for run_id in ids}) == 5   # no shared tail counting runs

    vrun(main())


def test_unknown_routes_and_methods_answer_json() -> None:
    async def main() -> None:
        async with client(demo_app()) as c:
            r = await c.get("/v2/nothing")
            assert r.status_code == 404 and error_type(r) == "not_found"
            for method, path, allowed in (("PUT", "/v1/runs", "POST"), ("GET", "/v1/runs", "POST"),
                                          ("PATCH", "/v1/runs/" + "a" * 22, "DELETE, GET, HEAD"),
                                          ("POST", "/v1/models", "GET, HEAD"), ("GET", "/v1/chat/completions", "POST"),
                                          ("DELETE", "/metrics", "GET, HEAD"), ("POST", "/healthz", "GET, HEAD")):
                r = await c.request(method, path)
                assert r.status_code == 405, (method, path)
                assert error_type(r) == "method_not_allowed" and r.json()["error"]["message"]
                assert set(r.headers["allow"].split(", ")) == set(allowed.split(", "))

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
        assert registry.running == {}
        assert registry.metrics.value("fleetcall_runs_total", {"status": "cancelled"}) == 1

    vrun(main())


# -- shutdown, embedding ----------------------------------------------------------
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
def test_events_serialise_safely() -> None:
    from fleetcall.service.app import event_json, jsonable

    assert jsonable({"s": {3}, "t": (1, float("nan")), "o": object}) == {"s": [3], "t": [1, "NaN"], "o": str(object)}
    text = event_json(ev.AnswerReady("line one\nline two", 1.5))
    assert text == 'event: AnswerReady\ndata: {"answer":"line one\\nline two","time":1.5}\n\n'


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


def test_runs_log_start_and_end_at_info_and_never_the_token(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> tuple[str, str]:
        async with client(demo_app(token="t0k3n-s3cret"), token="t0k3n-s3cret") as c:
            await c.get("/metrics", headers={"authorization": "Bearer t0k3n-s3cre"})   # a near miss
            answered = (await c.post("/v1/runs", json={"query": parallelqa.QUESTION, "deadline_s": 30})).json()
            streamed = await c.post("/v1/runs", json={"query": parallelqa.QUESTION, "stream": True})
            return answered["id"], streamed.headers["x-run-id"]

    with caplog.at_level(logging.DEBUG, logger="fleetcall"):
        first, second = vrun(main())
    records = [r for r in caplog.records if r.name.startswith("fleetcall")]
    lines = [r.getMessage() for r in records]
    # once each, by the executor (the service does not log them again): nothing per event or token
    assert [(r.name, r.levelno, r.event) for r in records] == [("fleetcall.executor", logging.INFO, e)
                                                              for e in ("run.start", "run.end") * 2]
    assert lines[0] == f"run.start query_id={first} mode=compiled deadline_s=30.000"
    assert re.fullmatch(rf"run\.end query_id={first} mode=compiled status=answered latency_s=\d+\.\d{{3}} "
                        r"plans=1 replans=0 tasks=\d+ llm_calls=2 prompt_tokens=\d+ completion_tokens=\d+", lines[1])
    assert lines[2] == f"run.start query_id={second} mode=compiled deadline_s=300.000"
    assert lines[3].startswith(f"run.end query_id={second} mode=compiled status=answered")
    assert "s3cre" not in caplog.text and parallelqa.QUESTION not in caplog.text


def test_the_request_modes_are_the_orchestrators() -> None:
    from typing import get_args

    from fleetcall.executor.orchestrator import MODES
    from fleetcall.service.requests import Mode

    assert get_args(Mode) == MODES


def test_any_tool_result_is_served_as_json() -> None:
    """A tool returning bytes that are not UTF-8 (or an object whose str() raises) used to make
    the POST and every later GET of that run answer 500."""
    from fleetcall import Orchestrator, ScriptedLLM, tool
    from fleetcall.service.app import create_app

    class Unprintable:
        def __str__(self) -> str:
            raise ValueError("no text")

        __repr__ = __str__

    @tool
    async def raw(kind: str) -> object:
        """Returns awkward values."""
        return {"bytes": b"\xff\xfe", "nan": float("nan"), "object": Unprintable(), "half": "\udc80"}

    def reply(request: Any) -> str:
        return 'Thought: get it\n1. raw("x")\n2. join()' if request.context.kind == "planner" else "Finish(ok)"

    async def main() -> None:
        app = create_app(Orchestrator([raw], ScriptedLLM(reply)))
        async with client(app) as c:
            r = await c.post("/v1/runs", json={"query": "q"})
            assert r.status_code == 200, r.text
            observation = r.json()["tasks"][0]["observation"]
            assert observation["bytes"] == {"$bytes_b64": "//4="} and observation["nan"] == "NaN"
            assert observation["object"].startswith("<unrenderable Unprintable: str() raised ValueError")
            assert observation["half"] == "\\udc80"
            got = await c.get(f"/v1/runs/{r.json()['id']}")
            assert got.status_code == 200 and got.json()["result"]["tasks"][0]["observation"] == observation
            streamed = await c.post("/v1/runs", json={"query": "q", "stream": True})
            finished = [data for name, data in sse_events(streamed.text) if name == "TaskFinished"]
            assert finished[0]["observation"]["value"] == observation

    vrun(main())


def test_a_run_without_deadline_s_gets_the_orchestrators_default() -> None:
    async def main() -> None:
        app = demo_app()
        orchestrator = app.state.registry.orchestrator
        async with client(app) as c:
            for body in ({"query": parallelqa.QUESTION}, {"query": parallelqa.QUESTION, "deadline_s": None}):
                r = (await c.post("/v1/runs", json=body)).json()
                assert r["deadline"] == pytest.approx(r["started_at"] + orchestrator.default_deadline)

    vrun(main())
