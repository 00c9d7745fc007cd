"""Replay a workload against any :class:`~fleetcall.llm.base.LLM`: the benchmark's driver.

Each query starts at its arrival time (seconds after the replay starts, on the loop's clock), as
a task of a task group the replay owns; its stages run one after another, the calls of a stage
concurrently. Every call carries its query's id, absolute deadline, step and place in the query
(:class:`~fleetcall.llm.base.CallContext`), so a scheduling pool can rank it. A failing call
fails its query (recorded, the replay goes on); ``timeout_s`` bounds each query, so a hung
endpoint cannot hang the replay.

Under :func:`fleetcall.vclock.run_virtual` with emulated endpoints the whole replay is a
discrete-event simulation; on a real loop with real endpoints it is a load generator.

    >>> from fleetcall.llm.scripted import ScriptedLLM
    >>> from fleetcall.vclock import run_virtual
    >>> from fleetcall.bench.workloads import CallSpec, QuerySpec
    >>> q = QuerySpec("q", ((CallSpec("s", 8, 2),),))
    >>> [r] = run_virtual(replay(ScriptedLLM(lambda req: "a b", ttft_s=1.0), [q], [5.0], [10.0]))
    >>> r.arrival, r.finish, r.met
    (5.0, 6.0, True)
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from fleetcall.bench.deadlines import stage_latencies, unloaded_latency
from fleetcall.bench.workloads import CallSpec, QuerySpec, to_messages
from fleetcall.errors import ConfigError
from fleetcall.llm.base import LLM, CallContext, LLMRequest, complete
from fleetcall.gpumodel.perf import Deployment


@dataclass(slots=True)
class CallRecord:
    """What happened to one call. Times are loop seconds; serving details come from the final
    chunk's ``info`` (None when the LLM does not report them)."""

    index: int                  # position in QuerySpec.calls
    stage: int                  # stage index in the query
    step: str
    start: float                # when the call was sent
    finish: float | None = None  # when its answer (or error) was complete
    prompt_tokens: int = 0      # tokens sent (the call's spec)
    output_tokens: int = 0      # tokens generated, as the LLM's usage reports them
    endpoint: str | None = None
    queue_s: float | None = None  # waiting at the endpoint before being served
    ttft_s: float | None = None   # send to first token, as the serving side measured it
    total_s: float | None = None  # send to last token, as the serving side measured it
    cached_tokens: int | None = None  # prompt tokens served from the prefix cache
    error: str | None = None


@dataclass(slots=True)
class QueryRecord:
    """One query's outcome. ``deadline`` is absolute (loop time), None if it had none."""

    query_id: str
    tenant: str
    arrival: float                  # loop time the query started
    deadline: float | None
    finish: float | None = None     # loop time its last stage ended (or it failed)
    failed: bool = False
    error: str | None = None        # the first failure: "<stage>/<step>: <error>" or a timeout
    calls: list[CallRecord] = field(default_factory=list)  # in QuerySpec.calls order
    unloaded_s: float | None = None  # its latency alone on the reference deployment (the
                                     # oracle: stages in turn, each call alone), None if unknown

    @property
    def latency(self) -> float | None:
        return None if self.finish is None else self.finish - self.arrival

    @property
    def stretch(self) -> float | None:
        """Latency over the unloaded latency (1.0: the physical limit); None if either is
        unknown (the query failed, or the replay had no reference)."""
        latency = self.latency
        if self.failed or latency is None or not self.unloaded_s:
            return None
        return latency / self.unloaded_s

    @property
    def met(self) -> bool:
        """Completed, and by its deadline (if it had one)."""
        if self.failed or self.finish is None:
            return False
        return self.deadline is None or self.finish <= self.deadline


@dataclass(frozen=True, slots=True)
class _Plan:
    """What a query needs to send its calls, computed once before it starts."""

    query: QuerySpec
    deadline: float | None       # absolute
    remaining_work: tuple[float, ...]  # stage index -> predicted seconds of the later stages
    kind_prefix: str


def _suffix_work(query: QuerySpec, reference: Deployment | None) -> tuple[float, ...]:
    """Per stage, the unloaded seconds of the stages after it (index 0: all but the first)."""
    if reference is None:
        return (0.0,) * len(query.stages)
    stages = stage_latencies(query, reference)
    return tuple(sum(stages[i + 1:]) for i in range(len(stages)))


def _info_float(info: dict[str, Any], key: str) -> float | None:
    value = info.get(key)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


async def _run_call(llm: LLM, plan: _Plan, record: CallRecord, call: CallSpec) -> None:
    query = plan.query
    context = CallContext(
        query_id=query.query_id, kind=plan.kind_prefix + call.step, deadline=plan.deadline,
        remaining_calls=len(query.stages) - 1 - record.stage,
        remaining_work_s=plan.remaining_work[record.stage], stage=record.stage)
    request = LLMRequest(messages=to_messages(call, query.query_id, record.index),
                         max_tokens=call.output_tokens, extra_body={"ignore_eos": True},
                         context=context)
    loop = asyncio.get_running_loop()
    try:
        completion = await complete(llm, request)
    except Exception as exc:  # a failed call is a result of the benchmark, not a crash of it
        record.error = f"{type(exc).__name__}: {exc}"
    else:
        record.output_tokens = completion.usage.completion_tokens
        info = completion.info or {}
        endpoint = info.get("endpoint")
        record.endpoint = None if endpoint is None else str(endpoint)
        record.queue_s = _info_float(info, "queue_s")
        record.ttft_s = _info_float(info, "ttft_s")
        record.total_s = _info_float(info, "total_s")
        cached = _info_float(info, "cached_tokens")
        record.cached_tokens = None if cached is None else int(cached)
    record.finish = loop.time()


async def _run_stages(llm: LLM, plan: _Plan, record: QueryRecord) -> None:
    loop = asyncio.get_running_loop()
    index = 0
    for stage_index, stage in enumerate(plan.query.stages):
        calls = []
        for call in stage:
            calls.append((call, CallRecord(index, stage_index, call.step, loop.time(),
                                           prompt_tokens=call.prompt_tokens)))
            index += 1
        record.calls.extend(c for _, c in calls)
        async with asyncio.TaskGroup() as group:
            for call, call_record in calls:
                group.create_task(_run_call(llm, plan, call_record, call))
        failed = next((c for _, c in calls if c.error is not None), None)
        if failed is not None:
            record.failed = True
            record.error = f"stage {stage_index} ({failed.step}): {failed.error}"
            return


async def _run_query(llm: LLM, plan: _Plan, record: QueryRecord, timeout_s: float | None) -> None:
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout_s):
            await _run_stages(llm, plan, record)
    except TimeoutError:
        record.failed = True
        record.error = f"timed out after {timeout_s} s"
    record.finish = loop.time()


def _check_lengths(queries: Sequence[QuerySpec], arrivals: Sequence[float],
                   deadlines: Sequence[float | None] | None) -> None:
    if len(arrivals) != len(queries):
        raise ConfigError(f"{len(queries)} queries but {len(arrivals)} arrival times")
    if deadlines is not None and len(deadlines) != len(queries):
        raise ConfigError(f"{len(queries)} queries but {len(deadlines)} deadlines")
    if any(not a >= 0.0 for a in arrivals):
        raise ConfigError("arrival times must be >= 0 (seconds after the replay starts)")


async def replay(llm: LLM, queries: Sequence[QuerySpec], arrivals: Sequence[float],
                 deadlines: Sequence[float | None] | None, *, kind_prefix: str = "",
                 timeout_s: float | None = None,
                 reference: Deployment | None = None) -> list[QueryRecord]:
    """Run every query at its arrival and return one record per query, in query order.

    arrivals: seconds after the replay starts (loop time at the call), one per query.
    deadlines: seconds after each query's arrival (budgets, see ``fleetcall.bench.deadlines``),
        one per query (None: no deadline).
    kind_prefix: prepended to each call's step to form ``CallContext.kind``.
    timeout_s: bound on each query, from its arrival (a query past it is cancelled, failed).
    reference: deployment predicting ``CallContext.remaining_work_s`` (the unloaded seconds of
        the query's later stages) and each record's ``unloaded_s`` (the query's whole unloaded
        latency, for its stretch); None sends 0 and records None.
    """
    _check_lengths(queries, arrivals, deadlines)
    loop = asyncio.get_running_loop()
    start = loop.time()
    records: list[QueryRecord] = []
    plans: list[_Plan] = []
    for i, query in enumerate(queries):
        arrival = start + arrivals[i]
        budget = deadlines[i] if deadlines is not None else None
        deadline = None if budget is None else arrival + budget
        unloaded = None if reference is None else unloaded_latency(query, reference)
        records.append(QueryRecord(query.query_id, query.tenant, arrival, deadline,
                                   unloaded_s=unloaded))
        plans.append(_Plan(query, deadline, _suffix_work(query, reference), kind_prefix))
    order = sorted(range(len(queries)), key=lambda i: (arrivals[i], i))
    async with asyncio.TaskGroup() as group:
        for i in order:
            delay = records[i].arrival - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            group.create_task(_run_query(llm, plans[i], records[i], timeout_s),
                              name=f"query {queries[i].query_id}")
    return records
