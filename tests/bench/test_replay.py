"""Replay under the virtual clock: arrivals, stage order, concurrency, context, failures."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from fleetcall.bench.deadlines import remaining_work, unloaded_latency
from fleetcall.bench.replay import QueryRecord, replay
from fleetcall.bench.workloads import CallSpec, QuerySpec, load_hexgen_trace
from fleetcall.errors import ConfigError, LLMError
from fleetcall.llm.base import Chunk, LLMRequest, count_tokens
from fleetcall.llm.scripted import ScriptedLLM
from fleetcall.gpumodel.perf import Deployment
from fleetcall.vclock import run_virtual


def _answer(request: LLMRequest) -> str:
    """As many pseudo-tokens as the call asks for, so its duration follows its output length."""
    if request.context.kind.endswith("bad"):
        raise LLMError("endpoint e1 returned 500")
    return " x" * (request.max_tokens or 1)


class Reporting:
    """An LLM that adds serving info to the final chunk of a scripted LLM (the pool's contract)."""

    def __init__(self, inner: ScriptedLLM, info: dict[str, Any]) -> None:
        self.inner, self.info = inner, info

    async def stream(self, request: LLMRequest) -> AsyncIterator[Chunk]:
        async for chunk in self.inner.stream(request):
            yield Chunk(chunk.text, chunk.usage, info=self.info) if chunk.usage else chunk


class Hanging:
    async def stream(self, request: LLMRequest) -> AsyncIterator[Chunk]:
        await asyncio.Event().wait()
        yield Chunk("never")


def _one(query_id: str, out: int = 1, step: str = "s") -> QuerySpec:
    return QuerySpec(query_id, ((CallSpec(step, 20, out),),))


def _run(llm: Any, queries: list[QuerySpec], arrivals: list[float],
         deadlines: list[float | None] | None = None, **kw: Any) -> list[QueryRecord]:
    return run_virtual(replay(llm, queries, arrivals, deadlines, **kw))


def test_queries_start_at_their_arrivals_on_the_loop_clock() -> None:
    llm = ScriptedLLM(_answer, ttft_s=1.0)
    queries = [_one("a"), _one("b"), _one("c")]
    records = run_virtual(replay(llm, queries, [7.0, 0.0, 2.5], [10.0, 0.5, None]), start=100.0)
    assert [r.query_id for r in records] == ["a", "b", "c"]
    assert [r.arrival for r in records] == [107.0, 100.0, 102.5]
    assert [r.calls[0].start for r in records] == [107.0, 100.0, 102.5]
    assert [r.latency for r in records] == [1.0, 1.0, 1.0]
    assert [r.deadline for r in records] == [117.0, 100.5, None]
    assert [r.met for r in records] == [True, False, True]
    assert [q.context.query_id for q in llm.requests] == ["b", "c", "a"]


def test_stages_run_in_order_and_a_stages_calls_run_together() -> None:
    query = QuerySpec("q", ((CallSpec("plan", 30, 2),),
                            (CallSpec("gen", 40, 4), CallSpec("gen", 50, 10), CallSpec("gen", 60, 6)),
                            (CallSpec("join", 70, 1),)))
    [record] = _run(ScriptedLLM(_answer, ttft_s=1.0, tpot_s=0.5), [query], [0.0], [100.0])
    plan, g1, g2, g3, join = record.calls
    assert [c.index for c in record.calls] == [0, 1, 2, 3, 4]
    assert [c.stage for c in record.calls] == [0, 1, 1, 1, 2]
    assert plan.finish == 1.5                       # ttft + 1 more token
    assert g1.start == g2.start == g3.start == plan.finish
    assert (g1.finish, g2.finish, g3.finish) == (4.0, 7.0, 5.0)
    assert join.start == 7.0 and record.finish == 8.0 and record.latency == 8.0
    assert [c.prompt_tokens for c in record.calls] == [30, 40, 50, 60, 70]
    assert [c.output_tokens for c in record.calls] == [2, 4, 10, 6, 1]


def test_every_call_carries_its_context() -> None:
    llm = ScriptedLLM(_answer)
    [query] = load_hexgen_trace("trace1")[:1]
    reference = Deployment.of("A100-80G", "llama-3.1-8b")
    [record] = _run(llm, [query], [3.0], [50.0], kind_prefix="t2s:", reference=reference)
    assert len(llm.requests) == query.n_calls and not record.failed
    assert record.unloaded_s == pytest.approx(unloaded_latency(query, reference))
    assert record.stretch == pytest.approx(record.latency / record.unloaded_s)
    stages = len(query.stages)
    seen = {}
    for request in llm.requests:
        ctx = request.context
        call = query.stages[ctx.stage][0]
        assert ctx.query_id == query.query_id and ctx.deadline == 53.0
        assert ctx.kind == "t2s:" + call.step
        assert ctx.remaining_calls == stages - 1 - ctx.stage
        assert ctx.remaining_work_s == pytest.approx(remaining_work(query, ctx.stage, reference))
        assert request.extra_body == {"ignore_eos": True}
        seen.setdefault(ctx.stage, []).append((request.max_tokens,
                                               count_tokens(request.messages[0].content)))
    for index, stage in enumerate(query.stages):
        assert sorted(seen[index]) == sorted((c.output_tokens, c.prompt_tokens) for c in stage)


def test_serving_info_is_recorded_and_missing_keys_are_none() -> None:
    info = {"endpoint": "gpu0", "queue_s": 0.25, "ttft_s": 1.5, "total_s": 2.0,
            "cached_tokens": 12}
    [full] = _run(Reporting(ScriptedLLM(_answer), info), [_one("a")], [0.0])
    call = full.calls[0]
    assert (call.endpoint, call.queue_s, call.ttft_s, call.total_s, call.cached_tokens) == \
        ("gpu0", 0.25, 1.5, 2.0, 12)
    [bare] = _run(Reporting(ScriptedLLM(_answer), {"endpoint": "gpu1"}), [_one("a")], [0.0])
    call = bare.calls[0]
    assert call.endpoint == "gpu1"
    assert (call.queue_s, call.ttft_s, call.total_s, call.cached_tokens) == (None,) * 4


def test_a_failing_call_fails_its_query_only() -> None:
    bad = QuerySpec("bad", ((CallSpec("ok", 10, 2),), (CallSpec("ok", 10, 3), CallSpec("bad", 10, 1)),
                            (CallSpec("never", 10, 1),)))
    llm = ScriptedLLM(_answer, ttft_s=1.0, tpot_s=1.0)
    failed, fine = _run(llm, [bad, _one("fine", 3)], [0.0, 0.5], [100.0, 100.0])
    assert failed.failed and not failed.met and "stage 1 (bad)" in failed.error
    assert "endpoint e1 returned 500" in failed.error
    assert [c.step for c in failed.calls] == ["ok", "ok", "bad"]  # the last stage never ran
    assert failed.calls[2].error is not None and failed.calls[1].error is None
    assert failed.finish == 5.0  # its stage ended when the sibling finished
    assert not fine.failed and fine.met and fine.finish == 3.5
    assert [r.context.kind for r in llm.requests].count("never") == 0


def test_a_hung_call_times_out_instead_of_hanging_the_replay() -> None:
    first, second = _run(Hanging(), [_one("a"), _one("b")], [0.0, 4.0], [1.0, 1.0], timeout_s=30.0)
    assert first.failed and "timed out after 30.0 s" in first.error
    assert (first.finish, second.finish) == (30.0, 34.0)
    assert first.calls[0].finish is None


def test_lengths_are_checked() -> None:
    with pytest.raises(ConfigError, match="2 queries but 1 arrival"):
        _run(ScriptedLLM(_answer), [_one("a"), _one("b")], [0.0])
    with pytest.raises(ConfigError, match="deadlines"):
        _run(ScriptedLLM(_answer), [_one("a")], [0.0], [1.0, 2.0])
    with pytest.raises(ConfigError, match=">= 0"):
        _run(ScriptedLLM(_answer), [_one("a")], [-1.0])
