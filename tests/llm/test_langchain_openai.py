"""The README's LangChain example for real: ``langchain_openai.ChatOpenAI`` (a LangChain chat
model as LangChain users reach vLLM or llama.cpp) against an emulated OpenAI-compatible server
over real HTTP on 127.0.0.1. Text plans stream through astream with the server's usage, JSON plans
go as ``response_format`` through with_structured_output, tool-call plans as a forced tool
through bind_tools. Real-time tests: every bound is generous."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_openai import ChatOpenAI

from fleetcall import Orchestrator, RunStatus
from fleetcall.planner.json_plan import PLAN_TOOL_NAME

from tests.llm.helpers import ANSWER, MODEL, emulated_server, respond, search


async def _run(plan_format: str, joiner_format: str) -> tuple[Any, list[dict[str, Any]]]:
    async with asyncio.timeout(60), emulated_server(respond) as (url, bodies):
        model = ChatOpenAI(model=MODEL, base_url=url, api_key="test-key", max_retries=0, stream_usage=True)
        orch = Orchestrator(tools=[search], llm=model, plan_format=plan_format, joiner_format=joiner_format)
        return await orch.run("How dense is France?"), bodies


@pytest.mark.parametrize("plan_format, joiner_format", [("text", "text"), ("json", "json"), ("tool_call", "text")])
def test_chat_openai_serves_runs_in_every_plan_format(plan_format, joiner_format):
    result, bodies = asyncio.run(_run(plan_format, joiner_format))
    assert result.status is RunStatus.ANSWERED, result.error
    assert result.answer == ANSWER
    assert result.tasks[1].observation == pytest.approx(68_170_000 / 551_695)
    planner = bodies[0]
    if plan_format == "text":
        assert planner["stream"] is True and "response_format" not in planner and "tools" not in planner
    elif plan_format == "json":
        assert planner["response_format"]["type"] == "json_schema"
        assert planner["response_format"]["json_schema"]["name"] == "plan"
    else:
        assert planner["tool_choice"] == {"type": "function", "function": {"name": PLAN_TOOL_NAME}}
    for call in result.llm_calls:   # usage_metadata carries the server's counts
        assert call.info["usage_reported"] is True and call.prompt_tokens > 100 and call.completion_tokens > 0
