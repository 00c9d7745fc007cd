"""The official ``openai`` client against an emulated OpenAI-compatible server over real HTTP on
127.0.0.1 (``fleetcall.sim.fronts.create_app`` under uvicorn, port 0): whole runs with text, JSON
and tool-call plans, usage as the server reported it, and server errors failing the run with the
model named. Real-time tests: every bound is generous."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import openai
import pytest
import uvicorn

from fleetcall import LLMError, LLMRequest, Message, Orchestrator, RunStatus, as_llm, complete, tool
from fleetcall.llm import count_tokens
from fleetcall.planner.json_plan import PLAN_TOOL_NAME
from fleetcall.sim.emulator import EmulatedEndpoint, Faults
from fleetcall.sim.fronts import create_app
from fleetcall.sim.responders import Reply, ScriptedResponder

MODEL = "llama-3.2-1b"
PLAN = '1. search("France")\n2. math("c0 / c1", context=[$1.population, $1.area_km2])\n3. join()'
JSON_PLAN = {"tasks": [
    {"id": 1, "thought": "look it up", "tool": "search", "args": {"query": "France"}},
    {"id": 2, "thought": "", "tool": "math", "args": {"expression": "c0 / c1", "context": ["$1.population", "$1.area_km2"]}},
]}
ANSWER = "about 124 people per km2"


@tool
async def search(query: str) -> dict:
    """Look up a country: returns name, population and area_km2."""
    return {"name": query, "population": 68_170_000, "area_km2": 551_695}


@contextlib.asynccontextmanager
async def emulated_server(respond: Callable[[dict[str, Any]], str | Reply], *,
                          faults: Faults | None = None) -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """An emulated endpoint under uvicorn on a free port of 127.0.0.1: (base URL, request bodies)."""
    bodies: list[dict[str, Any]] = []

    def record(body: dict[str, Any]) -> str | Reply:
        bodies.append(body)
        return respond(body)

    endpoint = EmulatedEndpoint("A100-80G", MODEL, responder=ScriptedResponder(record), faults=faults,
                                stream_interval_s=0.01)
    sock = socket.create_server(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(endpoint), log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(30):
            while not server.started:   # uvicorn has no readiness event
                await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1", bodies
    finally:
        server.should_exit = True
        await task
        await endpoint.aclose()
        sock.close()


def _is_joiner(body: dict[str, Any]) -> bool:
    return body["messages"][-1]["content"].endswith("answer the question, or ask for a new plan.")


def respond(body: dict[str, Any]) -> str | Reply:
    """Plans in the format the request asks for; the joiner's Finish."""
    if _is_joiner(body):
        if body.get("response_format"):
            return json.dumps({"thought": "ok", "action": "finish", "answer": ANSWER, "reason": ""})
        return f"Thought: done\nAction: Finish({ANSWER})"
    if body.get("tools"):
        return Reply(tool_calls=[{"type": "function", "function": {
            "name": body["tool_choice"]["function"]["name"], "arguments": json.dumps(JSON_PLAN)}}])
    if body.get("response_format"):
        return json.dumps(JSON_PLAN)
    return PLAN


async def _run(plan_format: str, joiner_format: str = "text") -> tuple[Any, list[dict[str, Any]]]:
    async with asyncio.timeout(60), emulated_server(respond) as (base_url, bodies):
        async with openai.AsyncOpenAI(base_url=base_url, api_key="test-key", max_retries=0) as client:
            llm = as_llm(client, model=MODEL)
            orch = Orchestrator(tools=[search], llm=llm, plan_format=plan_format, joiner_format=joiner_format)
            return await orch.run("How dense is France?"), bodies


@pytest.mark.parametrize("plan_format, joiner_format", [("text", "text"), ("json", "json"), ("tool_call", "text")])
def test_runs_through_an_openai_client(plan_format, joiner_format):
    result, bodies = asyncio.run(_run(plan_format, joiner_format))
    assert result.status is RunStatus.ANSWERED, result.error
    assert result.answer == ANSWER
    assert result.tasks[1].observation == pytest.approx(68_170_000 / 551_695)
    planner_body = bodies[0]
    assert planner_body["model"] == MODEL and planner_body["stream"] is True
    assert planner_body["stream_options"] == {"include_usage": True}
    if plan_format == "json":
        assert planner_body["response_format"]["json_schema"]["name"] == "plan"
    if plan_format == "tool_call":
        assert planner_body["tool_choice"]["function"]["name"] == PLAN_TOOL_NAME
    for call in result.llm_calls:   # usage as the server counted it, and the client's timings
        assert call.info["usage_reported"] is True and call.completion_tokens > 0
        assert call.info["endpoint"] == MODEL and call.info["ttft_s"] is not None


def test_text_streams_in_pieces_with_usage_and_extra_body_last():
    async def main() -> tuple[list[Any], list[dict[str, Any]]]:
        async with asyncio.timeout(60), emulated_server(lambda body: "one two three four five six") as (url, bodies):
            async with openai.AsyncOpenAI(base_url=url, api_key="k", max_retries=0) as client:
                request = LLMRequest((Message("user", "count"),), max_tokens=50, stop=("seven",),
                                     extra_body={"ignore_eos": False})
                return [c async for c in as_llm(client, model=MODEL).stream(request)], bodies

    chunks, bodies = asyncio.run(main())
    assert "".join(c.text for c in chunks) == "one two three four five six"
    assert len([c for c in chunks if c.text]) > 1          # streamed, not one block
    last = chunks[-1]
    # the server's count (the emulator counts count_tokens(text)), not the client's chunk count
    assert last.usage is not None and last.info["usage_reported"] is True
    assert last.usage.completion_tokens == count_tokens("one two three four five six") != len(chunks) - 1
    assert bodies[0]["max_tokens"] == 50 and bodies[0]["stop"] == ["seven"] and bodies[0]["ignore_eos"] is False


def test_a_server_error_fails_the_run_with_model_and_server_named():
    async def main() -> Any:
        async with asyncio.timeout(60), emulated_server(respond, faults=Faults(error_rate=1.0)) as (url, _):
            async with openai.AsyncOpenAI(base_url=url, api_key="k", max_retries=0) as client:
                return await Orchestrator(tools=[search], llm=as_llm(client, model=MODEL)).run("q")

    result = asyncio.run(main())
    assert result.status is RunStatus.FAILED
    assert f"model '{MODEL}' at http://127.0.0.1:" in result.error and "InternalServerError" in result.error


def test_an_unreachable_server_is_an_llm_error():
    async def main() -> None:
        sock = socket.create_server(("127.0.0.1", 0))   # a port nobody listens on once closed
        port = sock.getsockname()[1]
        sock.close()
        async with openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="k", max_retries=0) as client:
            await complete(as_llm(client, model=MODEL), LLMRequest((Message("user", "hi"),)))

    with pytest.raises(LLMError, match="APIConnectionError"):
        asyncio.run(asyncio.wait_for(main(), 60))
