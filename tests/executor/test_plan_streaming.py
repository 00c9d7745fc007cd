"""Every plan format streams, holds max_tasks before anything beyond it runs, is linear and
yields to the loop; a plan cut off at max_tokens says so (issue 9)."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from fleetcall import Orchestrator, RunStatus, ScriptedLLM, tool
from fleetcall.llm.base import Chunk, ToolCall, ToolCallDelta, Usage
from fleetcall.llm.scripted import split_tokens
from tests.executor.conftest import vrun


def json_plan(n: int, tool_name: str = "count", start: int = 1) -> str:
    return json.dumps({"tasks": [{"id": i, "thought": "", "tool": tool_name, "args": {"x": i}}
                                 for i in range(start, start + n)]})


def counting_tool():
    calls: list[int] = []

    @tool
    async def count(x: int) -> int:
        """Counts its calls."""
        calls.append(x)
        return x

    return count, calls


# -- max_tasks holds in every format --------------------------------------------------------------
@pytest.mark.parametrize("plan_format", ["json", "tool_call", "text"])
def test_a_plan_of_300_tasks_with_max_tasks_64_runs_at_most_64(plan_format):
    count, calls = counting_tool()
    if plan_format == "text":
        plan = "\n".join(f"{i}. count({i})" for i in range(1, 301)) + "\n301. join()"
    else:
        plan = json_plan(300)
    llm = ScriptedLLM([plan], tokens_per_chunk=8)
    result = vrun(Orchestrator([count], llm, plan_format=plan_format, max_tasks=64, max_replans=0).run("q"))
    assert result.status is RunStatus.FAILED
    assert len(calls) <= 64
    assert any("more than 64 tasks" in issue for issue in result.plans[0].issues), result.plans[0].issues
    assert all(t.id <= 64 or t.start is None for t in result.tasks)


def test_tasks_waiting_for_later_ones_count_towards_max_tasks():
    """A JSON plan listed backwards holds every task until its reference arrives: the limit still
    stops the reading at task 65, before anything beyond it could be released."""
    count, calls = counting_tool()
    tasks = [{"id": i, "tool": "count", "args": {"x": f"${i + 1}"} if i < 300 else {"x": 0}} for i in range(1, 301)]
    llm = ScriptedLLM([json.dumps({"tasks": tasks})], tokens_per_chunk=8)
    result = vrun(Orchestrator([count], llm, plan_format="json", max_tasks=64, max_replans=0).run("q"))
    assert calls == [] and any("more than 64 tasks" in i for i in result.plans[0].issues)


# -- JSON plans stream --------------------------------------------------------------------------
def test_json_plan_tasks_start_while_the_plan_streams(tools):
    plan = json.dumps({"tasks": [{"id": 1, "thought": "", "tool": "search", "args": {"query": "a"}},
                                 {"id": 2, "thought": "", "tool": "search", "args": {"query": "b"}},
                                 {"id": 3, "thought": "", "tool": "echo", "args": {"value": "$1 and $2"}}]})
    llm = ScriptedLLM([plan, "Finish(done)"], tpot_s=0.05)
    result = vrun(Orchestrator(tools, llm, plan_format="json").run("q"))
    assert result.status is RunStatus.ANSWERED and result.tasks[2].observation == "result of a and result of b"
    first, second, third = result.tasks
    finished = result.plans[0].finished_at
    assert first.start < second.start < finished        # each started when its object was complete
    assert first.start == pytest.approx(first.planned_at) and second.start == pytest.approx(second.planned_at)
    assert third.start == pytest.approx(second.start + 1.0)   # when its last input was ready


def test_json_plan_tasks_may_refer_to_tasks_listed_later(tools):
    plan = json.dumps([{"id": 2, "tool": "echo", "args": {"value": "$1"}}, {"id": 1, "tool": "search", "args": ["x"]}])
    result = vrun(Orchestrator(tools, ScriptedLLM([plan, "Finish(ok)"]), plan_format="json").run("q"))
    assert result.status is RunStatus.ANSWERED and result.plans[0].issues == []
    assert {t.id: t.observation for t in result.tasks} == {1: "result of x", 2: "result of x"}


def test_json_tasks_that_wait_for_tasks_that_never_come_do_not_run(tools):
    plan = json.dumps([{"id": 1, "tool": "search", "args": ["x"]}, {"id": 2, "tool": "echo", "args": ["$9"]},
                       {"id": 3, "tool": "echo", "args": ["$2"]}])
    result = vrun(Orchestrator(tools, ScriptedLLM([plan]), plan_format="json", max_replans=0).run("q"))
    by_id = {t.id: t for t in result.tasks}
    assert by_id[1].status == "ok" and by_id[2].status == "invalid" and by_id[3].status == "invalid"
    assert "$9" in by_id[2].error and any("no task 9" in i for i in result.plans[0].issues)


class ToolCallPlanner:
    """A planner that answers with a streamed tool call carrying the plan (as OpenAI servers do),
    at ``tpot_s`` per piece; the joiner answers in text."""

    def __init__(self, plan: str, tpot_s: float) -> None:
        self.plan, self.tpot_s = plan, tpot_s
        self.joiner = ScriptedLLM(["Finish(done)"])

    async def stream(self, request):
        if request.context.kind != "planner":
            async for chunk in self.joiner.stream(request):
                yield chunk
            return
        pieces = split_tokens(self.plan)
        for i, piece in enumerate(pieces):
            if i:
                await asyncio.sleep(self.tpot_s)
            yield Chunk(tool_deltas=(ToolCallDelta(0, "call_1" if i == 0 else "", "make_plan", piece),))
        yield Chunk(usage=Usage(100, len(pieces), 1), tool_calls=(ToolCall("call_1", "make_plan", self.plan),),
                    finish_reason="tool_calls")


def test_tool_call_plans_stream_from_the_arguments_deltas(tools):
    plan = json.dumps({"tasks": [{"id": 1, "tool": "search", "args": {"query": "a"}},
                                 {"id": 2, "tool": "search", "args": {"query": "b"}}]})
    result = vrun(Orchestrator(tools, ToolCallPlanner(plan, 0.05), plan_format="tool_call").run("q"))
    assert result.status is RunStatus.ANSWERED and result.plans[0].text == plan
    first, second = result.tasks
    assert first.start < second.start <= result.plans[0].finished_at
    planner = result.llm_calls[0]     # closed when the task list closed: counted from what was read
    assert planner.usage_estimated and planner.prompt_tokens > 100 and planner.completion_tokens > 10


# -- linear, and the loop keeps running --------------------------------------------------------
@pytest.mark.parametrize("plan_format", ["json", "text"])
def test_planning_gives_the_loop_turns_while_a_huge_plan_arrives_at_once(plan_format):
    """A model that sends 5,000 tasks with no pause between chunks: the loop still gets turns
    while they are parsed (so started tasks run and a deadline can fire)."""
    count, calls = counting_tool()
    n = 5000
    plan = json_plan(n) if plan_format == "json" else "\n".join(f"{i}. count({i})" for i in range(1, n + 1)) + "\njoin()"
    seen_by_ticker: list[int] = []

    async def main():
        async def ticker():
            while True:
                await asyncio.sleep(0)
                seen_by_ticker.append(len(calls))

        ticking = asyncio.ensure_future(ticker())
        try:
            return await Orchestrator([count], ScriptedLLM([plan, "Finish(x)"], tokens_per_chunk=16),
                                      plan_format=plan_format, max_tasks=None).run("q")
        finally:
            ticking.cancel()

    result = vrun(main())
    assert result.status is RunStatus.ANSWERED and len(calls) == n
    during = {c for c in seen_by_ticker if 0 < c < n}
    assert len(during) >= 10, "the loop got no turn while the plan was parsed"


def test_a_json_plan_of_20000_tasks_keeps_a_2s_deadline():
    """Real clock, generous bounds, on the process's CPU time (a busy machine stretches wall
    time, not the work done). The limit (max_tasks=64) stops the reading at task 65; with no
    limit, 50,000 tasks are parsed in linear time, giving the loop turns, so the deadline fires
    (before: 8 s past a 2 s deadline for 20,000 tasks, and no end for 50,000)."""
    count, _calls = counting_tool()
    plan = json_plan(20_000)
    started = time.process_time()
    result = asyncio.run(Orchestrator([count], ScriptedLLM([plan], tokens_per_chunk=64),
                                      plan_format="json", max_replans=0).run("q", deadline=2.0))
    assert result.status is RunStatus.FAILED and "more than 64 tasks" in result.plans[0].issues[0]
    assert time.process_time() - started < 2.0

    plan = json_plan(50_000)
    started = time.process_time()
    result = asyncio.run(Orchestrator([count], ScriptedLLM([plan, "Finish(x)"], tokens_per_chunk=64),
                                      plan_format="json", max_tasks=None).run("q", deadline=2.0))
    assert result.status in (RunStatus.TIMED_OUT, RunStatus.ANSWERED)
    assert time.process_time() - started < 10.0


# -- cut off at max_tokens ---------------------------------------------------------------------
@pytest.mark.parametrize("plan_format", ["json", "text"])
def test_a_plan_cut_off_at_max_tokens_says_so_and_shows_the_text(tools, plan_format):
    if plan_format == "json":
        plan = json.dumps({"tasks": [{"id": i, "tool": "search", "args": {"query": f"population of country {i}"}}
                                     for i in range(1, 40)]})
    else:
        plan = "\n".join(f'{i}. search("population of country {i}")' for i in range(1, 40)) + "\n40. join()"
    llm = ScriptedLLM([plan])
    result = vrun(Orchestrator(tools, llm, plan_format=plan_format, planner_max_tokens=60, max_replans=0).run("q"))
    issues = result.plans[0].issues
    assert result.status is RunStatus.FAILED
    assert len(issues) == 1 and "plan cut off at max_tokens=60" in issues[0], issues
    assert "population of country 1" in issues[0]            # the model's text, shown
    assert "Unterminated" not in issues[0] and "join()" not in issues[0]
    assert result.llm_calls[0].finish_reason == "length"
    assert all(t.status == "ok" for t in result.tasks)         # the complete tasks ran
