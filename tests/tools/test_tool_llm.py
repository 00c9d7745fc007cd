"""The llm tool: one call to the run's model, tagged with its query and kind."""

from __future__ import annotations

import asyncio

import pytest

from fleetcall.errors import ConfigError
from fleetcall.llm.scripted import ScriptedLLM
from fleetcall.plan import Interp, Ref
from fleetcall.tools import LLMTool, ToolContext, llm_tool


def test_llm_tool_sends_kind_and_context_and_returns_text() -> None:
    llm = ScriptedLLM(["  Paris is larger.  "])
    ctx = ToolContext(query_id="q7", task_id=4, llm=llm, deadline=12.5, remaining_work_s=3.0)
    arguments = llm_tool.bind(("Which is larger?",), {"context": ["Paris: 2.1M", {"Rome": 2.8}]})
    assert asyncio.run(llm_tool.run(arguments, ctx)) == "Paris is larger."
    (request,) = llm.requests
    assert request.context.kind == "tool:llm"
    assert request.context.query_id == "q7"
    assert request.context.deadline == 12.5 and request.context.remaining_work_s == 3.0
    assert [m.role for m in request.messages] == ["system", "user"]
    user = request.messages[1].content
    assert user.startswith("Which is larger?")
    assert "[1] Paris: 2.1M" in user and '[2] {"Rome": 2.8}' in user
    assert request.max_tokens == 512


def test_llm_tool_options_and_name() -> None:
    llm = ScriptedLLM(["ok"])
    custom = LLMTool(name="ask", system="Be terse.", max_tokens=16)
    ctx = ToolContext(query_id="q", task_id=1, llm=llm)
    assert custom.signature() == "ask(prompt: str, context: list | None = None) -> str"
    assert asyncio.run(custom.run(custom.bind(("hi",), {}), ctx)) == "ok"
    (request,) = llm.requests
    assert request.context.kind == "tool:ask"
    assert request.messages[0].content == "Be terse." and request.max_tokens == 16
    assert request.messages[1].content == "hi"


def test_llm_tool_without_a_model_raises_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="needs a model"):
        asyncio.run(llm_tool.run(llm_tool.bind(("hi",), {}), ToolContext(query_id="q", task_id=1)))


def test_llm_tool_plan_time_checks() -> None:
    assert llm_tool.check_arguments((Interp(("summarize ", Ref(1))),), {"context": [Ref(1)]}) == []
    assert llm_tool.check_arguments((), {"context": []}) == ["missing required argument 'prompt'"]
    assert "ctx" not in llm_tool.json_schema()["properties"]
