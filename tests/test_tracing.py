"""OpenTelemetry spans of runs (fleetcall/tracing.py), read back with the SDK's in-memory exporter:
the exact span tree of a two-plan run with a failing tool, over an emulated pool on the virtual
clock; error statuses; a no-op without a provider and without opentelemetry at all."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from fleetcall import Orchestrator, ScriptedLLM
from fleetcall.errors import ConfigError
from fleetcall.llm.base import LLMRequest
from fleetcall.router.pool import EndpointPool, script_responder
from fleetcall.tracing import NO_TRACE, Tracing
from fleetcall.vclock import run_virtual
from tests.executor.conftest import boom, search

MODEL = "llama-3.2-1b"
PLANS = ['1. search("x")\n2. boom("y")\n3. llm("Summarise $1")\n4. join()\n<END_OF_PLAN>',
         '1. search("z")\n2. join()\n<END_OF_PLAN>']


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    provider = TracerProvider()   # this test's own: the process-wide provider is left alone
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider
    provider.shutdown()


def two_plans(request: LLMRequest, said: dict[str, int]) -> str:
    """Plan, Replan, plan again, Finish; the llm tool's call answers a summary."""
    kind = request.context.kind
    said[kind] = said.get(kind, 0) + 1
    if kind == "planner":
        return PLANS[said[kind] - 1]
    if kind == "joiner":
        return ("Thought: boom failed.\nAction: Replan(boom failed)" if said[kind] == 1
                else "Thought: done.\nAction: Finish(z)")
    return "a summary"


def tree(spans: tuple[ReadableSpan, ...]) -> list[Any]:
    """The spans as nested ``(name, what, [children])``, children by start time (then what)."""
    children: dict[int | None, list[ReadableSpan]] = {}
    for span in spans:
        children.setdefault(span.parent.span_id if span.parent else None, []).append(span)

    def node(span: ReadableSpan) -> tuple[str, Any, list[Any]]:
        what = _what(span)
        kids = sorted(children.get(span.context.span_id, []), key=lambda s: (s.start_time, str(_what(s)), s.name))
        return (span.name, what, [node(k) for k in kids])

    return [node(s) for s in sorted(children.get(None, []), key=lambda s: s.start_time)]


def _what(span: ReadableSpan) -> Any:
    """An LLM call's kind, a task's id, a plan's round (None for the run)."""
    attrs = span.attributes or {}
    return attrs.get("fleetcall.llm.kind", attrs.get("fleetcall.task.id", attrs.get("fleetcall.plan.round")))


def by_name(spans: tuple[ReadableSpan, ...], name: str, **attrs: Any) -> ReadableSpan:
    (found,) = [s for s in spans if s.name == name and all((s.attributes or {}).get(k) == v for k, v in attrs.items())]
    return found


def test_a_two_plan_run_with_a_failing_tool_gives_this_span_tree(provider: TracerProvider,
                                                                exporter: InMemorySpanExporter) -> None:
    said: dict[str, int] = {}

    async def main():
        async with EndpointPool.emulated(["A100-80G"], MODEL, responder=script_responder(
                lambda r: two_plans(r, said))) as pool:
            orch = Orchestrator(tools=[search, boom], llm=pool, tracer_provider=provider)
            return await orch.run("What is x?", query_id="q-7", deadline=60)

    result = run_virtual(main())
    assert result.status.value == "answered" and len(result.plans) == 2
    spans = exporter.get_finished_spans()
    chat = f"chat {MODEL}"
    assert tree(spans) == [
        ("fleetcall.run", None, [
            ("fleetcall.plan", 0, [
                (chat, "planner", []),
                ("execute_tool search", 1, []),
                ("execute_tool boom", 2, []),
                ("execute_tool llm", 3, [(chat, "tool:llm", [])]),   # under its task, not under search
            ]),
            (chat, "joiner", []),
            ("fleetcall.plan", 1, [
                (chat, "planner", []),
                ("execute_tool search", 1, []),
            ]),
            (chat, "joiner", []),
        ]),
    ]
    assert len({s.context.trace_id for s in spans}) == 1

    run = by_name(spans, "fleetcall.run")
    assert run.status.status_code is StatusCode.UNSET
    assert {k: run.attributes[k] for k in ("gen_ai.operation.name", "fleetcall.query_id", "fleetcall.run.mode",
                                           "fleetcall.run.status", "fleetcall.run.plans", "fleetcall.run.replans",
                                           "fleetcall.run.tasks", "fleetcall.run.llm_calls",
                                           "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens")} == {
        "gen_ai.operation.name": "invoke_agent", "fleetcall.query_id": "q-7", "fleetcall.run.mode": "compiled",
        "fleetcall.run.status": "answered", "fleetcall.run.plans": 2, "fleetcall.run.replans": 1,
        "fleetcall.run.tasks": 4, "fleetcall.run.llm_calls": 5,
        "gen_ai.usage.input_tokens": result.usage.prompt_tokens,
        "gen_ai.usage.output_tokens": result.usage.completion_tokens}
    assert run.attributes["fleetcall.run.deadline_s"] == 60.0
    assert run.end_time - run.start_time == pytest.approx(result.latency * 1e9, abs=1e3)   # loop time

    first = by_name(spans, "fleetcall.plan", **{"fleetcall.plan.round": 0})
    assert dict(first.attributes) == {"fleetcall.query_id": "q-7", "fleetcall.plan.id": "q-7/0",
                                      "fleetcall.plan.round": 0, "fleetcall.plan.format": "text",
                                      "fleetcall.plan.tasks": 3, "fleetcall.plan.issues": 0}
    assert first.status.status_code is StatusCode.UNSET

    failed = by_name(spans, "execute_tool boom")
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.status.description == "RuntimeError: boom on y"
    assert {k: failed.attributes[k] for k in ("gen_ai.operation.name", "gen_ai.tool.name", "fleetcall.task.id",
                                              "fleetcall.plan.round", "fleetcall.task.status", "error.type")} == {
        "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "boom", "fleetcall.task.id": 2,
        "fleetcall.plan.round": 0, "fleetcall.task.status": "error", "error.type": "error"}
    searched = by_name(spans, "execute_tool search", **{"fleetcall.plan.round": 0})
    assert searched.status.status_code is StatusCode.UNSET
    assert searched.end_time - searched.start_time == pytest.approx(1e9, abs=1e3)   # the tool's 1 s

    calls = [s for s in spans if s.name == chat]
    assert [s.attributes["fleetcall.llm.kind"] for s in sorted(calls, key=lambda s: s.start_time)] == [
        c.kind for c in sorted(result.llm_calls, key=lambda c: c.start)]
    for span, record in zip(sorted(calls, key=lambda s: s.start_time), sorted(result.llm_calls, key=lambda c: c.start),
                            strict=True):
        a = span.attributes
        assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.request.model"] == MODEL
        assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (record.prompt_tokens,
                                                                                    record.completion_tokens)
        assert a["fleetcall.llm.endpoint"] == "A100-80G-0" == record.info["endpoint"]
        assert a["fleetcall.llm.queue_s"] == record.info["queue_s"] and a["fleetcall.llm.ttft_s"] > 0
        assert a["fleetcall.plan.round"] == record.round and a["fleetcall.query_id"] == "q-7"
        assert span.status.status_code is StatusCode.UNSET
        assert span.end_time - span.start_time == pytest.approx((record.end - record.start) * 1e9, abs=1e3)


def test_a_rejected_plan_and_a_failed_run_have_error_statuses(provider: TracerProvider,
                                                              exporter: InMemorySpanExporter) -> None:
    async def main():
        llm = ScriptedLLM(["1. nosuch()\n2. join()\n<END_OF_PLAN>"])
        return await Orchestrator(llm=llm, max_replans=0, tracer_provider=provider).run("q", query_id="q-8")

    result = run_virtual(main())
    assert result.status.value == "failed"
    spans = exporter.get_finished_spans()
    assert tree(spans) == [("fleetcall.run", None, [("fleetcall.plan", 0, [("chat", "planner", [])])])]
    plan, run = by_name(spans, "fleetcall.plan"), by_name(spans, "fleetcall.run")
    assert plan.status.status_code is StatusCode.ERROR and plan.attributes["error.type"] == "plan_rejected"
    assert plan.status.description.startswith("plan rejected: line 1: ") and "nosuch" in plan.status.description
    assert run.status.status_code is StatusCode.ERROR and run.attributes["error.type"] == "failed"
    assert run.status.description == result.error[:500]


def test_a_failed_llm_call_and_a_timed_out_run_have_error_statuses(provider: TracerProvider,
                                                                   exporter: InMemorySpanExporter) -> None:
    async def main():
        slow = Orchestrator(tools=[search], llm=ScriptedLLM(['1. search("x")\n2. join()']), tracer_provider=provider)
        timed_out = await slow.run("q", deadline=0.5)
        broken = Orchestrator(llm=ScriptedLLM([]), tracer_provider=provider)   # no response left: LLMError
        return timed_out, await broken.run("q")

    timed_out, failed = run_virtual(main())
    assert (timed_out.status.value, failed.status.value) == ("timed_out", "failed")
    spans = exporter.get_finished_spans()
    runs = {s.attributes["fleetcall.run.status"]: s for s in spans if s.name == "fleetcall.run"}
    assert runs["timed_out"].attributes["error.type"] == "timed_out"
    task = by_name(spans, "execute_tool search")
    assert task.attributes["fleetcall.task.status"] == "cancelled" and task.status.status_code is StatusCode.ERROR
    call = [s for s in spans if s.name == "chat" and s.parent.span_id != runs["timed_out"].context.span_id
            and s.context.trace_id == runs["failed"].context.trace_id]
    assert [c.attributes["error.type"] for c in call] == ["LLMError"]
    assert call[0].status.status_code is StatusCode.ERROR and "no response left" in call[0].status.description


def test_concurrent_runs_get_separate_trees_and_baselines_nest_under_the_run(provider: TracerProvider,
                                                                             exporter: InMemorySpanExporter) -> None:
    async def main():
        def reply(request: LLMRequest) -> str:
            if request.context.kind == "planner":
                return '1. search("x")\n2. search("y")\n3. join()'
            if request.context.kind == "react":
                if len(request.messages) == 2:   # system and question: the first step
                    return 'Thought: look.\nAction: search("x")'
                return "Thought: ok.\nAction: Finish(x)"
            return "Finish(x)"

        orch = Orchestrator(tools=[search], llm=ScriptedLLM(reply, ttft_s=0.1), tracer_provider=provider)
        return await asyncio.gather(*(orch.run(f"q{i}", query_id=f"c{i}") for i in range(3)),
                                    orch.run("r", query_id="r", mode="react"))

    run_virtual(main())
    spans = exporter.get_finished_spans()
    trees = {s.attributes["fleetcall.query_id"]: s.context.trace_id for s in spans if s.name == "fleetcall.run"}
    assert len(set(trees.values())) == 4
    for query_id, trace_id in trees.items():
        assert {s.attributes["fleetcall.query_id"] for s in spans if s.context.trace_id == trace_id} == {query_id}
    react = tree(tuple(s for s in spans if s.context.trace_id == trees["r"]))
    assert react == [("fleetcall.run", None, [("chat", "react", []), ("execute_tool search", 1, []),
                                             ("chat", "react", [])])]
    for query_id in ("c0", "c1", "c2"):
        plan = tree(tuple(s for s in spans if s.context.trace_id == trees[query_id]))[0][2][0]
        assert plan == ("fleetcall.plan", 0, [("chat", "planner", []), ("execute_tool search", 1, []),
                                              ("execute_tool search", 2, [])])


def test_without_a_tracer_provider_a_run_makes_no_span() -> None:
    """The process-wide provider is OpenTelemetry's default (no SDK): nothing records."""
    async def main():
        return Tracing().start("q", "compiled", None, asyncio.get_running_loop())

    assert run_virtual(main()) is NO_TRACE
    with pytest.raises(ConfigError, match="TracerProvider"):
        Orchestrator(llm=ScriptedLLM([]), tracer_provider=object())


def _run_in_subprocess(code: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=120)
    return json.loads(out.stdout.splitlines()[-1])


RUN = """
import asyncio, json, sys
from fleetcall import Orchestrator, ScriptedLLM
async def main():
    llm = ScriptedLLM(['1. math("1 + 1")\\n2. join()', 'Finish(2)'])
    return await Orchestrator(llm=llm).run("1 + 1?")
"""


def test_without_opentelemetry_runs_work_and_nothing_of_it_is_imported() -> None:
    code = ("import sys; sys.modules['opentelemetry'] = None  # as if not installed: importing it fails\n"
            + RUN + "result = asyncio.run(main())\n"
            "print(json.dumps({'status': result.status.value, 'loaded': sorted(m for m, v in sys.modules.items()"
            " if m.startswith('opentelemetry') and v is not None)}))")
    assert _run_in_subprocess(code) == {"status": "answered", "loaded": []}


def test_the_global_provider_is_used_and_a_callers_span_is_the_runs_parent() -> None:
    code = RUN + """
before = sorted(m for m in sys.modules if m.startswith('opentelemetry'))
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
with trace.get_tracer("app").start_as_current_span("request") as outer:
    result = asyncio.run(main())
spans = {s.name: s for s in exporter.get_finished_spans()}
print(json.dumps({"before": before, "names": sorted(spans),
                  "parent": spans["fleetcall.run"].parent.span_id == outer.get_span_context().span_id}))
"""
    got = _run_in_subprocess(code)
    assert got["before"] == []   # importing fleetcall, defining the run: nothing of opentelemetry yet
    assert got["names"] == ["chat", "execute_tool math", "fleetcall.plan", "fleetcall.run", "request"]
    assert got["parent"] is True


def test_spans_a_tool_makes_are_children_of_its_task_in_its_thread_too(provider: TracerProvider,
                                                                       exporter: InMemorySpanExporter) -> None:
    """A sync tool runs in a thread of its own: the task's context goes with it (real clock:
    the virtual one refuses threads)."""
    from fleetcall import tool

    @tool
    def lookup(x: str) -> str:
        """A sync tool that traces its own work."""
        with provider.get_tracer("app").start_as_current_span("lookup-db"):
            return x

    @tool
    async def fetch(x: str) -> str:
        """An async one that does the same."""
        with provider.get_tracer("app").start_as_current_span("fetch-http"):
            return x

    async def main():
        llm = ScriptedLLM(['1. lookup("a")\n2. fetch("b")\n3. join()', "Finish(ab)"])
        async with Orchestrator(tools=[lookup, fetch], llm=llm, tracer_provider=provider) as orch:
            return await orch.run("q", deadline=30)

    assert asyncio.run(main()).status.value == "answered"
    spans = exporter.get_finished_spans()
    for inner, task in (("lookup-db", "execute_tool lookup"), ("fetch-http", "execute_tool fetch")):
        assert by_name(spans, inner).parent.span_id == by_name(spans, task).context.span_id
