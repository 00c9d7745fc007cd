"""orch.as_runnable(): the Orchestrator as a LangChain Runnable (invoke, ainvoke, batch, abatch,
astream of events) and as a node of a real LangGraph StateGraph (invoked, streamed, checkpointed).
The model is scripted; nothing of LangChain or LangGraph is mocked."""

from __future__ import annotations

import asyncio
from typing import Any, TypedDict

import pytest
from langchain_core.runnables import Runnable, RunnableLambda
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph

from fleetcall import LLMRequest, Orchestrator, RunResult, RunStatus, ScriptedLLM, events, tool


@tool
async def lookup(city: str) -> dict:
    """Facts about a city: name and population."""
    await asyncio.sleep(0.01)
    return {"name": city, "population": len(city) * 1_000_000}


def respond(request: LLMRequest) -> str:
    """Plans a lookup of the city named last in the question; answers with its population."""
    question = request.messages[-1].content.split("Question:")[-1].split("\n")[0]
    city = question.strip().rstrip("?").split()[-1]
    if request.context.kind == "joiner":
        return f"Finish({city} has {len(city)} million people)"
    return f'1. lookup("{city}")\n2. join()'


def orchestrator() -> Orchestrator:
    return Orchestrator(tools=[lookup], llm=ScriptedLLM(respond))


def test_it_is_a_runnable_that_answers_a_query_or_a_state():
    runnable = orchestrator().as_runnable()
    assert isinstance(runnable, Runnable)
    out = runnable.invoke("How many people live in Paris?")
    assert out["answer"] == "Paris has 5 million people"
    assert isinstance(out["result"], RunResult) and out["result"].status is RunStatus.ANSWERED
    out = asyncio.run(runnable.ainvoke({"query": "How many people live in Lyon?", "other": 1}))
    assert out["answer"] == "Lyon has 4 million people"


def test_batch_and_abatch_keep_the_order_of_their_inputs():
    runnable = orchestrator().as_runnable()
    cities = ["Paris", "Rome", "Berlin", "Oslo"]
    outs = runnable.batch([f"People in {c}?" for c in cities])
    assert [o["answer"] for o in outs] == [f"{c} has {len(c)} million people" for c in cities]
    outs = asyncio.run(runnable.abatch([{"query": f"People in {c}?"} for c in cities], config={"max_concurrency": 2}))
    assert [o["result"].tasks[0].observation["name"] for o in outs] == cities


def test_astream_yields_the_runs_events_then_the_output():
    async def main() -> list[dict[str, Any]]:
        return [chunk async for chunk in orchestrator().as_runnable().astream("People in Madrid?")]

    chunks = asyncio.run(main())
    kinds = [type(c["event"]).__name__ for c in chunks[:-1]]
    assert kinds[0] == "TaskPlanned" and "TaskFinished" in kinds and kinds[-1] == "RunFinished"
    assert isinstance(chunks[-2]["event"], events.RunFinished)
    assert chunks[-1]["answer"] == "Madrid has 6 million people"


def test_it_composes_with_lcel_and_keys_are_configurable():
    runnable = orchestrator().as_runnable(input_key="question", output_key="reply", result_key="run")
    chain = RunnableLambda(lambda q: {"question": q}) | runnable | RunnableLambda(lambda out: out["reply"].upper())
    assert chain.invoke("People in Nice?") == "NICE HAS 4 MILLION PEOPLE"


def test_bad_inputs_are_named():
    runnable = orchestrator().as_runnable()
    with pytest.raises(ValueError, match="no 'query' key"):
        runnable.invoke({"question": "x"})
    with pytest.raises(ValueError, match="query string or a mapping"):
        runnable.invoke(42)   # type: ignore[arg-type]


def test_a_failed_run_is_a_value_with_no_answer():
    orch = Orchestrator(tools=[lookup], llm=ScriptedLLM(lambda request: "1. nowhere()\n2. join()"), max_replans=0)
    out = orch.as_runnable().invoke("People in Paris?")
    assert out["answer"] is None and out["result"].status is RunStatus.FAILED


# -- in a real LangGraph StateGraph -----------------------------------------------------------
class State(TypedDict, total=False):
    query: str
    answer: str | None
    result: RunResult
    summary: str


def summarize(state: State) -> dict[str, str]:
    result = state["result"]
    return {"summary": f"{state['answer']} ({result.status.value}, {len(result.tasks)} task)"}


def _graph(checkpointer: Any = None) -> Any:
    graph = StateGraph(State)
    graph.add_node("research", orchestrator().as_runnable())
    graph.add_node("summarize", summarize)
    graph.add_edge(START, "research")
    graph.add_edge("research", "summarize")
    graph.add_edge("summarize", END)
    return graph.compile(checkpointer=checkpointer)


EXPECTED = "Paris has 5 million people (answered, 1 task)"


def test_a_langgraph_node_invoked_sync_and_async():
    assert _graph().invoke({"query": "People in Paris?"})["summary"] == EXPECTED
    state = asyncio.run(_graph().ainvoke({"query": "People in Paris?"}))
    assert state["summary"] == EXPECTED and state["result"].tasks[0].observation["population"] == 5_000_000


@pytest.mark.parametrize("mode", ["updates", "values", "custom", "messages"])
def test_a_langgraph_node_when_the_graph_streams(mode):
    async def main() -> list[Any]:
        return [chunk async for chunk in _graph().astream({"query": "People in Paris?"}, stream_mode=[mode, "updates"])]

    chunks = asyncio.run(main())
    updates = [data for kind, data in chunks if kind == "updates"]
    research = next(u["research"] for u in updates if "research" in u)
    assert set(research) == {"answer", "result"} and research["answer"] == "Paris has 5 million people"
    assert next(u["summarize"] for u in updates if "summarize" in u) == {"summary": EXPECTED}


def test_a_langgraph_node_with_a_checkpointer_keeps_the_run_result():
    graph = _graph(InMemorySaver())
    config = {"configurable": {"thread_id": "t1"}}
    asyncio.run(graph.ainvoke({"query": "People in Paris?"}, config))
    saved = graph.get_state(config).values
    assert saved["summary"] == EXPECTED
    assert saved["result"].status is RunStatus.ANSWERED and saved["result"].answer == "Paris has 5 million people"


def test_langgraph_astream_events_streams_the_nodes_run_events():
    """astream_events makes LangGraph run each node with astream: the run's events show as the
    node's stream chunks, and the last chunk is still the node's state update."""

    async def main() -> tuple[list[Any], Any]:
        chunks, final = [], None
        async for e in _graph().astream_events({"query": "People in Paris?"}, version="v2"):
            if e["event"] == "on_chain_stream" and e["name"] == "fleetcall":
                chunks.append(e["data"]["chunk"])
            if e["event"] == "on_chain_end" and e["name"] == "LangGraph":
                final = e["data"]["output"]
        return chunks, final

    chunks, final = asyncio.run(main())
    assert isinstance(chunks[0]["event"], events.TaskPlanned) and isinstance(chunks[-2]["event"], events.RunFinished)
    assert set(chunks[-1]) == {"answer", "result"}
    assert final["summary"] == EXPECTED


def test_invoke_works_from_code_that_already_runs_a_loop():
    async def main() -> dict[str, Any]:
        return orchestrator().as_runnable().invoke("People in Bern?")   # sync call inside a loop

    assert asyncio.run(main())["answer"] == "Bern has 4 million people"


class _Handle:
    """What tools often return: an object msgpack knows nothing of (here it also holds a lock)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.lock = asyncio.Lock()

    def __str__(self) -> str:
        return f"handle {self.name}"


@tool
async def open_handle(city: str) -> object:
    """A handle on a city's records."""
    return _Handle(city)


@tool
async def raw_bytes(city: str) -> bytes:
    """The city's record as bytes."""
    return city.encode() + b"\xff"


@pytest.mark.parametrize("tool_name, shown", [("open_handle", "handle Paris"),
                                               ("raw_bytes", {"$bytes_b64": "UGFyaXP/"})])
def test_a_checkpointed_node_keeps_any_observation(tool_name, shown):
    # before: LangGraph's checkpointer (msgpack of RunResult.model_dump()) raised
    # "TypeError: Type is not msgpack serializable: RunResult" for an observation it did not know
    def respond(request: LLMRequest) -> str:
        if request.context.kind == "joiner":
            return "Finish(found)"
        return f'1. {tool_name}("Paris")\n2. join()'

    graph = StateGraph(State)
    orch = Orchestrator(tools=[open_handle, raw_bytes], llm=ScriptedLLM(respond))
    graph.add_node("research", orch.as_runnable())
    graph.add_edge(START, "research")
    graph.add_edge("research", END)
    app = graph.compile(checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "t1"}}
    state = asyncio.run(app.ainvoke({"query": "People in Paris?"}, config))
    assert state["answer"] == "found"
    observation = state["result"].tasks[0].observation       # the run's own record: the object
    assert isinstance(observation, (_Handle, bytes))
    saved = app.get_state(config).values["result"]            # the checkpoint's: shown by observe's rule
    assert saved.status is RunStatus.ANSWERED and saved.tasks[0].observation == shown
