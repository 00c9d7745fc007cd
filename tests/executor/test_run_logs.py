"""What a run logs (issue 11): run start/end, a rejected plan with its text, replans, a tool's
retries and failure, one ``event key=value`` line each on ``fleetcall.executor``, and nothing
else: nothing per task or LLM call that goes well, never the query."""

from __future__ import annotations

import asyncio
import logging

import pytest

from fleetcall import Orchestrator, ScriptedLLM, tool
from tests.executor.conftest import search, vrun

QUERY = "What is the secret plan for x?"
PLANS = [
    '1. search("x")\n2. flaky("y")\n3. join()\n<END_OF_PLAN>',
    '1. nosuch("a\nb")\n2. join()\n<END_OF_PLAN>',          # unknown tool: rejected
    '1. search("z")\n2. join()\n<END_OF_PLAN>',
]


@tool(retries=1)
async def flaky(x: str) -> str:
    """Fails every time (after 0.1 s)."""
    await asyncio.sleep(0.1)
    raise RuntimeError(f"boom on {x}")


def script() -> ScriptedLLM:
    plans = iter(PLANS)
    joins = iter(["Thought: flaky failed.\nAction: Replan(flaky failed, try without it)",
                  "Thought: enough.\nAction: Finish(z it is)"])
    return ScriptedLLM(lambda request: next(plans) if request.context.kind == "planner" else next(joins))


def test_a_run_that_replans_with_a_failing_tool_logs_exactly_these_records(caplog: pytest.LogCaptureFixture) -> None:
    async def main():
        orch = Orchestrator(tools=[search, flaky], llm=script(), max_replans=2)
        return await orch.run(QUERY, deadline=30, query_id="q-1")

    with caplog.at_level(logging.DEBUG, logger="fleetcall"):
        result = vrun(main())
    assert result.status.value == "answered" and len(result.replans) == 2
    records = [r for r in caplog.records if r.name.startswith("fleetcall")]
    got = [(r.name, logging.getLevelName(r.levelno), r.getMessage()) for r in records]
    invalid = result.replans[1].reason
    assert invalid.startswith("the plan was invalid:\n- line 1: ")
    run_end = (f"run.end query_id=q-1 mode=compiled status=answered latency_s={result.latency:.3f} plans=3 "
               f"replans=2 tasks=3 llm_calls=5 prompt_tokens={result.usage.prompt_tokens} "
               f"completion_tokens={result.usage.completion_tokens}")
    executor = "fleetcall.executor"
    assert got == [
        (executor, "INFO", "run.start query_id=q-1 mode=compiled deadline_s=30.000"),
        (executor, "INFO", 'task.retry query_id=q-1 round=0 task_id=2 tool=flaky attempt=1 attempts=2 '
                           'error="RuntimeError: boom on y"'),
        (executor, "WARNING", 'task.failed query_id=q-1 round=0 task_id=2 tool=flaky attempts=2 '
                              'error="RuntimeError: boom on y (after 2 attempts)"'),
        (executor, "INFO", 'plan.replan query_id=q-1 round=0 reason="flaky failed, try without it"'),
        (executor, "WARNING", f"plan.rejected query_id=q-1 round=1 issues={len(result.plans[1].issues)} "
                              f"first={_quoted(result.plans[1].issues[0])} text={_quoted(result.plans[1].text)}"),
        (executor, "INFO", f"plan.replan query_id=q-1 round=1 reason={_quoted(invalid)}"),
        (executor, "INFO", run_end),
    ]
    assert [r.event for r in records] == ["run.start", "task.retry", "task.failed", "plan.replan",
                                          "plan.rejected", "plan.replan", "run.end"]
    assert records[2].fields == {"query_id": "q-1", "round": 0, "task_id": 2, "tool": "flaky", "attempts": 2,
                                 "error": "RuntimeError: boom on y (after 2 attempts)"}
    assert records[-1].fields["status"] == "answered"
    assert result.plans[1].text.startswith('1. nosuch("a\nb")\n2. join()')   # logged on one line:
    assert '"1. nosuch(\\"a\\nb\\")\\n2. join()' in got[4][2]             # quoted, escaped
    assert "secret plan" not in caplog.text   # the query is never logged


def _quoted(text: str) -> str:
    import json

    return json.dumps(text, ensure_ascii=False)


def test_a_long_rejected_plan_is_cut_and_cannot_forge_a_line(caplog: pytest.LogCaptureFixture) -> None:
    """A model's text is quoted and cut: a newline in it cannot start a record of its own."""
    forged = "1. nosuch()\nrun.end query_id=q-2 status=answered\n" + "x" * 5000

    async def main():
        llm = ScriptedLLM([forged, "Finish(no)"])
        return await Orchestrator(llm=llm, max_replans=0).run("q", query_id="q-2")

    with caplog.at_level(logging.INFO, logger="fleetcall"):
        vrun(main())
    (rejected,) = [r for r in caplog.records if r.event == "plan.rejected"]
    line = rejected.getMessage()
    assert "\n" not in line and line.count("run.end") == 1 and len(line) < 800
    assert line.endswith(f'...[{len(forged)} chars]"')
    assert rejected.fields["text"] == forged   # the structured field keeps the whole text


def test_a_run_cancelled_from_outside_still_logs_its_end(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        llm = ScriptedLLM(['1. search("x")\n2. join()\n<END_OF_PLAN>', "Finish(x)"])
        task = asyncio.create_task(Orchestrator(tools=[search], llm=llm).run("q", query_id="q-3"))
        await asyncio.sleep(0.5)   # the search takes 1 s
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    with caplog.at_level(logging.INFO, logger="fleetcall"):
        vrun(main())
    assert [(r.event, r.fields.get("status")) for r in caplog.records if r.name.startswith("fleetcall")] == [
        ("run.start", None), ("run.end", "cancelled")]
