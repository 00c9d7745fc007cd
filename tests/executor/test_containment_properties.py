"""Whatever the model writes and whatever the tools do, a run returns a RunResult by its deadline
plus the grace period, the result (and every event) serialises to JSON, nothing the run started
is left running, and the process is alive.

Hypothesis drives the orchestrator with arbitrary model output (text and JSON plans, junk lines,
any chunking, any joiner reply) and arbitrary tool behaviour: return any value, raise any
exception (``BaseException`` subclasses included), sleep, never return, ignore cancellation,
answer after being cancelled, clean up slowly. On the virtual clock (exact bounds, fast); a few
real-time examples add what needs real time: sync tools in threads that block or never return,
and async tools that block the event loop (small blocks, generous bounds).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fleetcall import Orchestrator, RunStatus, tool
from fleetcall.service.app import event_json
from fleetcall.executor.result import RunResult
from fleetcall.llm.base import Chunk
from tests.test_observe import values
from tests.executor.conftest import vrun


class Odd(BaseException):
    """A BaseException that is neither a cancellation nor a Ctrl-C."""


class Muted(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no message")


# What a tool can raise (a factory: each call raises a fresh exception). KeyboardInterrupt is
# left out on purpose: it is the user's Ctrl-C and stops the program (tested on its own).
EXCEPTIONS = [ValueError, RuntimeError, SystemExit, GeneratorExit, asyncio.CancelledError, Odd,
              Muted, StopIteration, TimeoutError, RecursionError, MemoryError]

seconds = st.floats(min_value=0.0, max_value=20.0)
returns = st.tuples(st.just("return"), values)
raises = st.tuples(st.just("raise"), st.sampled_from(EXCEPTIONS))
deaf = st.tuples(st.just("deaf"), st.floats(min_value=0.01, max_value=50.0))
late = st.tuples(st.just("late"), seconds)
async_behaviours = st.one_of(
    returns, raises, deaf, late,
    st.tuples(st.just("sleep"), seconds),
    st.tuples(st.just("never")),
    st.tuples(st.just("slow_cleanup"), seconds, seconds),
)


async def act(behaviour: tuple[Any, ...]) -> Any:
    """One async tool call behaving as drawn."""
    kind = behaviour[0]
    if kind == "return":
        return behaviour[1]
    if kind == "raise":
        raise behaviour[1]()
    if kind == "sleep":
        await asyncio.sleep(behaviour[1])
        return "slept"
    if kind == "never":
        await asyncio.Event().wait()
    if kind == "deaf":                    # swallows every cancellation, forever
        while True:
            try:
                await asyncio.sleep(behaviour[1])
            except asyncio.CancelledError:
                pass
    if kind == "late":                    # answers instead of ending when cancelled
        try:
            await asyncio.sleep(behaviour[1])
        except asyncio.CancelledError:
            return "too late"
        return "in time"
    if kind == "slow_cleanup":            # awaits in its finally block
        try:
            await asyncio.sleep(behaviour[1])
        finally:
            await asyncio.sleep(behaviour[2])
        return "cleaned"
    if kind == "block_loop":              # real time only: holds the event loop
        time.sleep(behaviour[1])
        await asyncio.sleep(0)
        return "blocked"
    if kind == "deaf_block":              # real time only: blocks the loop whenever cancelled
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                time.sleep(behaviour[1])
    raise AssertionError(kind)


class ChunkedLLM:
    """Planner: the drawn plan text in the drawn chunks; joiner: the drawn reply; tools: text."""

    def __init__(self, plan_chunks: list[str], joiner: str, gap_s: float) -> None:
        self.plan_chunks = plan_chunks
        self.joiner = joiner
        self.gap_s = gap_s   # seconds before each chunk

    async def stream(self, request):
        kind = request.context.kind
        chunks = self.plan_chunks if kind == "planner" else [self.joiner] if kind == "joiner" else ["a reply"]
        for text in chunks:
            await asyncio.sleep(self.gap_s)
            yield Chunk(text)


def chunked(text: str, cuts: list[int]) -> list[str]:
    points = sorted({min(c, len(text)) for c in cuts} | {0, len(text)})
    return [text[a:b] for a, b in zip(points, points[1:])] or [""]


@st.composite
def text_plans(draw: Any, n_behaviours: int, first_calls: bool = False) -> str:
    """LLMCompiler-syntax plans: calls of the drawn behaviours, references, junk, maybe a join
    (``first_calls``: the plan starts with a valid call, so that a tool surely runs)."""
    lines: list[str] = [f"1. chaos({draw(st.integers(0, n_behaviours))})"] if first_calls else []
    for i in range(len(lines) + 1, draw(st.integers(1, 6)) + len(lines) + 1):
        ref = draw(st.integers(1, i))   # sometimes itself or a later-failing task
        line = draw(st.sampled_from([
            f"{i}. chaos({draw(st.integers(0, n_behaviours))})",
            f"{i}. echo(${ref})",
            f'{i}. echo("got ${ref}.")',
            f"{i}. chaos(${ref})",
            f"{i}. echo(${ref}.field[0])",
            "junk",
        ]))
        lines.append(draw(st.text(max_size=30)) if line == "junk" else line)
    if draw(st.booleans()):
        lines.append(f"{len(lines) + 1}. join()")
    return "\n".join(lines) + draw(st.sampled_from(["", "\n<END_OF_PLAN>", "\n"]))


@st.composite
def json_plans(draw: Any, n_behaviours: int) -> str:
    if draw(st.integers(0, 4)) == 0:
        return draw(st.text(max_size=60))
    tasks = [{"id": i, "tool": "chaos", "args": {"n": draw(st.integers(0, n_behaviours))}}
             if draw(st.booleans()) else {"id": i, "tool": "echo", "args": {"value": f"${draw(st.integers(1, i))}"}}
             for i in range(1, draw(st.integers(1, 5)) + 1)]
    return json.dumps(tasks)


@st.composite
def scenarios(draw: Any, behaviours: st.SearchStrategy, real_time: bool) -> dict[str, Any]:
    acts = draw(st.lists(behaviours, min_size=1, max_size=5))
    plan_format = draw(st.sampled_from(["text", "json"]))
    plan = draw(text_plans(len(acts), real_time) if plan_format == "text" else json_plans(len(acts)))
    joiner = draw(st.sampled_from(["Finish(done)", "Action: Replan(try again)", '{"action": "finish"}'])
                  | st.text(max_size=40))
    if real_time:
        deadline, grace = draw(st.floats(0.2, 0.5)), draw(st.floats(0.05, 0.3))
        timeout = draw(st.none() | st.floats(0.05, 0.3))
    else:
        deadline, grace = draw(st.floats(0.5, 30.0)), draw(st.floats(0.0, 3.0))
        timeout = draw(st.none() | st.floats(0.1, 10.0))
    return {
        "acts": acts, "plan_format": plan_format, "joiner": joiner, "deadline": deadline, "grace": grace,
        "plan_chunks": chunked(plan, draw(st.lists(st.integers(0, len(plan)), max_size=8))),
        "gap_s": draw(st.sampled_from([0.0, 0.01, 0.2])) * (0.1 if real_time else 1.0),
        "timeout": timeout, "retries": draw(st.integers(0, 2)), "max_replans": draw(st.integers(0, 2)),
    }


def build(scenario: dict[str, Any], chaos_fn: Any) -> Orchestrator:
    acts = scenario["acts"]
    chaos = tool(chaos_fn(acts), name="chaos", timeout_s=scenario["timeout"], retries=scenario["retries"])

    @tool
    async def echo(value: object) -> object:
        """Returns its argument."""
        return value

    llm = ChunkedLLM(scenario["plan_chunks"], scenario["joiner"], scenario["gap_s"])
    return Orchestrator([chaos, echo], llm, plan_format=scenario["plan_format"], grace_s=scenario["grace"],
                        max_replans=scenario["max_replans"], slow_step_s=None)


def async_chaos(acts: list[tuple[Any, ...]]):
    async def chaos(n: int) -> object:
        """Does what the scenario drew for behaviour n."""
        return await act(acts[n % len(acts)])

    return chaos


async def run_and_check(scenario: dict[str, Any], orch: Orchestrator, slack_s: float) -> RunResult:
    """Run it, then check every guarantee but the threads (the caller's)."""
    events: list[Any] = []
    loop = asyncio.get_running_loop()
    began = loop.time()
    handle = orch.start("What now?", deadline=scenario["deadline"], emit=events.append)
    result = await handle.result()
    assert isinstance(result, RunResult)
    bound = scenario["deadline"] + scenario["grace"] + slack_s
    assert loop.time() - began <= bound, (loop.time() - began, bound)
    assert result.latency <= bound
    assert result.status in set(RunStatus)
    data = json.loads(result.model_dump_json())
    json.dumps(result.model_dump(mode="json"), ensure_ascii=False, allow_nan=False).encode("utf-8")
    assert data["status"] == result.status.value
    for event in events:
        event_json(event).encode("utf-8")
    assert type(events[-1]).__name__ == "RunFinished"
    await orch.aclose()
    await asyncio.sleep(0)   # let a tool closed at the end of its grace period finish its task
    left = {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}
    assert not left, left
    return result


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(scenarios(async_behaviours, real_time=False))
@example(scenario={   # a retry after a stopped attempt, then the deadline (once a bug)
    "acts": [("deaf", 1.0)], "plan_format": "json", "joiner": "Finish(done)", "deadline": 3.0, "grace": 0.0,
    "plan_chunks": ['[{"id": 1, "tool": "chaos", "args": {"n": 0}}]'], "gap_s": 0.0, "timeout": 2.0,
    "retries": 2, "max_replans": 0})
def test_any_model_output_and_tool_behaviour_on_the_virtual_clock(scenario):
    orch = build(scenario, async_chaos)
    vrun(run_and_check(scenario, orch, slack_s=1e-6))


# -- real time: sync tools in threads, async tools blocking the loop (few, small, generous) ----------
BLOCK_S = st.floats(min_value=0.01, max_value=0.2)
sync_behaviours = st.one_of(
    st.tuples(st.just("return"), values),
    st.tuples(st.just("raise"), st.sampled_from(EXCEPTIONS)),
    st.tuples(st.just("sleep"), BLOCK_S),
    st.tuples(st.just("never")),
)
real_behaviours = st.one_of(
    st.tuples(st.just("sync"), sync_behaviours),
    st.tuples(st.just("sync"), sync_behaviours),   # (twice: what needs real time most)
    st.tuples(st.just("block_loop"), BLOCK_S),
    st.tuples(st.just("deaf_block"), BLOCK_S),
    returns, raises, deaf, late,
)


def real_chaos(release: threading.Event):
    def for_acts(acts: list[tuple[Any, ...]]):
        def sync_act(behaviour: tuple[Any, ...]) -> Any:
            kind = behaviour[0]
            if kind == "return":
                return behaviour[1]
            if kind == "raise":
                raise behaviour[1]()
            release.wait(behaviour[1] if kind == "sleep" else 30)   # "never": until the test ends
            return "woke"

        async def chaos(n: int, ctx: Any = None) -> object:
            """Does what the scenario drew for behaviour n (sync ones in a thread)."""
            behaviour = acts[n % len(acts)]
            if behaviour[0] == "sync":
                return await ctx.threads.run(sync_act, behaviour[1])
            return await act(behaviour)

        return chaos

    return for_acts


def chaos_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("fleetcall-tool-chaos-")]


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(scenarios(real_behaviours, real_time=True))
@example(scenario={   # every real-time kind at once: a thread that never returns, loop blocks, SystemExit
    "acts": [("sync", ("never",)), ("block_loop", 0.1), ("deaf_block", 0.05), ("sync", ("raise", SystemExit)),
             ("sync", ("sleep", 0.05))],
    "plan_format": "text", "joiner": "Finish(done)", "deadline": 0.3, "grace": 0.1, "timeout": None,
    "plan_chunks": ["1. chaos(0)\n2. chaos(1)\n3. cha", "os(2)\n4. chaos(3)\n5. chaos(4)\n6. join()"],
    "gap_s": 0.0, "retries": 0, "max_replans": 0})
def test_threads_and_loop_blocking_in_real_time(scenario):
    from fleetcall.tools.base import ToolContext

    release = threading.Event()
    make = real_chaos(release)

    def with_context(acts):
        fn = make(acts)

        async def chaos(n: int, ctx: ToolContext) -> object:
            """Does what the scenario drew for behaviour n (sync ones in a thread)."""
            return await fn(n, ctx)

        return chaos

    async def main():
        # slack: the blocking steps of the loop (at most one per task in flight) and a loaded machine
        return await run_and_check(scenario, build(scenario, with_context), slack_s=0.2 * 8 + 2.0)

    try:
        asyncio.run(main())
    finally:
        release.set()
    end = time.monotonic() + 10
    while chaos_threads() and time.monotonic() < end:   # released, the closed lane's threads end
        time.sleep(0.01)
    assert not chaos_threads()
