"""Sync tools run in their own bounded threads: a call that is cancelled or times out returns at
once, its thread is abandoned (and recorded), and it can starve neither other tools nor
``asyncio.run``'s exit.

Real time (threads cannot run under the virtual clock): every blocking tool waits on an Event the
test sets at the end, and every bound is generous (the suite runs with both cores busy).
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from fleetcall import Orchestrator, RunStatus, ScriptedLLM, tool


def lane_threads(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(f"fleetcall-tool-{name}-")]


def wait_until(predicate, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def test_a_timed_out_sync_tool_returns_at_once_and_asyncio_run_does_not_wait_for_it():
    """timeout_s=0.5 on a tool that blocks 8 s: the task fails at 0.5 s saying the thread was
    abandoned, and asyncio.run returns without waiting for the thread (it used to wait 8 s)."""
    release = threading.Event()

    @tool(timeout_s=0.5)
    def stuck(x: int) -> int:
        """Blocks until released (at most 8 s)."""
        release.wait(8)
        return x

    async def main():
        orch = Orchestrator([stuck], ScriptedLLM(["1. stuck(1)\n2. join()", "Finish(done)"]))
        result = await orch.run("q", deadline=None)
        return result, orch.abandoned()

    began = time.monotonic()
    try:
        result, abandoned = asyncio.run(main())
        took = time.monotonic() - began
    finally:
        release.set()
    assert took < 4.0, f"asyncio.run waited {took:.1f}s for the abandoned thread"
    record = result.tasks[0]
    assert "timed out after 0.5s" in record.error and "thread is still running and was abandoned" in record.error
    assert record.status == "error" and record.abandoned
    assert len(abandoned) == 1 and "stuck" in abandoned[0]


def test_abandoned_sync_calls_cannot_starve_another_tool():
    """50 runs whose sync tool blocks 8 s, each under deadline=1, then a run whose only tool is
    an instant sync one: it answers (it used to time out: the 50 calls held every thread of the
    loop's default executor). The blocked tool holds at most its own 8 threads."""
    release = threading.Event()

    @tool
    def block(x: int) -> int:
        """Blocks until released."""
        release.wait(8)
        return x

    @tool
    def instant(x: int) -> int:
        """Returns at once."""
        return x + 1

    def reply(request):
        if request.context.kind != "planner":
            return "Finish(done)"
        tool_name = "instant" if "instant" in request.messages[-1].content else "block"
        return f"1. {tool_name}(1)\n2. join()"

    async def main():
        orch = Orchestrator([block, instant], ScriptedLLM(reply))
        blocked = await asyncio.gather(*(orch.run(f"block {i}", deadline=1) for i in range(50)))
        threads_of_block = len(lane_threads("block"))
        fresh = await orch.run("instant please", deadline=5.0)
        return blocked, threads_of_block, fresh

    try:
        blocked, threads_of_block, fresh = asyncio.run(main())
    finally:
        release.set()
    assert fresh.status is RunStatus.ANSWERED and fresh.tasks[0].observation == 2
    assert all(r.status is RunStatus.TIMED_OUT for r in blocked)
    assert sum(t.abandoned for r in blocked for t in r.tasks) == 8   # the rest waited for a thread
    assert threads_of_block <= 8


def test_max_concurrency_sizes_a_sync_tools_threads():
    running = 0
    most = 0
    lock = threading.Lock()

    @tool(max_concurrency=2)
    def work(x: int) -> int:
        """Takes a little while."""
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.05)
        with lock:
            running -= 1
        return x

    plan = "\n".join(f"{i}. work({i})" for i in range(1, 7)) + "\n7. join()"

    async def main():
        async with Orchestrator([work], ScriptedLLM([plan, "Finish(ok)"])) as orch:
            return await orch.run("q", deadline=10)

    result = asyncio.run(main())
    assert [t.observation for t in result.tasks] == [1, 2, 3, 4, 5, 6]
    assert most == 2


def test_waiting_for_a_busy_lane_counts_against_the_timeout_and_says_so():
    release = threading.Event()

    @tool(timeout_s=0.2, max_concurrency=1)
    def single(x: int) -> int:
        """One thread only; blocks until released."""
        release.wait(10)
        return x

    async def main():
        orch = Orchestrator([single], ScriptedLLM(["1. single(1)\n2. join()", "Finish(a)",
                                                    "1. single(2)\n2. join()", "Finish(b)"]))
        first = await orch.run("q", deadline=None)
        second = await orch.run("q", deadline=None)   # the only thread is still held by the first
        return first, second

    try:
        first, second = asyncio.run(main())
    finally:
        release.set()
    assert "waiting for one of the tool's 1 threads, all busy" in second.tasks[0].error
    assert first.tasks[0].abandoned
    assert not second.tasks[0].abandoned


def test_base_exceptions_in_a_sync_tool_are_failed_tasks():
    @tool
    def leave(x: int) -> int:
        """Calls sys.exit in its thread."""
        raise SystemExit(3)

    @tool
    def cancel_itself(x: int) -> int:
        """Raises CancelledError although nothing cancelled it."""
        raise asyncio.CancelledError()

    @tool
    def stop(x: int) -> int:
        """Raises StopIteration (a future cannot hold it)."""
        raise StopIteration

    @tool
    def close(x: int) -> int:
        """Raises GeneratorExit (it came out of run() in a BaseExceptionGroup)."""
        raise GeneratorExit

    plan = "1. leave(1)\n2. cancel_itself(2)\n3. stop(3)\n4. close(4)\n5. join()"

    async def main():
        async with Orchestrator([leave, cancel_itself, stop, close], ScriptedLLM([plan, "Finish(ok)"])) as orch:
            return await orch.run("q", deadline=10)

    result = asyncio.run(main())
    assert result.status is RunStatus.ANSWERED
    errors = {t.tool: t.error for t in result.tasks}
    assert all(t.status == "error" for t in result.tasks)
    assert errors["leave"] == "SystemExit: 3"
    assert "CancelledError although nothing cancelled it" in errors["cancel_itself"]
    assert "StopIteration" in errors["stop"]
    assert errors["close"] == "GeneratorExit"


def test_a_deadline_abandons_the_running_thread_and_the_record_says_so():
    release = threading.Event()

    @tool
    def held(x: int) -> int:
        """Blocks until released."""
        release.wait(10)
        return x

    async def main():
        orch = Orchestrator([held], ScriptedLLM(["1. held(1)\n2. join()"]), grace_s=5.0)
        result = await orch.run("q", deadline=0.3)
        await orch.aclose()   # does not wait for the thread either
        return result

    began = time.monotonic()
    try:
        result = asyncio.run(main())
        took = time.monotonic() - began
    finally:
        release.set()
    assert result.status is RunStatus.TIMED_OUT
    assert took < 4.0   # no waiting for the thread (nor for the 5 s grace period: it is abandoned at once)
    record = result.tasks[0]
    assert record.status == "cancelled" and "thread is still running and was abandoned" in (record.error or "")
    assert record.abandoned
    assert wait_until(lambda: not lane_threads("held"))   # the released thread then ends (lane closed)


def test_a_lane_slot_held_past_its_loop_is_given_back_to_a_later_loop():
    """A call abandoned in one asyncio.run, finishing after that loop closed, frees its slot for
    the next loop (the slot accounting is not tied to one event loop)."""
    from fleetcall.executor.threads import ThreadLane

    lane = ThreadLane("one", 1)
    release = threading.Event()

    async def abandon():
        task = asyncio.ensure_future(lane.run(release.wait, (10,), {}))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    async def use():
        return await asyncio.wait_for(lane.run(lambda: "ok", (), {}), 5)

    try:
        asyncio.run(abandon())
        assert lane.busy == 1 and len(lane.abandoned) == 1
    finally:
        release.set()
    assert wait_until(lambda: lane.busy == 0)
    assert asyncio.run(use()) == "ok"
    lane.close()
    assert wait_until(lambda: not lane_threads("one"))


def test_a_sync_langchain_tool_runs_in_the_tools_own_threads():
    from langchain_core.tools import tool as lc_tool

    seen = []

    @lc_tool
    def lookup(query: str) -> str:
        """Look it up."""
        seen.append(threading.current_thread().name)
        return query.upper()

    async def main():
        async with Orchestrator([lookup], ScriptedLLM(['1. lookup("x")\n2. join()', "Finish(X)"])) as orch:
            return await orch.run("q", deadline=10)

    result = asyncio.run(main())
    assert result.tasks[0].observation == "X"
    assert seen and seen[0].startswith("fleetcall-tool-lookup-")


def test_the_interpreter_exits_without_waiting_for_an_abandoned_thread():
    """concurrent.futures joins its workers at exit (a thread stuck 60 s would hold the process
    60 s); a lane's threads are daemon threads, so the process ends when the program does."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent('''
        import asyncio, time
        from fleetcall import Orchestrator, ScriptedLLM, tool

        @tool(timeout_s=0.2)
        def stuck(x: int) -> int:
            """Blocks for a minute."""
            time.sleep(60)
            return x

        result = asyncio.run(Orchestrator([stuck], ScriptedLLM(["1. stuck(1)\\n2. join()", "Finish(x)"])).run("q"))
        print(result.tasks[0].abandoned)
    ''')
    began = time.monotonic()
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=50)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"
    assert time.monotonic() - began < 30   # not the 60 s the thread would take
