"""The orchestrator's planner, joiner and ``llm`` tool served by an EndpointPool, end to end.

``Orchestrator(tools, llm=pool)`` over emulated GPUs on the virtual clock: one script (a
function of the request, dispatching on ``request.context.kind``) answers for every endpoint via
``script_responder``, and the emulated engines decide how long each call takes.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fleetcall import LLMRequest, Orchestrator, RunResult, RunStatus
from fleetcall.router.config import RetryConfig
from fleetcall.sim.emulator import Faults
from fleetcall.router.pool import EndpointPool, script_responder
from tests.executor.conftest import search, vrun

MODEL = "llama-3.2-1b"
GPUS = ["A100-80G", "L40S"]
PLAN = ('1. search("fleet")\n'
        '2. llm("Summarize the finding in five words.", context=[$1])\n'
        "3. join()\n<END_OF_PLAN>")


class Script:
    """Answers by call kind and notes every request it sees (kind, query id)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def __call__(self, request: LLMRequest) -> str:
        kind = request.context.kind
        self.seen.append((kind, request.context.query_id))
        prompt = "\n".join(m.content for m in request.messages)
        if kind == "planner":
            return PLAN
        if kind == "tool:llm":
            assert "result of fleet" in prompt, "the llm tool got its context"
            return "the fleet was found"
        if kind == "joiner":
            assert "the fleet was found" in prompt, "the joiner saw the llm tool's observation"
            return "Thought: done.\nAction: Finish(the fleet answer)"
        raise AssertionError(f"unexpected call kind {kind!r}")


def test_planner_joiner_and_llm_tool_run_through_the_pool() -> None:
    script = Script()

    async def main() -> tuple[RunResult, list[Any], list[str]]:
        async with EndpointPool.emulated(GPUS, MODEL, slots=4,
                                         responder=script_responder(script)) as pool:
            result = await Orchestrator([search], llm=pool).run("Where is the fleet?")
            return result, pool.snapshot(), pool.endpoints

    result, snapshot, endpoints = vrun(main())
    assert result.status is RunStatus.ANSWERED, result.error
    assert result.answer == "the fleet answer"
    assert [t.observation for t in result.tasks] == ["result of fleet", "the fleet was found"]
    assert [kind for kind, _ in script.seen] == ["planner", "tool:llm", "joiner"]
    assert {qid for _, qid in script.seen} == {result.query_id}   # the context reached the pool
    assert sorted(c.kind for c in result.llm_calls) == ["joiner", "planner", "tool:llm"]
    for call in result.llm_calls:
        info = call.info
        assert info is not None, call.kind
        assert info["endpoint"] in endpoints and info["gpu"] in GPUS
        assert info["attempts"] == 1 and info["queue_s"] == 0.0 and info["ttft_s"] > 0
    finished = [c for c in result.llm_calls if c.kind != "planner"]  # the planner stops at join()
    assert all(c.info["total_s"] >= c.info["ttft_s"] and c.completion_tokens > 0 for c in finished)
    assert result.usage.calls == 3
    assert all((s.in_flight, s.queued) == (0, 0) for s in snapshot)


def test_concurrent_runs_share_the_pool() -> None:
    async def main() -> tuple[list[RunResult], list[Any]]:
        async with EndpointPool.emulated(GPUS, MODEL, slots=2, policy="slack",
                                         responder=script_responder(Script())) as pool:
            orch = Orchestrator([search], llm=pool)
            results = await asyncio.gather(*(orch.run(f"query {i}", deadline=30.0)
                                             for i in range(6)))
            return list(results), pool.snapshot()

    results, snapshot = vrun(main())
    assert all(r.status is RunStatus.ANSWERED for r in results), [r.error for r in results]
    used = {c.info["endpoint"] for r in results for c in r.llm_calls}
    assert used == {"A100-80G-0", "L40S-1"}
    assert sum(s.calls for s in snapshot) >= 12  # tool:llm and joiner calls, at least
    assert all((s.in_flight, s.queued) == (0, 0) for s in snapshot)


def test_runs_answer_through_flaky_endpoints_and_records_show_the_retries() -> None:
    async def main() -> list[RunResult]:
        async with EndpointPool.emulated(GPUS, MODEL, slots=4, faults=Faults(error_rate=0.3),
                                         seed=3, retry=RetryConfig(max_attempts=6, backoff_s=0.0),
                                         responder=script_responder(Script())) as pool:
            orch = Orchestrator([search], llm=pool)
            return list(await asyncio.gather(*(orch.run(f"q{i}") for i in range(5))))

    results = vrun(main())
    assert all(r.status is RunStatus.ANSWERED for r in results), [r.error for r in results]
    attempts = [c.info["attempts"] for r in results for c in r.llm_calls]
    assert max(attempts) > 1 and min(attempts) == 1


def test_a_run_whose_endpoints_all_fail_reports_endpoint_attempts_and_cause() -> None:
    async def main() -> RunResult:
        async with EndpointPool.emulated(GPUS, MODEL, faults=Faults(error_rate=1.0),
                                         retry=RetryConfig(max_attempts=2, backoff_s=0.0),
                                         responder=script_responder(Script())) as pool:
            return await Orchestrator([search], llm=pool, max_replans=0).run("q")

    result = vrun(main())
    assert result.status is RunStatus.FAILED
    assert result.error is not None
    assert "after 2 attempt(s)" in result.error and "injected server error" in result.error
    assert "A100-80G-0" in result.error or "L40S-1" in result.error
