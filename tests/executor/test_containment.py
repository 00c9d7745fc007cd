"""Containment of async tools and the run: a tool cannot hang its run, end the process, or keep
it past its deadline plus the grace period. Virtual clock, except where the loop must really be
blocked (a few small real-time cases with generous bounds)."""

from __future__ import annotations

import asyncio
import logging
import re
import time

import pytest

from fleetcall import ConfigError, Orchestrator, RunStatus, ScriptedLLM, tool
from fleetcall.llm.base import Chunk
from tests.executor.conftest import vrun


class Weird(BaseException):
    """A BaseException that is neither a cancellation nor a Ctrl-C."""


def one_task(tool_name: str, arg: str = "1") -> list[str]:
    return [f"1. {tool_name}({arg})\n2. join()", "Finish(done)"]


async def within(awaitable, seconds: float = 10_000):
    """``awaitable`` under a (virtual) time limit: the unfixed code fails instead of hanging."""
    async with asyncio.timeout(seconds):
        return await awaitable


def live_tasks() -> set[asyncio.Task]:
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}


# -- a tool's own exceptions ---------------------------------------------------------------------
def test_a_tool_raising_cancelled_error_itself_is_a_failed_task_not_a_hang():
    """Nobody cancelled it: the task used to vanish and the run (no deadline) waited forever."""
    @tool
    async def quits(x: int) -> int:
        """Raises CancelledError on its own."""
        await asyncio.sleep(0.1)
        raise asyncio.CancelledError("not really cancelled")

    async def main():
        orch = Orchestrator([quits], ScriptedLLM(one_task("quits")))
        async with asyncio.timeout(1000):   # the unfixed run never ends: fail instead of hanging
            return await orch.run("q", deadline=None)

    result = vrun(main())
    assert result.status is RunStatus.ANSWERED
    record = result.tasks[0]
    assert record.status == "error" and "CancelledError although nothing cancelled it" in record.error


@pytest.mark.parametrize("exc", [SystemExit(2), GeneratorExit(), Weird("odd"), StopAsyncIteration()])
def test_base_exceptions_from_a_tool_are_failed_tasks(exc):
    """SystemExit used to end the process (every run in it); any BaseException but a real
    cancellation or Ctrl-C is the tool's failure."""
    @tool
    async def leaves(x: int) -> int:
        """Raises a BaseException."""
        await asyncio.sleep(0.1)
        raise exc

    @tool
    async def fine(x: int) -> int:
        """A sibling that must finish."""
        await asyncio.sleep(0.5)
        return x

    plan = ["1. leaves(1)\n2. fine(2)\n3. join()", "Finish(done)"]
    result = vrun(Orchestrator([leaves, fine], ScriptedLLM(plan)).run("q"))
    assert result.status is RunStatus.ANSWERED
    by_tool = {t.tool: t for t in result.tasks}
    assert by_tool["leaves"].status == "error" and type(exc).__name__ in by_tool["leaves"].error
    assert by_tool["fine"].status == "ok" and by_tool["fine"].observation == 2


def test_keyboard_interrupt_from_a_tool_still_stops_the_program():
    @tool
    async def ctrl_c(x: int) -> int:
        """The user pressed Ctrl-C."""
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        vrun(Orchestrator([ctrl_c], ScriptedLLM(one_task("ctrl_c"))).run("q"))


def test_an_exception_whose_message_cannot_be_rendered_is_still_reported():
    class Opaque(Exception):
        def __str__(self):
            raise RuntimeError("no message for you")

    @tool
    async def opaque(x: int) -> int:
        """Raises an exception whose str() raises."""
        raise Opaque()

    result = vrun(Orchestrator([opaque], ScriptedLLM(one_task("opaque"))).run("q"))
    assert result.status is RunStatus.ANSWERED
    assert result.tasks[0].error.startswith("Opaque: <message unrenderable")


# -- cancellation the tool ignores ----------------------------------------------------------------
def ignoring(log: list[str]):
    @tool
    async def deaf(x: int) -> int:
        """Swallows every cancellation and goes on sleeping."""
        try:
            while True:
                try:
                    await asyncio.sleep(1e6)
                except asyncio.CancelledError:
                    log.append("swallowed")
        finally:
            log.append("closed")

    return deaf


def test_a_tool_that_swallows_cancellation_is_stopped_after_the_grace_period():
    """It used to hold the run (deadline 5 s) as long as it liked; now the run returns at the
    deadline plus the grace period, the record says abandoned, and nothing keeps running."""
    log: list[str] = []

    async def main():
        orch = Orchestrator([ignoring(log)], ScriptedLLM(one_task("deaf")), grace_s=1.0)
        async with asyncio.timeout(10_000):
            result = await orch.run("q", deadline=5.0)
        await asyncio.sleep(0)
        return result, live_tasks()

    result, left = vrun(main())
    assert result.status is RunStatus.TIMED_OUT
    assert result.latency == pytest.approx(6.0)   # deadline 5 + grace 1
    record = result.tasks[0]
    assert record.status == "cancelled" and record.abandoned and "grace period" in record.error
    assert log == ["swallowed", "closed"]         # its finally block ran when it was closed
    assert not left


def test_a_tool_that_swallows_its_timeout_fails_after_the_grace_period():
    log: list[str] = []
    deaf = ignoring(log)
    slow = tool(deaf.fn, name="deaf", timeout_s=0.5)
    result = vrun(within(Orchestrator([slow], ScriptedLLM(one_task("deaf")), grace_s=2.0).run("q")))
    assert result.status is RunStatus.ANSWERED
    record = result.tasks[0]
    assert record.status == "error" and record.abandoned
    assert record.error.startswith("timed out after 0.5s; the tool did not stop within the 2s grace period")
    assert record.end - record.start == pytest.approx(2.5)


def test_a_retry_after_a_stopped_attempt_still_ends_at_the_deadline():
    """Attempt 1 times out and is stopped after the grace period; attempt 2 is then cancelled by
    the deadline and must end within the grace period as well (it was taken for a CancelledError
    the tool raised itself, and a third attempt ran past the deadline; found by the property test)."""
    log: list[str] = []
    slow = tool(ignoring(log).fn, name="deaf", timeout_s=2.0, retries=2)
    result = vrun(within(Orchestrator([slow], ScriptedLLM(one_task("deaf")), grace_s=0.5).run("q", deadline=3.0)))
    assert result.status is RunStatus.TIMED_OUT and result.latency == pytest.approx(3.5)
    assert result.tasks[0].status == "cancelled" and result.tasks[0].abandoned


def test_a_tool_that_answers_after_being_cancelled_counts_as_timed_out():
    @tool(timeout_s=1.0)
    async def late(x: int) -> int:
        """Returns a value instead of ending when cancelled."""
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            return -1
        return x

    result = vrun(Orchestrator([late], ScriptedLLM(one_task("late"))).run("q"))
    record = result.tasks[0]
    assert record.status == "error" and record.error == "timed out after 1.0s; the tool ignored the cancellation"
    assert record.end - record.start == pytest.approx(1.0)


def test_a_tool_cleaning_up_with_awaits_within_the_grace_period_is_not_cut_short():
    done: list[str] = []

    @tool(timeout_s=1.0)
    async def tidy(x: int) -> int:
        """Takes 0.3 s to clean up."""
        try:
            await asyncio.sleep(10)
        finally:
            await asyncio.sleep(0.3)
            done.append("cleaned")
        return x

    result = vrun(Orchestrator([tidy], ScriptedLLM(one_task("tidy"))).run("q"))
    record = result.tasks[0]
    assert done == ["cleaned"] and not record.abandoned
    assert record.error == "timed out after 1.0s" and record.end - record.start == pytest.approx(1.3)


def test_cancelling_a_run_through_its_handle_also_stops_a_deaf_tool():
    log: list[str] = []

    async def main():
        orch = Orchestrator([ignoring(log)], ScriptedLLM(one_task("deaf")), grace_s=0.5)
        handle = orch.start("q", deadline=None)
        await asyncio.sleep(2)
        handle.cancel()
        result = await within(handle.result())
        await asyncio.sleep(0)
        return result, live_tasks()

    result, left = vrun(main())
    assert result.status is RunStatus.CANCELLED and result.latency == pytest.approx(2.5)
    assert result.tasks[0].abandoned and not left


# -- cancellations that are the tool's own ---------------------------------------------------------
def test_a_tool_using_its_own_timeout_keeps_its_answer():
    """asyncio.timeout inside a tool cancels the tool's task and takes the cancellation back: the
    tool's fallback answer used to be replaced by "the tool raised CancelledError although nothing
    cancelled it" (and an anyio cancel scope in a model's client made the planner's call fail)."""
    @tool
    async def patient(x: int) -> str:
        """Gives up on a slow source after 0.1 s and answers from a fallback."""
        try:
            async with asyncio.timeout(0.1):
                await asyncio.sleep(10)
        except TimeoutError:
            return "fallback"
        return "fast"

    @tool
    async def strict(x: int) -> str:
        """Lets its own timeout's TimeoutError out."""
        async with asyncio.timeout(0.1):
            await asyncio.sleep(10)
        return "fast"

    plan = ["1. patient(1)\n2. strict(2)\n3. join()", "Finish(done)"]
    result = vrun(within(Orchestrator([patient, strict], ScriptedLLM(plan)).run("q", deadline=None)))
    by_tool = {t.tool: t for t in result.tasks}
    assert by_tool["patient"].status == "ok" and by_tool["patient"].observation == "fallback"
    assert by_tool["strict"].status == "error" and by_tool["strict"].error == "TimeoutError"
    assert not any(t.abandoned for t in result.tasks)


@pytest.mark.parametrize("then", ["raise", "swallow"])
def test_a_tool_cancelling_its_own_task_is_a_failed_task_not_a_hang(then):
    """current_task().cancel() from inside a tool: the run (no deadline) used to wait forever,
    and with a deadline until it passed."""
    @tool
    async def quits(x: int) -> int:
        """Cancels the task it runs in."""
        asyncio.current_task().cancel()
        try:
            await asyncio.sleep(1)
        except asyncio.CancelledError:
            if then == "raise":
                raise
        return x

    result = vrun(within(Orchestrator([quits], ScriptedLLM(one_task("quits"))).run("q", deadline=None)))
    assert result.status is RunStatus.ANSWERED and result.latency == pytest.approx(0.0)
    record = result.tasks[0]
    assert record.status == "error" and "cancelled, and not by the run" in record.error


def test_a_tool_that_takes_back_the_runs_cancellation_is_still_stopped():
    """Calling uncancel() on its task does not make a tool immune to its run's deadline."""
    @tool
    async def defiant(x: int) -> int:
        """Takes every cancellation back and goes on."""
        for _ in range(4):
            try:
                await asyncio.sleep(1e6)
            except asyncio.CancelledError:
                asyncio.current_task().uncancel()
        return x

    orch = Orchestrator([defiant], ScriptedLLM(one_task("defiant")), grace_s=1.0)
    result = vrun(within(orch.run("q", deadline=5.0)))
    assert result.status is RunStatus.TIMED_OUT and result.latency == pytest.approx(6.0)
    assert result.tasks[0].abandoned


def test_a_future_holding_generator_exit_is_the_tools_failure():
    """An exception an awaited future holds is thrown into the task's outermost coroutine; a
    thrown GeneratorExit closes every coroutine under it, so no handler of the tool's call saw
    it and it came out of run() in a BaseExceptionGroup (a sync tool raising it in its thread
    does this; see test_sync_tools)."""
    @tool
    async def relay(x: int) -> int:
        """Awaits a future that gets GeneratorExit while the tool waits for it."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        loop.call_later(0.1, future.set_exception, GeneratorExit())
        return await future

    @tool
    async def fine(x: int) -> int:
        """A sibling that must finish."""
        await asyncio.sleep(0.5)
        return x

    plan = ["1. relay(1)\n2. fine(2)\n3. join()", "Finish(done)"]
    result = vrun(within(Orchestrator([relay, fine], ScriptedLLM(plan)).run("q")))
    assert result.status is RunStatus.ANSWERED
    by_tool = {t.tool: t for t in result.tasks}
    assert by_tool["relay"].status == "error" and by_tool["relay"].error == "GeneratorExit"
    assert by_tool["relay"].end is not None
    assert by_tool["fine"].status == "ok"


# -- blocking the loop: real time, small blocks, generous bounds ---------------------------------------
def test_a_loop_blocking_tool_is_reported_by_name(caplog):
    @tool
    async def hog(x: int) -> int:
        """Blocks the event loop for 0.3 s."""
        time.sleep(0.3)
        return x

    async def main():
        orch = Orchestrator([hog], ScriptedLLM(one_task("hog")), slow_step_s=0.1)
        return await orch.run("q", deadline=30)

    with caplog.at_level(logging.WARNING, logger="fleetcall.executor"):
        result = asyncio.run(main())
    record = result.tasks[0]
    assert record.status == "ok" and record.loop_blocked_s is not None and record.loop_blocked_s >= 0.29
    (blocked,) = [r for r in caplog.records if getattr(r, "event", None) == "tool.loop_blocked"]
    assert blocked.levelno == logging.WARNING and blocked.fields["tool"] == "hog"
    assert re.match(rf"tool\.loop_blocked query_id={result.query_id} round=0 task_id=1 tool=hog blocked_s=0\.[3-9]",
                    blocked.getMessage())


def test_a_loop_blocking_tool_that_ignores_cancellation_cannot_hold_its_run():
    """Each cancellation it swallows with a blocking step, then it goes on: the run used to wait
    for it forever; now it returns by deadline + grace + one blocking step."""
    @tool
    async def stubborn(x: int) -> int:
        """Blocks the loop 0.2 s whenever cancelled, never ends."""
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                time.sleep(0.2)

    async def main():
        orch = Orchestrator([stubborn], ScriptedLLM(one_task("stubborn")), grace_s=0.3)
        async with asyncio.timeout(20):   # the unfixed run never returns
            result = await orch.run("q", deadline=0.3)
        await asyncio.sleep(0)
        return result, live_tasks()

    began = time.monotonic()
    result, left = asyncio.run(main())
    assert result.status is RunStatus.TIMED_OUT and time.monotonic() - began < 10
    assert result.latency < 0.3 + 0.3 + 0.2 + 3.0   # deadline + grace + one block, and room for load
    assert result.tasks[0].abandoned and not left


# -- the default deadline ---------------------------------------------------------------------------
class EndlessPlanner:
    """A custom LLM whose stream never ends (one chunk a second)."""

    async def stream(self, request):
        while True:
            await asyncio.sleep(1.0)
            yield Chunk("Thought: still thinking ")


def test_a_run_has_a_deadline_by_default():
    """A planner that streams forever used to keep its run forever."""
    async def main():
        async with asyncio.timeout(100_000):
            return await Orchestrator([], EndlessPlanner()).run("q")

    result = vrun(main())
    assert result.status is RunStatus.TIMED_OUT and result.latency == pytest.approx(300.0)
    assert result.deadline == pytest.approx(300.0)


def test_the_default_deadline_is_configurable_and_none_is_asked_for_explicitly():
    async def endless(default_deadline, **run_kwargs):
        orch = Orchestrator([], EndlessPlanner(), default_deadline=default_deadline)
        try:
            async with asyncio.timeout(1000):
                return await orch.run("q", **run_kwargs)
        except TimeoutError:
            return "still running at t=1000"

    assert vrun(endless(5.0)).latency == pytest.approx(5.0)
    assert vrun(endless(5.0, deadline=2.0)).latency == pytest.approx(2.0)
    assert vrun(endless(5.0, deadline=None)) == "still running at t=1000"
    assert vrun(endless(None)) == "still running at t=1000"


@pytest.mark.parametrize("kwargs, message", [
    ({"default_deadline": 0}, "default_deadline"), ({"default_deadline": float("nan")}, "default_deadline"),
    ({"grace_s": -1}, "grace_s"), ({"sync_threads": 0}, "sync_threads"), ({"slow_step_s": "x"}, "slow_step_s"),
])
def test_bad_containment_settings_are_named(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        Orchestrator([], ScriptedLLM([]), **kwargs)


def test_a_closed_orchestrator_cancels_its_runs_and_refuses_new_ones():
    log: list[str] = []

    async def main():
        async with Orchestrator([ignoring(log)], ScriptedLLM(one_task("deaf")), grace_s=0.5) as orch:
            handle = orch.start("q")
            await asyncio.sleep(1)
        result = await within(handle.result())
        with pytest.raises(RuntimeError, match="closed"):
            orch.start("again")
        return result

    result = vrun(main())
    assert result.status is RunStatus.CANCELLED and result.latency == pytest.approx(1.5)
