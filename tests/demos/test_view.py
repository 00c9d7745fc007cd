"""What a demo shows while it runs: plain lines, the live view, the LLM calls' serving details."""

from __future__ import annotations

import asyncio
import io
import threading
from collections.abc import AsyncIterator

import pytest
from rich.console import Console

from fleetcall import Chunk, LLMRequest, Message, Usage, complete
from fleetcall.demos import replan, text2sql
from fleetcall.demos.cli import run_shown
from fleetcall.demos.display import LiveDisplay, PlainDisplay, render_state
from fleetcall.demos.runner import run_compiled
from fleetcall.demos.view import LLMCallFinished, RunState, WatchedLLM, describe
from fleetcall.vclock import run_virtual


class ServedLLM:
    """A model that reports serving details on its last chunk, as an endpoint pool does."""

    async def stream(self, request: LLMRequest) -> AsyncIterator[Chunk]:
        await asyncio.sleep(0.5)
        yield Chunk("hello")
        yield Chunk(usage=Usage(3, 7, 1), info={"endpoint": "a100-0", "queue_wait_s": 0.25})


def test_plain_lines_tell_the_replan_story() -> None:
    async def main() -> str:
        out = io.StringIO()
        state = RunState("demo", replan.QUESTION, asyncio.get_running_loop().time())
        with PlainDisplay(state, out) as shown:
            await run_compiled(replan, shown.handle)
        return out.getvalue()

    text = run_virtual(main())
    assert "plan 0: 1. directory_lookup('Dana Whitfield')" in text
    assert "error  task 1: LookupError: no employee named 'Dana Whitfield'" in text
    assert "skipped task 3" in text
    assert "replanning: LookupError" in text
    assert "plan 1: 1. people_search('Dana Whitfield')" in text
    assert "llm    planner done in" in text and "(endpoint -, queued -)" in text


def test_watched_llm_reports_endpoint_and_queue_wait() -> None:
    seen: list[object] = []

    async def main() -> None:
        llm = WatchedLLM(ServedLLM(), seen.append)
        await complete(llm, LLMRequest((Message("user", "hi"),)))

    run_virtual(main())
    started, finished = seen
    assert isinstance(finished, LLMCallFinished)
    assert (finished.start, finished.end, finished.completion_tokens) == (0.0, 0.5, 7)
    assert (finished.endpoint, finished.queue_wait_s) == ("a100-0", 0.25)
    assert describe(finished, 0.0) == ("[  0.50s]   llm    other done in 0.50s, 7 tokens "
                                       "(endpoint a100-0, queued 0.25s)")
    state = RunState("demo", "q", 0.0)
    for event in seen:
        state.apply(event)  # type: ignore[arg-type]  # the sink's own events
    assert (state.calls[1].endpoint, state.calls[1].queue_wait_s) == ("a100-0", 0.25)


def test_live_view_redraws_on_events_without_a_thread() -> None:
    async def main() -> tuple[str, int, int]:
        console = Console(file=io.StringIO(), force_terminal=True, width=160, height=200, record=True)
        state = RunState("fleetcall demo text2sql", text2sql.QUESTION, asyncio.get_running_loop().time())
        before = threading.active_count()
        with LiveDisplay(state, console) as shown:
            during = threading.active_count()
            await run_compiled(text2sql, shown.handle)
        return console.export_text(), before, during

    text, before, during = run_virtual(main())
    assert during == before   # no refresh thread: redraws come from events
    final = text[text.rindex("fleetcall demo text2sql"):]
    for expected in ("schema_link(", "failed", "revise_sql(", "replan after plan 0",
                     "tool:generate_sql", "Answer: Porto"):
        assert expected in final


def test_render_state_times_a_running_task_up_to_now() -> None:
    from fleetcall import events as ev
    from fleetcall.plan import Task

    state = RunState("demo", "q", 10.0)
    state.apply(ev.TaskPlanned(0, Task(1, "search", ("x",), source='1. search("x")'), 10.5))
    state.apply(ev.TaskStarted(0, 1, "search", {"query": "x"}, 11.0))
    console = Console(file=io.StringIO(), width=120, record=True)
    console.print(render_state(state, now=13.5))
    text = console.export_text()
    assert 'search("x")' in text and "running" in text and "2.50s" in text and "t = 3.50s" in text


def test_run_shown_prints_answer_timeline_and_speedup(capsys) -> None:
    outcome = run_virtual(run_shown(text2sql, live=False))
    out = capsys.readouterr().out
    assert outcome.result.answer in out
    assert "Timeline: tasks by tool, LLM calls by endpoint" in out and "tool run_sql" in out
    assert f"Speedup over ReAct: {outcome.speedup:.2f}x" in out
    assert "text2sql, ReAct" in out and "llm    react done" in out


class BrokenLLM:
    async def stream(self, request: LLMRequest) -> AsyncIterator[Chunk]:
        yield Chunk("par")
        raise ConnectionError("endpoint went away")


def test_watched_llm_reports_a_failed_call_and_lets_the_error_through() -> None:
    seen: list[object] = []

    async def main() -> None:
        await complete(WatchedLLM(BrokenLLM(), seen.append), LLMRequest((Message("user", "hi"),)))

    with pytest.raises(ConnectionError):
        run_virtual(main())
    finished = seen[-1]
    assert isinstance(finished, LLMCallFinished)
    assert finished.error == "ConnectionError: endpoint went away" and finished.completion_tokens == 1
    assert "failed: ConnectionError: endpoint went away" in describe(finished, 0.0)
