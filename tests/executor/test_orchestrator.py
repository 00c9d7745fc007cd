"""The orchestrator end to end on a scripted LLM: parallelism, streaming, failures, replans."""

from __future__ import annotations

import asyncio

import pytest

from fleetcall import ConfigError, Orchestrator, RunStatus, ScriptedLLM, tool
from fleetcall.executor import events as ev
from tests.executor.conftest import vrun

PLAN3 = '1. search("a")\n2. search("b")\n3. search("c")\n4. join()\n<END_OF_PLAN>'


def test_independent_tasks_run_concurrently(tools):
    llm = ScriptedLLM([PLAN3, "Finish(done)"])
    result = vrun(Orchestrator(tools, llm).run("q"))
    assert result.status is RunStatus.ANSWERED and result.answer == "done"
    assert [t.observation for t in result.tasks] == ["result of a", "result of b", "result of c"]
    assert result.latency == pytest.approx(1.0)  # three 1 s searches at once, not one after another


def test_task_starts_while_the_plan_still_streams(tools):
    llm = ScriptedLLM([PLAN3, "Finish(done)"], tpot_s=0.05)
    result = vrun(Orchestrator(tools, llm).run("q"))
    first = result.tasks[0]
    assert first.start is not None and first.start < result.plans[0].finished_at
    # each task starts the moment its own line is complete
    assert all(t.start == pytest.approx(t.planned_at) for t in result.tasks)


def test_dependent_task_starts_when_its_last_dependency_finishes(tools):
    plan = '1. search("a")\n2. profile("b")\n3. echo("$1 and $2")\n4. join()'
    result = vrun(Orchestrator(tools, ScriptedLLM([plan, "Finish(x)"])).run("q"))
    t3 = result.tasks[2]
    assert t3.start == pytest.approx(1.0)
    assert t3.observation.startswith("result of a and {")  # both references substituted in the string


def test_whole_argument_reference_keeps_its_type(tools):
    plan = '1. profile("p")\n2. echo($1)\n3. echo($1.price)\n4. echo($1.tags[1])\n5. join()'
    result = vrun(Orchestrator(tools, ScriptedLLM([plan, "Finish(x)"])).run("q"))
    assert result.tasks[1].observation == {"name": "p", "price": 12.5, "tags": ["a", "b"]}
    assert result.tasks[2].observation == 12.5
    assert result.tasks[3].observation == "b"


def test_raising_tool_becomes_an_observation_and_skips_dependents(tools):
    plan = '1. boom("x")\n2. echo($1)\n3. echo($2)\n4. search("ok")\n5. join()'
    llm = ScriptedLLM([plan, "Finish(partial)"])
    result = vrun(Orchestrator(tools, llm).run("q"))
    assert result.status is RunStatus.ANSWERED
    by_id = {t.id: t for t in result.tasks}
    assert by_id[1].status == "error" and "boom on x" in by_id[1].error
    assert by_id[2].status == "skipped" and "task 1" in by_id[2].error
    assert by_id[3].status == "skipped" and "task 1" in by_id[3].error
    assert by_id[4].status == "ok"
    joiner_prompt = "\n".join(m.content for m in llm.requests[-1].messages)
    assert "boom on x" in joiner_prompt


def test_tool_timeout_and_retries():
    calls = []

    @tool(timeout_s=0.5, retries=2)
    async def slow(x: int) -> int:
        """Too slow."""
        calls.append(x)
        await asyncio.sleep(10)
        return x

    result = vrun(Orchestrator([slow], ScriptedLLM(["1. slow(1)\njoin()", "Finish(no)"])).run("q"))
    task = result.tasks[0]
    assert task.status == "error" and "timed out" in task.error and task.attempts == 3
    assert len(calls) == 3 and result.latency == pytest.approx(1.5)


def test_deadline_cancels_every_task(tools):
    cancelled = []

    @tool
    async def forever(x: str) -> str:
        """Never ends."""
        try:
            await asyncio.sleep(1e6)
        except asyncio.CancelledError:
            cancelled.append(x)
            raise
        return x

    plan = '1. forever("a")\n2. forever("b")\n3. join()'
    result = vrun(Orchestrator([forever], ScriptedLLM([plan])).run("q", deadline=5.0))
    assert result.status is RunStatus.TIMED_OUT
    assert result.latency == pytest.approx(5.0)
    assert sorted(cancelled) == ["a", "b"]
    assert {t.status for t in result.tasks} == {"cancelled"}


def test_cancel_through_the_handle(tools):
    async def main():
        orch = Orchestrator(tools, ScriptedLLM([PLAN3, "Finish(x)"]))
        handle = orch.start("q")
        await asyncio.sleep(0.5)
        handle.cancel()
        return await handle.result()

    result = vrun(main())
    assert result.status is RunStatus.CANCELLED
    assert all(t.status == "cancelled" for t in result.tasks)


def test_invalid_plan_goes_back_to_the_planner(tools):
    bad = '1. nosuchtool("a")\n2. join()'
    llm = ScriptedLLM([bad, '1. search("a")\n2. join()', "Finish(ok)"])
    result = vrun(Orchestrator(tools, llm).run("q"))
    assert result.status is RunStatus.ANSWERED and result.answer == "ok"
    assert result.plans[0].issues and "nosuchtool" in result.plans[0].issues[0]
    assert len(result.replans) == 1
    replan_prompt = "\n".join(m.content for m in llm.requests[1].messages)
    assert "nosuchtool" in replan_prompt


def test_no_valid_plan_ends_in_a_clear_failure(tools):
    bad = '1. nosuchtool("a")\n2. join()'
    result = vrun(Orchestrator(tools, ScriptedLLM([bad] * 3), max_replans=2).run("q"))
    assert result.status is RunStatus.FAILED
    assert "nosuchtool" in result.error and len(result.replans) == 2


def test_joiner_replan_counts_replans_not_rounds(tools):
    one = '1. search("a")\n2. join()'
    script = [one, "Replan(need more)", one, "Replan(still)", one, "Finish(late)"]
    result = vrun(Orchestrator(tools, ScriptedLLM(script), max_replans=2).run("q"))
    assert result.answer == "late" and len(result.replans) == 2
    assert [r.reason for r in result.replans] == ["need more", "still"]
    limited = vrun(Orchestrator(tools, ScriptedLLM(script), max_replans=1).run("q"))
    assert limited.status is RunStatus.FAILED and "still" in limited.error


def test_answer_with_parentheses_is_kept_whole(tools):
    result = vrun(Orchestrator(tools, ScriptedLLM([PLAN3, "Thought: ok\nAction: Finish(Star Wars (1977 film))"])).run("q"))
    assert result.answer == "Star Wars (1977 film)"


def test_llm_failure_is_a_failed_run_not_a_crash(tools):
    result = vrun(Orchestrator(tools, ScriptedLLM([PLAN3])).run("q"))  # no joiner reply scripted
    assert result.status is RunStatus.FAILED and "joiner" in result.error


def test_stream_yields_typed_events_in_order(tools):
    async def main():
        orch = Orchestrator(tools, ScriptedLLM([PLAN3, "Finish(x)"]))
        return [e async for e in orch.stream("q")]

    events = vrun(main())
    kinds = [type(e).__name__ for e in events]
    assert kinds[0] == "TaskPlanned" and kinds[-2:] == ["AnswerReady", "RunFinished"]
    assert kinds.count("TaskFinished") == 3
    assert isinstance(events[-1], ev.RunFinished) and events[-1].result.answer == "x"


def test_thousand_concurrent_runs_on_one_orchestrator(tools):
    def reply(request):
        question = request.messages[-1].content
        n = question.split("#")[-1].split()[0] if "#" in question else "?"
        if request.context.kind == "planner":
            return f'1. search("x{n}")\n2. search("y{n}")\n3. echo("$1 + $2")\n4. join()'
        return f"Finish(answer {n})"

    async def main():
        orch = Orchestrator(tools, ScriptedLLM(reply, ttft_s=0.2, tpot_s=0.01))
        return await asyncio.gather(*(orch.run(f"question #{i} please") for i in range(1000)))

    results = vrun(main())
    assert all(r.status is RunStatus.ANSWERED for r in results)
    assert [r.answer for r in results] == [f"answer {i}" for i in range(1000)]
    assert all(r.tasks[2].observation == f"result of x{i} + result of y{i}" for i, r in enumerate(results))


def test_sync_tool_runs_in_a_thread_without_blocking_the_loop():
    import time

    @tool
    def blocking(x: int) -> int:
        """Sleeps for real."""
        time.sleep(0.2)
        return x * 2

    async def main():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        t = asyncio.create_task(ticker())
        orch = Orchestrator([blocking], ScriptedLLM(["1. blocking(1)\n2. blocking(2)\n3. join()", "Finish(ok)"]))
        result = await orch.run("q")
        t.cancel()
        return result, ticks

    result, ticks = asyncio.run(main())
    assert [t.observation for t in result.tasks] == [2, 4]
    assert ticks >= 5  # the loop kept running while both sync tools slept (in parallel threads)
    assert result.latency < 0.39


@pytest.mark.parametrize("mode", ["react", "parallel_calls"])
def test_baselines_use_the_same_tools(tools, mode):
    if mode == "react":
        script = ['Thought: a\nAction: search("a")', 'Thought: b\nAction: search("b")', "Action: Finish(ab)"]
    else:
        script = ['1. search("a")\n2. search("b")', "Finish(ab)"]
    result = vrun(Orchestrator(tools, ScriptedLLM(script)).run("q", mode=mode))
    assert result.status is RunStatus.ANSWERED and result.answer == "ab" and result.mode == mode
    assert [t.observation for t in result.tasks] == ["result of a", "result of b"]
    assert result.latency == pytest.approx(2.0 if mode == "react" else 1.0)


@pytest.mark.parametrize(
    "kwargs, message",
    [({}, "no LLM"), ({"max_replans": -1}, "max_replans"), ({"plan_format": "xml"}, "plan_format")],
)
def test_bad_configuration_is_named(tools, kwargs, message):
    llm = None if not kwargs else ScriptedLLM([])
    with pytest.raises(ConfigError, match=message):
        Orchestrator(tools, llm, **kwargs)


def test_streamed_plan_longer_than_max_tasks_is_reported_and_not_run(tools):
    long_plan = "\n".join(f'{i}. search("{i}")' for i in range(1, 5)) + "\n5. join()"
    llm = ScriptedLLM([long_plan, '1. search("a")\n2. join()', "Finish(ok)"])
    result = vrun(Orchestrator(tools, llm, max_tasks=3).run("q"))
    assert result.status is RunStatus.ANSWERED
    assert any("more than 3 tasks" in issue for issue in result.plans[0].issues)
    first_round = [t for t in result.tasks if t.round == 0]
    assert not any(t.id == 4 and t.start is not None for t in first_round)  # the extra task never ran


def test_cyclic_json_plan_is_rejected_without_running_anything(tools):
    import json
    cyclic = json.dumps([{"id": 1, "tool": "echo", "args": {"value": "$2"}},
                         {"id": 2, "tool": "echo", "args": {"value": "$1"}}])
    good = json.dumps([{"id": 1, "tool": "echo", "args": {"value": "x"}}])
    llm = ScriptedLLM([cyclic, good, "Finish(ok)"])
    result = vrun(Orchestrator(tools, llm, plan_format="json").run("q"))
    assert result.status is RunStatus.ANSWERED
    assert any("cycle" in issue for issue in result.plans[0].issues)
    assert not [t for t in result.tasks if t.round == 0 and t.start is not None]



def test_llm_calls_say_how_much_of_their_query_is_left(tools):
    """The scheduler ranks a call by the work of its query after it: each LLM call carries the
    LLM calls left on the longest path (the joiner included) and its depth in the plan."""
    plan = '1. llm("first")\n2. llm("then $1")\n3. search("x")\n4. join()'

    def reply(request):
        kind = request.context.kind
        return plan if kind == "planner" else "Finish(done)" if kind == "joiner" else "ok"

    llm = ScriptedLLM(reply)
    result = vrun(Orchestrator(tools, llm).run("q"))
    assert result.status is RunStatus.ANSWERED
    ctx = {r.context.kind + ":" + r.messages[-1].content[:10]: r.context for r in llm.requests}
    planner = next(c for k, c in ctx.items() if k.startswith("planner"))
    joiner = next(c for k, c in ctx.items() if k.startswith("joiner"))
    first, then = (next(c for k, c in ctx.items() if k.startswith("tool:llm") and word in k)
                   for word in ("first", "then"))
    assert (planner.remaining_calls, joiner.remaining_calls) == (1, 0)
    assert (first.remaining_calls, first.stage) == (2, 1)   # task 2 (an llm call), then the joiner
    assert (then.remaining_calls, then.stage) == (1, 2)


def test_a_chain_of_llm_tasks_reports_each_position(tools):
    """Each llm task of a chain asks for its place in the plan (LLM calls left, depth)."""
    n = 60
    lines = ['1. llm("step 1")'] + [f'{i}. llm("step {i} after ${i - 1}")' for i in range(2, n + 1)]
    plan = "\n".join(lines + [f"{n + 1}. join()"])

    def reply(request):
        kind = request.context.kind
        return plan if kind == "planner" else "Finish(done)" if kind == "joiner" else "ok"

    llm = ScriptedLLM(reply)
    result = vrun(Orchestrator(tools, llm, max_tasks=n).run("q"))
    assert result.status is RunStatus.ANSWERED
    positions = [(r.context.remaining_calls, r.context.stage) for r in llm.requests
                 if r.context.kind.startswith("tool:")]
    assert positions == [(n - i, i + 1) for i in range(n)]


def test_plan_positions_are_computed_without_recursion():
    """A plan 100,000 tasks deep would exhaust Python's recursion limit: the walk is iterative."""
    from fleetcall.executor.run import _postorder
    n = 100_000
    children = {i: [i + 1] for i in range(1, n)}
    order = _postorder(1, children)
    assert len(order) == n and order[0] == n and order[-1] == 1


def test_a_run_cancelled_before_its_first_step_still_has_a_cancelled_result(tools):
    """``handle.cancel()`` right after ``start()``: the task has not run a step yet, and the
    handle's promise (a result with status cancelled, a RunFinished event) still holds."""
    async def main():
        events = []
        orch = Orchestrator(tools, ScriptedLLM([PLAN3, "Finish(x)"]))
        handle = orch.start("q", emit=events.append)
        handle.cancel()
        result = await handle.result()
        return result, events

    result, events = vrun(main())
    assert result.status is RunStatus.CANCELLED and not result.tasks
    assert isinstance(events[-1], ev.RunFinished) and events[-1].result.status is RunStatus.CANCELLED


def test_a_json_plan_whose_task_refers_to_itself_is_rejected_not_a_crash(tools):
    """The sort of a JSON plan's tasks failed on the self-loop and run() raised NetworkXUnfeasible
    (found by the containment property test)."""
    import json
    looped = json.dumps([{"id": 1, "tool": "echo", "args": {"value": "$1"}},
                         {"id": 2, "tool": "echo", "args": {"value": "fine"}}])
    llm = ScriptedLLM([looped, "Finish(ok)"])
    result = vrun(Orchestrator(tools, llm, plan_format="json", max_replans=0).run("q"))
    by_id = {t.id: t for t in result.tasks}
    assert by_id[1].status == "invalid" and "its own result" in by_id[1].error
    assert by_id[2].status == "ok"


def test_query_ids_are_random_and_reveal_no_count():
    """A run's default id is a random UUID (128 bits): no counter of the runs before it."""
    import uuid

    async def main():
        orch = Orchestrator(tools=[], llm=ScriptedLLM([]))
        handles = [orch.start(f"q{i}") for i in range(3)]
        for handle in handles:
            handle.cancel()
            await handle.result()
        return [h.query_id for h in handles]

    ids = asyncio.run(main())
    assert len(set(ids)) == 3
    for qid in ids:
        assert uuid.UUID(qid).version == 4
        assert "-" not in qid


@tool(name="查询天气")
async def weather(城市: str) -> dict:
    """The weather of a city."""
    return {"城市": 城市, "天气": "晴"}


@pytest.mark.parametrize("mode, script", [
    ("compiled", ['1. 查询天气("巴黎")\n2. 查询天气(城市="$1.城市")\n3. join()', "Finish(晴)"]),
    ("react", ['Action: 查询天气("巴黎")', 'Action: 查询天气(城市="罗马")', "Action: Finish(晴)"]),
    ("parallel_calls", ['1. 查询天气("巴黎")\n2. 查询天气(城市="罗马")', "Finish(晴)"]),
])
def test_a_tool_named_in_another_script_is_called_in_every_mode(mode, script):
    # before: the registry took the name (str.isidentifier) but no plan could call it: its line
    # was taken for prose, and the run "answered" without calling anything
    result = vrun(Orchestrator([weather], ScriptedLLM(script)).run("巴黎的天气?", mode=mode))
    assert result.status is RunStatus.ANSWERED, result.error
    assert [t.tool for t in result.tasks] == ["查询天气", "查询天气"]
    assert result.tasks[0].observation == {"城市": "巴黎", "天气": "晴"}
    assert all(t.status == "ok" for t in result.tasks)
