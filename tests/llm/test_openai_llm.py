"""The official ``openai`` client against an emulated OpenAI-compatible server over real HTTP on
127.0.0.1 (``fleetcall.sim.fronts.create_app`` under uvicorn, port 0): whole runs with text, JSON
and tool-call plans, usage as the server reported it, and server errors failing the run with the
model named. Real-time tests: every bound is generous."""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import httpx
import openai
import pytest

from fleetcall import LLMError, LLMRequest, Message, Orchestrator, RunStatus, as_llm, complete
from fleetcall.llm import count_tokens
from fleetcall.planner.json_plan import PLAN_TOOL_NAME
from fleetcall.sim.emulator import Faults

from tests.llm.helpers import ANSWER, MODEL, emulated_server, respond, search


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
        if call.info is None:
            # a JSON plan's stream is closed once the plan is whole, before the server's usage:
            # counted from what was sent and read
            assert call.kind == "planner" and plan_format != "text"
            assert call.usage_estimated and call.completion_tokens > 0
            continue
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


def _sse_client(*events: str) -> openai.AsyncOpenAI:
    """A real openai client whose server (an in-process httpx transport) streams these data lines."""
    body = "".join(f"data: {e}\n\n" for e in events).encode()

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})

    return openai.AsyncOpenAI(base_url="http://127.0.0.1:9/v1", api_key="k", max_retries=0,
                              http_client=httpx.AsyncClient(transport=httpx.MockTransport(handler)))


ROLE = json.dumps({"id": "c", "object": "chat.completion.chunk", "created": 0, "model": MODEL,
                   "choices": [{"index": 0, "delta": {"role": "assistant", "content": "1. "}, "finish_reason": None}]})


@pytest.mark.parametrize("bad", ["{not json", '{"choices": [', "[1, 2"])
def test_a_stream_the_client_cannot_parse_is_an_llm_error_naming_model_and_server(bad):
    # before: the client's json.JSONDecodeError went through unwrapped, and the run's error was
    # "planner LLM call failed: JSONDecodeError: ..." with neither the model nor the server named
    async def main() -> Any:
        async with _sse_client(ROLE, bad, "[DONE]") as client:
            return await Orchestrator(tools=[search], llm=as_llm(client, model=MODEL)).run("q")

    result = asyncio.run(asyncio.wait_for(main(), 60))
    assert result.status is RunStatus.FAILED
    assert f"model {MODEL!r} at http://127.0.0.1:9/v1/" in result.error and "JSONDecodeError" in result.error


def test_credentials_in_the_clients_url_are_not_shown_in_errors_or_logs(caplog):
    # before: the run's error (returned by the service) and its run.end log line read
    # "model 'm' at http://me:pw-s3cret@127.0.0.1:.../v1/?api_key=k-s3cret: APIConnectionError"
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()

    async def main() -> Any:
        url = f"http://me:pw-s3cret@127.0.0.1:{port}/v1?api_key=k-s3cret"
        async with openai.AsyncOpenAI(base_url=url, api_key="sk-s3cret", max_retries=0) as client:
            llm = as_llm(client, model=MODEL)
            assert "s3cret" not in repr(llm)
            return await Orchestrator(tools=[search], llm=llm).run("q")

    with caplog.at_level("INFO", logger="fleetcall"):
        result = asyncio.run(asyncio.wait_for(main(), 60))
    assert result.status is RunStatus.FAILED and f"at http://127.0.0.1:{port}/v1/:" in result.error
    assert "s3cret" not in result.error
    assert "run.end" in caplog.text and "s3cret" not in caplog.text
