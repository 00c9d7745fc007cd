"""Containment of the model: whatever an LLM's stream does (raise any BaseException, swallow its
cancellation, yield what is not a Chunk), ``run()`` returns a result by its deadline plus the
grace period, and the process goes on. Virtual clock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from fleetcall import Chunk, LLMRequest, Orchestrator, RunStatus, tool
from tests.executor.conftest import vrun

PLAN = "1. echo(1)\n2. join()\n"


class Weird(BaseException):
    """A BaseException that is neither a cancellation nor a Ctrl-C."""


class Opaque(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no message for you")


@tool
async def echo(x: int) -> int:
    """Returns x."""
    return x


class Model:
    """An LLM whose planner or joiner call runs ``act`` (an async generator function)."""

    def __init__(self, act: Callable[[LLMRequest], AsyncIterator[Chunk]], at: str = "planner") -> None:
        self.act, self.at = act, at

    def stream(self, request: LLMRequest) -> AsyncIterator[Chunk]:
        if request.context.kind == self.at:
            return self.act(request)
        return self._normal(request)

    async def _normal(self, request: LLMRequest) -> AsyncIterator[Chunk]:
        yield Chunk(text=PLAN if request.context.kind == "planner" else "Finish(done)")


def raising(exc: BaseException, *, after_a_chunk: bool):
    async def act(request: LLMRequest) -> AsyncIterator[Chunk]:
        if after_a_chunk:
            yield Chunk(text="1. ech")
            await asyncio.sleep(0.1)
        raise exc
        yield Chunk()   # (an async generator)

    return act


def live_tasks() -> set[asyncio.Task]:
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}


@pytest.mark.parametrize("at", ["planner", "joiner"])
@pytest.mark.parametrize("after_a_chunk", [False, True])
@pytest.mark.parametrize("exc", [SystemExit(2), GeneratorExit(), Weird("odd"),
                                 asyncio.CancelledError("nobody cancelled me"), Opaque()],
                         ids=lambda e: type(e).__name__)
def test_anything_the_model_raises_is_a_failed_run_not_an_exception(exc, after_a_chunk, at):
    """SystemExit from a model used to leave run() (in the service: a plain-text 500, and the
    service answered 503 "shutting down" to every later run); GeneratorExit and a BaseException
    came out as a BaseExceptionGroup; a CancelledError nobody asked for as a cancellation; an
    exception whose str() raises as an ExceptionGroup."""
    async def main():
        orch = Orchestrator([echo], Model(raising(exc, after_a_chunk=after_a_chunk), at=at))
        async with asyncio.timeout(10_000):
            return await orch.run("q", deadline=60)

    result = vrun(main())
    assert result.status is RunStatus.FAILED
    assert f"{at} LLM call failed" in result.error and type(exc).__name__ in result.error
    result.model_dump_json()


def test_a_stream_method_that_raises_before_returning_a_stream_is_a_failed_run():
    class Leaves:
        def stream(self, request: LLMRequest) -> AsyncIterator[Chunk]:
            raise SystemExit(4)

    result = vrun(Orchestrator([echo], Leaves()).run("q", deadline=60))
    assert result.status is RunStatus.FAILED
    assert result.error == "planner LLM call failed: SystemExit: 4"


def test_keyboard_interrupt_from_the_model_still_stops_the_program():
    with pytest.raises(KeyboardInterrupt):
        vrun(Orchestrator([echo], Model(raising(KeyboardInterrupt(), after_a_chunk=True))).run("q"))


@pytest.mark.parametrize("item", ["1. echo(1)\n2. join()\n", None, {"text": "x"}, 42],
                         ids=lambda i: type(i).__name__)
def test_a_stream_yielding_what_is_not_a_chunk_names_what_it_yielded(item):
    async def act(request: LLMRequest) -> AsyncIterator[Chunk]:
        yield item

    result = vrun(Orchestrator([echo], Model(act)).run("q", deadline=60))
    assert result.status is RunStatus.FAILED
    assert result.error == f"planner LLM call failed: the stream yielded {type(item).__name__}, not a Chunk"


# -- a model that ignores its cancellation --------------------------------------------------------
def deaf(log: list[str], *, first: str = ""):
    async def act(request: LLMRequest) -> AsyncIterator[Chunk]:
        try:
            if first:
                yield Chunk(text=first)
            for _ in range(4):   # (bounded, so that the unfixed code ends, late, instead of hanging)
                try:
                    await asyncio.sleep(1e6)
                except asyncio.CancelledError:
                    log.append("swallowed")
        finally:
            log.append("closed")

    return act


@pytest.mark.parametrize("at", ["planner", "joiner"])
def test_a_model_that_swallows_cancellation_is_stopped_after_the_grace_period(at):
    """It used to hold its run forever past the deadline (a service request hung, its
    in-flight slot was never given back, and shutdown waited for it forever)."""
    log: list[str] = []

    async def main():
        orch = Orchestrator([echo], Model(deaf(log, first="1. echo(1)\n"), at=at), grace_s=1.0)
        async with asyncio.timeout(10_000):
            result = await orch.run("q", deadline=5.0)
        await asyncio.sleep(0)
        return result, live_tasks()

    result, left = vrun(main())
    assert result.status is RunStatus.TIMED_OUT
    assert result.latency == pytest.approx(6.0)   # deadline 5 + grace 1
    call = next(c for c in result.llm_calls if c.kind == at)
    assert call.abandoned
    assert log == ["swallowed", "closed"]
    assert not left
    result.model_dump_json()


def test_cancelling_a_run_whose_model_ignores_it_ends_within_the_grace_period():
    log: list[str] = []

    async def main():
        orch = Orchestrator([echo], Model(deaf(log)), grace_s=2.0)
        handle = orch.start("q", deadline=None)
        await asyncio.sleep(3)
        handle.cancel()
        async with asyncio.timeout(10_000):
            result = await handle.result()
        return result, asyncio.get_running_loop().time()

    result, now = vrun(main())
    assert result.status is RunStatus.CANCELLED
    assert now == pytest.approx(5.0)   # cancelled at 3, grace 2
    assert result.llm_calls[0].abandoned


def test_a_model_that_blocks_its_close_is_bounded_too():
    """Stopped at join(), a model whose cleanup awaits forever (and swallows the cancellation)
    cannot hold the run: its close gets the grace period, then the run goes on to the joiner."""
    log: list[str] = []

    async def act(request: LLMRequest) -> AsyncIterator[Chunk]:
        try:
            yield Chunk(text=PLAN)
            await asyncio.sleep(1e6)
        finally:
            for _ in range(4):
                try:
                    await asyncio.sleep(1e6)
                except asyncio.CancelledError:
                    log.append("swallowed")
                except GeneratorExit:
                    log.append("closed")
                    raise

    async def main():
        orch = Orchestrator([echo], Model(act), grace_s=1.0)
        async with asyncio.timeout(10_000):
            return await orch.run("q", deadline=60)

    result = vrun(main())
    assert result.status is RunStatus.ANSWERED and result.answer == "done"
    assert result.latency <= 2.0 + 1e-9       # at most the grace period to close, then a timeout of it
    assert result.llm_calls[0].abandoned


def test_a_model_using_its_own_timeout_is_not_taken_for_cancelled():
    """A client's own timeout (asyncio.timeout, an anyio cancel scope, as in openai's client)
    cancels the task and takes it back: the model's call goes on."""
    async def act(request: LLMRequest) -> AsyncIterator[Chunk]:
        try:
            async with asyncio.timeout(0.1):
                await asyncio.sleep(10)
        except TimeoutError:
            pass
        yield Chunk(text=PLAN)

    result = vrun(Orchestrator([echo], Model(act)).run("q", deadline=60))
    assert result.status is RunStatus.ANSWERED and result.answer == "done"
    assert not any(c.abandoned for c in result.llm_calls)


@pytest.mark.parametrize("how", ["deadline", "cancel"])
def test_a_run_stopped_while_its_plan_streams_keeps_the_plan_read_so_far(how):
    """The plan's text was recorded only once the plan was whole: a run that timed out (or was
    cancelled) while the model still wrote showed an empty plan, although its tasks had run."""
    text = 'Thought: both at once\n1. echo(1)\n2. echo(2)\n'

    async def act(request: LLMRequest) -> AsyncIterator[Chunk]:
        yield Chunk(text=text)
        await asyncio.sleep(100)

    async def main():
        handle = Orchestrator([echo], Model(act)).start("q", deadline=5)
        if how == "cancel":
            await asyncio.sleep(1)
            handle.cancel()
        return await handle.result()

    result = vrun(main())
    assert result.status is (RunStatus.TIMED_OUT if how == "deadline" else RunStatus.CANCELLED)
    assert [t.status for t in result.tasks] == ["ok", "ok"]
    assert result.plans[0].text == text and result.plans[0].finished_at is None
