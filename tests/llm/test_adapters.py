"""as_llm and the Orchestrator's llm arguments: what implements the protocol is taken as it is,
LangChain chat models and OpenAI clients get an adapter, anything else is refused at
construction with a ConfigError naming what is accepted (never accepted to fail on the first call)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import openai
import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel, GenericFakeChatModel
from langchain_core.runnables import RunnableLambda

from fleetcall import Chunk, ConfigError, EndpointPool, LLMRequest, Orchestrator, ScriptedLLM, as_llm
from fleetcall.llm.langchain import LangChainLLM
from fleetcall.llm.openai import OpenAILLM


class SyncStream:
    """Has a ``stream`` method, like a LangChain model, but a synchronous one."""

    def stream(self, request: LLMRequest) -> Iterator[Chunk]:
        yield Chunk("Finish(x)")


class AsyncReturn:
    """``async def stream`` that returns a list instead of yielding."""

    async def stream(self, request: LLMRequest) -> list[Chunk]:
        return [Chunk("Finish(x)")]


class Unannotated:
    """A plain ``stream`` that says nothing of what it returns."""

    def stream(self, request):  # noqa: ANN001, ANN201 - the point of the test
        return iter([Chunk("Finish(x)")])


class ReturnsIterator:
    """A plain ``stream`` annotated with a sync iterator."""

    def stream(self, request: LLMRequest) -> Iterator[Chunk]:
        return iter([Chunk("Finish(x)")])


class Delegating:
    """A plain ``stream`` that returns an async iterator, and says so: the protocol."""

    def __init__(self) -> None:
        self.inner = ScriptedLLM(["Finish(x)"])

    def stream(self, request: LLMRequest) -> AsyncIterator[Chunk]:
        return self.inner.stream(request)


class NotAnLLM:
    stream = "not callable"


REFUSED = [
    (SyncStream(), "synchronous generator"),
    (AsyncReturn(), "returns instead of yielding"),
    (Unannotated(), "without a return annotation"),
    (ReturnsIterator(), "not an async iterator"),
    (NotAnLLM(), "not callable"),
    (object(), "no stream method"),
    ("gpt-4o", "no stream method"),
    (RunnableLambda(lambda x: x), "Runnable that is not a chat model"),
    (FakeListChatModel(responses=["x"]).bind(stop=["\n"]), "Runnable that is not a chat model"),
]


@pytest.mark.parametrize("obj, problem", REFUSED, ids=lambda v: type(v).__name__ if not isinstance(v, str) else v)
def test_objects_that_are_not_the_protocol_are_refused_at_construction(obj, problem):
    with pytest.raises(ConfigError, match=problem) as raised:
        Orchestrator(tools=[], llm=obj)
    text = str(raised.value)
    assert "LangChain BaseChatModel" in text and "openai.AsyncOpenAI" in text   # names what is accepted


@pytest.mark.parametrize("role", ["planner_llm", "joiner_llm", "tool_llm"])
def test_each_role_is_checked_and_named(role):
    with pytest.raises(ConfigError, match=role):
        Orchestrator(tools=[], llm=ScriptedLLM([]), **{role: SyncStream()})


def test_protocol_implementations_are_taken_as_they_are():
    scripted = ScriptedLLM(["x"])
    assert as_llm(scripted) is scripted
    pool = EndpointPool.emulated(["A100-80G"], "llama-3.2-1b")
    assert as_llm(pool) is pool
    delegating = Delegating()
    assert as_llm(delegating) is delegating
    orch = Orchestrator(tools=[], llm=scripted)
    assert orch.planner_llm is orch.joiner_llm is orch.tool_llm is scripted


@pytest.mark.parametrize("model", [FakeListChatModel(responses=["x"]), GenericFakeChatModel(messages=iter(["x"]))],
                         ids=["FakeListChatModel", "GenericFakeChatModel"])
def test_langchain_chat_models_get_the_adapter(model):
    llm = as_llm(model)
    assert isinstance(llm, LangChainLLM) and llm.model is model
    orch = Orchestrator(tools=[], llm=model)
    assert isinstance(orch.planner_llm, LangChainLLM) and orch.planner_llm is orch.joiner_llm is orch.tool_llm


def test_an_async_openai_client_needs_a_model_name():
    client = openai.AsyncOpenAI(api_key="k", base_url="http://127.0.0.1:9/v1")
    with pytest.raises(ConfigError, match=r"model name: as_llm\(client, model="):
        Orchestrator(tools=[], llm=client)
    llm = as_llm(client, model="llama")
    assert isinstance(llm, OpenAILLM) and llm.client is client and llm.model == "llama"
    assert Orchestrator(tools=[], llm=llm).planner_llm is llm


def test_the_sync_openai_client_is_refused_with_the_async_one_named():
    with pytest.raises(ConfigError, match="openai.AsyncOpenAI"):
        as_llm(openai.OpenAI(api_key="k", base_url="http://127.0.0.1:9/v1"), model="llama")


def test_a_model_name_for_anything_but_an_openai_client_is_an_error():
    with pytest.raises(ConfigError, match="model="):
        as_llm(ScriptedLLM([]), model="llama")
    with pytest.raises(ConfigError, match="model="):
        as_llm(FakeListChatModel(responses=["x"]), model="llama")


def test_tool_call_plans_need_a_model_that_makes_tool_calls():
    with pytest.raises(ConfigError, match="tool_call.*bind_tools"):
        Orchestrator(tools=[], llm=FakeListChatModel(responses=["x"]), plan_format="tool_call")
    Orchestrator(tools=[], llm=FakeListChatModel(responses=["x"]), plan_format="json")   # prompted JSON


@pytest.mark.parametrize("cls", [ScriptedLLM, EndpointPool, FakeListChatModel, openai.AsyncOpenAI, Delegating],
                         ids=lambda c: c.__name__)
def test_a_class_instead_of_an_instance_is_refused_at_construction(cls):
    # before: ScriptedLLM and EndpointPool (classes whose stream is an async generator function)
    # were accepted and every run failed with "stream() missing 1 required positional argument";
    # the others were refused with a misleading reason ("its stream is a synchronous generator")
    with pytest.raises(ConfigError, match=rf"got the class .*{cls.__name__} itself, not an instance") as raised:
        Orchestrator(tools=[], llm=cls)
    assert f"pass {cls.__name__}(...)" in str(raised.value)
    with pytest.raises(ConfigError, match="planner_llm: .*not an instance|planner_llm must be"):
        Orchestrator(tools=[], llm=ScriptedLLM([]), planner_llm=cls)
