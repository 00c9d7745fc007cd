"""LangChain chat models serve whole runs: LangChain's own fake chat models (streamed text), and a
chat model written as providers write them (``_astream`` with ``usage_metadata`` on the last
chunk, ``bind_tools`` that forwards the tools to the model call) for usage, JSON plans through
``with_structured_output`` and tool-call plans through ``bind_tools``. No LangChain class is
mocked: the adapter calls their public ``astream`` / ``ainvoke`` / ``bind_tools``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import pytest
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.fake_chat_models import (
    FakeListChatModel,
    FakeMessagesListChatModel,
    GenericFakeChatModel,
)
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import Field

from fleetcall import LLMError, LLMRequest, Message, Orchestrator, RunStatus, as_llm, complete, tool
from fleetcall.planner.json_plan import PLAN_TOOL_NAME

PLAN = '1. search("France")\n2. math("c0 / c1", context=[$1.population, $1.area_km2])\n3. join()'
JSON_PLAN = {"tasks": [
    {"id": 1, "thought": "look it up", "tool": "search", "args": {"query": "France"}},
    {"id": 2, "thought": "", "tool": "math", "args": {"expression": "c0 / c1", "context": ["$1.population", "$1.area_km2"]}},
]}


@tool
async def search(query: str) -> dict:
    """Look up a country: returns name, population and area_km2."""
    return {"name": query, "population": 68_170_000, "area_km2": 551_695}


def _density(result: Any) -> float:
    return result.tasks[1].observation


# -- a chat model as providers write one ------------------------------------------------------
Reply = Callable[[list[BaseMessage], dict[str, Any]], AIMessage]


class ProviderStyleChatModel(BaseChatModel):
    """Streams words; reports usage on the last chunk; ``bind_tools`` binds the tools (as
    OpenAI-style dicts) to later calls, whose answer ``reply`` computes from messages and kwargs."""

    reply: Reply
    calls: list[dict[str, Any]] = Field(default_factory=list)   # kwargs of each model call

    @property
    def _llm_type(self) -> str:
        return "provider-style"

    def _answer(self, messages: list[BaseMessage], kwargs: dict[str, Any]) -> AIMessage:
        self.calls.append(kwargs)
        message = self.reply(messages, kwargs)
        prompt = sum(len(str(m.content).split()) for m in messages)
        output = len(str(message.content).split()) + len(message.tool_calls)
        message.usage_metadata = {"input_tokens": prompt, "output_tokens": output, "total_tokens": prompt + output}
        return message

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=self._answer(messages, kwargs))])

    async def _astream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                       run_manager: AsyncCallbackManagerForLLMRun | None = None,
                       **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        message = self._answer(messages, {**kwargs, "stop": stop})
        words = str(message.content).split(" ")
        for i, word in enumerate(words):
            await asyncio.sleep(0)
            yield ChatGenerationChunk(message=AIMessageChunk(content=word if i == 0 else " " + word))
        yield ChatGenerationChunk(message=AIMessageChunk(content="", usage_metadata=message.usage_metadata))

    def bind_tools(self, tools: Sequence[Any], *, tool_choice: str | None = None,
                   **kwargs: Any) -> Runnable[Any, AIMessage]:
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], tool_choice=tool_choice, **kwargs)


def _plan_or_answer(messages: list[BaseMessage], kwargs: dict[str, Any]) -> AIMessage:
    """The planner gets the plan (as a tool call when tools are bound), the joiner the answer."""
    if kwargs.get("tools"):
        tool_name = kwargs["tools"][0]["function"]["name"]
        return AIMessage(content="", tool_calls=[{"name": tool_name, "args": JSON_PLAN, "id": "call-1"}])
    if _is_joiner(messages):
        return AIMessage(content="Finish(about 124 people per km2)")
    return AIMessage(content=PLAN)


def _is_joiner(messages: list[BaseMessage]) -> bool:
    return str(messages[-1].content).endswith("Decide now: answer the question, or ask for a new plan.")


# -- LangChain's fake chat models: the failing inputs ---------------------------------
@pytest.mark.parametrize("make", [
    lambda: FakeListChatModel(responses=[PLAN, "Finish(about 124 people per km2)"]),
    lambda: GenericFakeChatModel(messages=iter([PLAN, "Finish(about 124 people per km2)"])),
    lambda: ProviderStyleChatModel(reply=_plan_or_answer),
], ids=["FakeListChatModel", "GenericFakeChatModel", "provider-style"])
def test_langchain_chat_models_answer_a_run(make):
    result = asyncio.run(Orchestrator(tools=[search], llm=make()).run("How dense is France?"))
    assert result.status is RunStatus.ANSWERED, result.error
    assert result.answer == "about 124 people per km2"
    assert _density(result) == pytest.approx(68_170_000 / 551_695)
    assert [c.kind for c in result.llm_calls] == ["planner", "joiner"]


def test_text_streams_chunk_by_chunk_and_usage_comes_from_usage_metadata():
    model = ProviderStyleChatModel(reply=lambda messages, kwargs: AIMessage(content="one two three four"))
    request = LLMRequest((Message("system", "be brief"), Message("user", "count to four")), stop=("five",))

    async def main() -> list[Any]:
        return [chunk async for chunk in as_llm(model).stream(request)]

    chunks = asyncio.run(main())
    assert [c.text for c in chunks[:-1]] == ["one", " two", " three", " four"]
    last = chunks[-1]
    assert (last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.calls) == (5, 4, 1)
    assert last.info["usage_reported"] is True and last.info["model"] == "ProviderStyleChatModel"
    assert model.calls[0]["stop"] == ["five"]      # the request's stop sequences reach the model


def test_a_model_without_usage_metadata_gets_an_estimate_marked_as_such():
    request = LLMRequest((Message("user", "say hi"),))
    completion = asyncio.run(complete(as_llm(FakeListChatModel(responses=["hi there"])), request))
    assert completion.text == "hi there"
    assert completion.usage.completion_tokens >= 2 and completion.info["usage_reported"] is False


def test_the_run_records_the_tokens_the_model_reported():
    model = ProviderStyleChatModel(reply=_plan_or_answer)
    result = asyncio.run(Orchestrator(tools=[search], llm=model).run("How dense is France?"))
    joiner = result.llm_calls[-1]
    assert joiner.completion_tokens == len("Finish(about 124 people per km2)".split())
    assert joiner.info["usage_reported"] is True


def test_json_plans_go_through_with_structured_output():
    """The planner's JSON schema reaches the model as a bound tool (the base class's
    with_structured_output), and the joiner's JSON schema too; the parsed JSON is the answer."""

    def reply(messages: list[BaseMessage], kwargs: dict[str, Any]) -> AIMessage:
        name = kwargs["tools"][0]["function"]["name"]
        if name == "joiner_decision":
            args = {"thought": "done", "action": "finish", "answer": "about 124", "reason": ""}
        else:
            args = JSON_PLAN
        return AIMessage(content="", tool_calls=[{"name": name, "args": args, "id": "c"}])

    model = ProviderStyleChatModel(reply=reply)
    orch = Orchestrator(tools=[search], llm=model, plan_format="json", joiner_format="json")
    result = asyncio.run(orch.run("How dense is France?"))
    assert result.status is RunStatus.ANSWERED, result.error
    assert result.answer == "about 124" and _density(result) == pytest.approx(68_170_000 / 551_695)
    planner_tool = model.calls[0]["tools"][0]["function"]
    assert planner_tool["name"] == "plan"
    assert planner_tool["parameters"]["properties"]["tasks"]["maxItems"] == 64   # the plan's schema
    assert json.loads(result.plans[0].text) == JSON_PLAN


def test_tool_call_plans_go_through_bind_tools_with_the_plan_tool_forced():
    model = ProviderStyleChatModel(reply=_plan_or_answer)
    result = asyncio.run(Orchestrator(tools=[search], llm=model, plan_format="tool_call").run("How dense?"))
    assert result.status is RunStatus.ANSWERED, result.error
    assert _density(result) == pytest.approx(68_170_000 / 551_695)
    planner_call = model.calls[0]
    assert planner_call["tool_choice"] == PLAN_TOOL_NAME
    assert [t["function"]["name"] for t in planner_call["tools"]] == [PLAN_TOOL_NAME]
    assert result.llm_calls[0].completion_tokens == 1   # the one tool call the model reported


def test_a_model_that_raises_fails_the_run_with_the_model_named():
    def broken(messages: list[BaseMessage], kwargs: dict[str, Any]) -> AIMessage:
        raise RuntimeError("quota exceeded")

    result = asyncio.run(Orchestrator(tools=[search], llm=ProviderStyleChatModel(reply=broken)).run("q"))
    assert result.status is RunStatus.FAILED
    assert "ProviderStyleChatModel" in result.error and "quota exceeded" in result.error


def test_errors_of_the_stream_are_llm_errors():
    model = FakeListChatModel(responses=["abcdef"], error_on_chunk_number=3)

    async def main() -> str:
        parts = []
        async for chunk in as_llm(model).stream(LLMRequest((Message("user", "x"),))):
            parts.append(chunk.text)
        return "".join(parts)

    with pytest.raises(LLMError, match="FakeListChatModel: FakeListChatModelError"):
        asyncio.run(main())


# -- models that cannot stream, or whose stream is not LangChain's ------------------------------
class GenerateOnlyChatModel(BaseChatModel):
    """Implements only ``_generate``, as many simple or in-house chat models do: LangChain's
    ``astream`` then yields the whole ``AIMessage`` (not an ``AIMessageChunk``) in one piece."""

    reply: Reply

    @property
    def _llm_type(self) -> str:
        return "generate-only"

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        message = self.reply(messages, kwargs)
        message.usage_metadata = {"input_tokens": 11, "output_tokens": 7, "total_tokens": 18}
        return ChatResult(generations=[ChatGeneration(message=message)])


@pytest.mark.parametrize("make", [
    lambda: GenerateOnlyChatModel(reply=_plan_or_answer),
    lambda: FakeMessagesListChatModel(responses=[AIMessage(content=PLAN),
                                                 AIMessage(content="Finish(about 124 people per km2)")]),
], ids=["generate-only", "FakeMessagesListChatModel"])
def test_chat_models_that_cannot_stream_answer_a_run(make):
    # before: the whole message was rendered with str(), "content='1. search(...' additional_kwargs=...",
    # and every plan was rejected ("the plan has no tasks and no join()")
    result = asyncio.run(Orchestrator(tools=[search], llm=make()).run("How dense is France?"))
    assert result.status is RunStatus.ANSWERED, result.error
    assert result.answer == "about 124 people per km2"
    assert result.plans[0].text == PLAN
    assert _density(result) == pytest.approx(68_170_000 / 551_695)


def test_the_usage_on_a_whole_message_is_the_models():
    result = asyncio.run(Orchestrator(tools=[search], llm=GenerateOnlyChatModel(reply=_plan_or_answer))
                         .run("How dense is France?"))
    assert [(c.prompt_tokens, c.completion_tokens, c.usage_estimated) for c in result.llm_calls] == \
        [(11, 7, False), (11, 7, False)]


def test_estimated_usage_is_flagged_as_estimated_in_the_run():
    # before: a model reporting no usage got counts that the run took for reported ones
    # (info["usage_reported"] False, yet usage_estimated False and estimated_calls 0)
    model = FakeListChatModel(responses=[PLAN, "Finish(about 124 people per km2)"])
    result = asyncio.run(Orchestrator(tools=[search], llm=model).run("How dense is France?"))
    assert result.status is RunStatus.ANSWERED, result.error
    assert all(c.usage_estimated and c.info["usage_reported"] is False for c in result.llm_calls)
    assert result.usage.estimated_calls == result.usage.calls == 2


class OddStreamChatModel(BaseChatModel):
    """Overrides ``astream`` itself and yields something that is neither a message nor text."""

    piece: Any

    @property
    def _llm_type(self) -> str:
        return "odd-stream"

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        raise NotImplementedError

    async def astream(self, input: Any, config: Any = None, **kwargs: Any) -> AsyncIterator[Any]:  # type: ignore[override]
        yield self.piece


@pytest.mark.parametrize("piece, named", [({"content": PLAN}, "builtins.dict"),
                                          (ChatGeneration(message=AIMessage(content=PLAN)), "ChatGeneration"),
                                          (None, "NoneType")])
def test_a_stream_of_something_else_is_an_error_naming_it(piece, named):
    # before: str(piece) was taken as the model's text ("{'content': ...}", "None")
    result = asyncio.run(Orchestrator(tools=[search], llm=OddStreamChatModel(piece=piece)).run("q"))
    assert result.status is RunStatus.FAILED
    assert "OddStreamChatModel" in result.error and named in result.error, result.error


def test_a_tool_call_langchain_could_not_parse_reaches_the_plan_parser():
    # before: invalid_tool_calls were dropped, and the plan was "no JSON plan found", the
    # model's own (broken) arguments shown nowhere
    def reply(messages: list[BaseMessage], kwargs: dict[str, Any]) -> AIMessage:
        if kwargs.get("tools"):
            return AIMessage(content="", invalid_tool_calls=[
                {"name": PLAN_TOOL_NAME, "args": '{"tasks": [{"id": 1, "tool": "search", "args": {"query": "Fr',
                 "id": "call-1", "error": "unterminated string", "type": "invalid_tool_call"}])
        return AIMessage(content="Finish(about 124 people per km2)")

    orch = Orchestrator(tools=[search], llm=ProviderStyleChatModel(reply=reply), plan_format="tool_call", max_replans=0)
    result = asyncio.run(orch.run("How dense is France?"))
    assert result.status is RunStatus.FAILED
    assert '"query": "Fr' in result.plans[0].text
    assert "no JSON plan found" not in result.error, result.error


class ConfiguredChatModel(GenerateOnlyChatModel):
    """Configured for a model, as ChatOpenAI(model=...) is; answers as ``reply`` says."""

    model_name: str = "configured-8b"


def test_spans_and_info_name_the_model_asked_for_and_the_one_that_answered():
    # before: info["model"] and gen_ai.response.model were the class name ("ChatOpenAI"), not
    # the model the provider said answered
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    def served(messages: list[BaseMessage], kwargs: dict[str, Any]) -> AIMessage:
        message = _plan_or_answer(messages, kwargs)
        message.response_metadata = {"model_name": "served-8b-0613"}
        return message

    for model, asked, answered in [(ConfiguredChatModel(reply=served), "configured-8b", "served-8b-0613"),
                                   (ConfiguredChatModel(reply=_plan_or_answer), "configured-8b", "configured-8b")]:
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        result = asyncio.run(Orchestrator(tools=[search], llm=model, tracer_provider=provider).run("How dense is France?"))
        assert result.status is RunStatus.ANSWERED, result.error
        assert [c.info["model"] for c in result.llm_calls] == [answered, answered]
        chats = [s for s in exporter.get_finished_spans() if s.attributes.get("gen_ai.operation.name") == "chat"]
        assert len(chats) == 2
        assert all(s.attributes["gen_ai.request.model"] == asked for s in chats)
        assert all(s.attributes["gen_ai.response.model"] == answered for s in chats)
