"""The simulation runner shared by ``fleetcall tune`` and ``fleetcall plan-fleet``.

:func:`simulate` replays a workload on a cluster of in-process emulated endpoints (each with its
own GPU type and tensor-parallel degree) under the virtual clock: the real pool, dispatcher,
queues, HTTP client and emulated engines, as ``fleetcall bench scheduler`` runs them. It can stop
a run early (:class:`StopRule`): once more queries have missed their deadline than the target
attainment allows, the run cannot reach the target whatever happens next, so it is cut short and
reported as a miss with an upper bound on its attainment. :class:`Progress` shows a rich
progress bar per simulation (queries finished) on stderr.

    >>> from fleetcall.bench.workloads import load_workload
    >>> w = Workload.build(load_workload("trace1")[:3], rate=0.01, slo_scale=3.0,
    ...                    model="llama-3.1-8b", reference=("A100-80G", 1))
    >>> result = simulate(w, [("A100-80G", 1)])
    >>> result.summary["queries"], result.stopped
    (3, False)
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from fleetcall.bench import arrivals as arrival_processes
from fleetcall.bench import deadlines as deadline_rules
from fleetcall.bench.replay import replay
from fleetcall.bench.report import summarize
from fleetcall.bench.workloads import QuerySpec
from fleetcall.errors import ConfigError
from fleetcall.gpumodel.perf import Deployment
from fleetcall.llm.base import LLM, Chunk, LLMRequest
from fleetcall.router.config import EndpointConfig, RetryConfig
from fleetcall.router.pool import EndpointPool
from fleetcall.sim.emulator import LengthsResponder
from fleetcall.vclock import run_virtual

# As `fleetcall bench scheduler`: long generations on a loaded GPU legitimately take minutes
# (attempts are not cut short), and replayed traces read no text, so answers stream a chunk
# every 30 s of engine time after the first token.
ATTEMPT_TIMEOUT_S = 3600.0
STREAM_INTERVAL_S = 30.0
# The stop rule checks a query this long after its deadline, so that a query finishing exactly
# at its deadline (met) is seen finished whatever order the loop runs the two events in.
_CHECK_AFTER_S = 1e-6

Cluster = Sequence[tuple[str, int]]  # one (GPU catalog name, tensor-parallel degree) per endpoint
OnQuery = Callable[[], None]         # called once per query finished (met or not)


@dataclass(frozen=True, slots=True)
class Workload:
    """What every simulated cluster is given: the same queries, arrivals and deadlines."""

    queries: tuple[QuerySpec, ...]
    arrivals: tuple[float, ...]      # seconds after the start, one per query
    budgets: tuple[float, ...]       # deadline budgets, seconds after each arrival
    rate: float | None               # queries/s the arrivals were drawn at (reported)
    slo_scale: float                 # budget = slo_scale x the query's latency on the reference
    model: str
    slots: int = 16                  # calls in flight per endpoint
    seed: int = 0
    timeout_s: float | None = None   # give up on a query this long after its arrival

    @classmethod
    def build(cls, queries: Sequence[QuerySpec], *, rate: float, slo_scale: float, model: str,
              reference: tuple[str, int] | Deployment, arrivals: str = "poisson", cv: float = 1.0,
              slots: int = 16, seed: int = 0, timeout_s: float | None = None) -> Workload:
        """Arrivals drawn at ``rate`` (queries/s) and deadlines ``slo_scale`` x each query's
        unloaded latency on ``reference`` (a deployment, or (GPU, tp) serving ``model``).
        Raises ConfigError on a bad rate, scale or model."""
        if not rate > 0 or not math.isfinite(rate):
            raise ConfigError(f"rate must be a positive number of queries/s, got {rate!r}")
        if not slo_scale > 0 or not math.isfinite(slo_scale):
            raise ConfigError(f"SLO scale must be a positive number, got {slo_scale!r}")
        ref = reference if isinstance(reference, Deployment) else \
            Deployment.of(reference[0], model, tp=reference[1])
        times = arrival_processes.make_arrivals(arrivals, rate, len(queries), seed, cv, queries=queries)
        budgets = deadline_rules.unloaded_deadlines(queries, [ref], slo_scale)
        return cls(tuple(queries), tuple(times), tuple(budgets), rate, slo_scale, model, slots,
                   seed, timeout_s)


@dataclass(frozen=True, slots=True)
class StopRule:
    """Stop a run once its attainment can no longer reach ``target`` (a share in (0, 1])."""

    target: float

    def allowed_misses(self, queries: int) -> int:
        """Misses a run of ``queries`` may have and still reach the target."""
        return math.floor((1.0 - self.target) * queries + 1e-9)


@dataclass(slots=True)
class SimResult:
    """One simulation. ``summary`` is :func:`fleetcall.bench.report.summarize`'s dict for a
    whole run; a stopped run has no records, only the counts up to its stop."""

    summary: dict[str, Any] | None  # None iff stopped
    stopped: bool                   # cut short by the stop rule
    misses: int                     # queries past their deadline unfinished (at the stop, if stopped)
    queries: int
    sim_s: float                    # virtual seconds simulated
    wall_s: float                   # wall seconds it took

    @property
    def attainment(self) -> float | None:
        """SLO attainment of a whole run; None if stopped."""
        return None if self.summary is None else float(self.summary["slo_attainment"])

    @property
    def attainment_max(self) -> float:
        """The highest attainment the run could have had (its attainment if not stopped)."""
        if self.summary is not None:
            return float(self.summary["slo_attainment"])
        return 1.0 - self.misses / self.queries


class _Stopped(Exception):
    """Raised by the watcher to cut a run short (never escapes :func:`simulate`)."""


@dataclass(slots=True)
class _Tracker:
    """Wraps the pool to see each query's calls end: counts finished queries (for progress and
    the stop rule). Calls go through unchanged."""

    llm: LLM
    calls_left: dict[str, int]              # query id -> calls still to finish
    on_query: OnQuery | None = None
    failed: set[str] = field(default_factory=set)  # query ids with a failed call

    async def stream(self, request: LLMRequest) -> AsyncIterator[Chunk]:
        qid = request.context.query_id
        ok = False
        try:
            async for chunk in self.llm.stream(request):
                yield chunk
            ok = True
        finally:
            self._ended(qid, ok)

    def _ended(self, qid: str, ok: bool) -> None:
        if qid in self.failed:
            return
        if not ok:
            self.failed.add(qid)
            self.calls_left[qid] = -1
        else:
            self.calls_left[qid] -= 1
        if self.calls_left[qid] <= 0 and self.on_query is not None:
            self.on_query()

    def met(self, qid: str) -> bool:
        return self.calls_left[qid] == 0


async def _watch(tracker: _Tracker, deadlines: Sequence[tuple[float, str]], allowed: int) -> None:
    """Check each query at its deadline (in deadline order); raise _Stopped once more than
    ``allowed`` have missed."""
    loop = asyncio.get_running_loop()
    misses = 0
    for deadline, qid in deadlines:
        delay = deadline + _CHECK_AFTER_S - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        if not tracker.met(qid):
            misses += 1
            if misses > allowed:
                raise _Stopped(misses)


def _configs(cluster: Cluster, model: str, slots: int) -> list[EndpointConfig]:
    """One emulated endpoint per entry, named ``<gpu>-<i>`` (as ``EndpointPool.emulated``)."""
    return [EndpointConfig(name=f"{gpu}-{i}", slots=slots,
                           base_url=f"emulated://{gpu}/{model}?tp={tp}")
            for i, (gpu, tp) in enumerate(cluster)]


async def _run(work: Workload, cluster: Cluster, policy: str, options: dict[str, Any],
               stop: StopRule | None, on_query: OnQuery | None) -> tuple[Any, int]:
    deployments = [Deployment.of(gpu, work.model, tp=tp) for gpu, tp in cluster]
    reference = deadline_rules.fastest_deployment(deployments, work.queries)
    pool = EndpointPool(_configs(cluster, work.model, work.slots), policy=policy,
                        policy_options=options, responder=LengthsResponder(), seed=work.seed,
                        stream_interval_s=STREAM_INTERVAL_S,
                        retry=RetryConfig(attempt_timeout_s=ATTEMPT_TIMEOUT_S))
    tracker = _Tracker(pool, {q.query_id: q.n_calls for q in work.queries}, on_query)
    loop = asyncio.get_running_loop()
    start = loop.time()
    deadlines = sorted((start + a + b, q.query_id)
                       for q, a, b in zip(work.queries, work.arrivals, work.budgets))
    stopped_at: list[int] = []  # the misses when the watcher stopped the run
    async with pool:
        try:
            async with asyncio.TaskGroup() as group:
                watcher = None if stop is None else group.create_task(
                    _watch(tracker, deadlines, stop.allowed_misses(len(work.queries))))
                records = await replay(tracker, work.queries, work.arrivals, work.budgets,
                                       timeout_s=work.timeout_s, reference=reference)
                if watcher is not None:
                    watcher.cancel()
        except* _Stopped as group_error:
            stopped_at.append(int(group_error.exceptions[0].args[0]))
        if stopped_at:
            return None, stopped_at[0]
        return (records, pool.busy_seconds()), 0


def simulate(work: Workload, cluster: Cluster, *, policy: str = "slack",
             options: dict[str, Any] | None = None, stop: StopRule | None = None,
             on_query: OnQuery | None = None) -> SimResult:
    """Replay ``work`` on ``cluster`` (one (GPU, tp) per endpoint) with ``policy`` under the
    virtual clock and return the :class:`SimResult`.

    stop: cut the run short once its attainment cannot reach ``stop.target``.
    on_query: called as each query finishes (for progress).
    Raises ConfigError on an empty cluster, an unknown GPU or policy, or a model that does not fit.
    """
    if not cluster:
        raise ConfigError("the cluster has no endpoint")
    started = time.perf_counter()
    loop_end: list[float] = []

    async def main() -> tuple[Any, int]:
        try:
            return await _run(work, cluster, policy, options or {}, stop, on_query)
        finally:
            loop_end.append(asyncio.get_running_loop().time())

    out, misses = run_virtual(main(), seed=work.seed)
    wall = time.perf_counter() - started
    if out is None:
        return SimResult(None, True, misses, len(work.queries), loop_end[0], wall)
    records, busy = out
    summary = summarize(records, policy=policy, rate=work.rate, endpoints_busy=busy,
                        slo_scale=work.slo_scale)
    summary["wall_s"] = wall
    if options:
        summary["policy_options"] = options
    misses = sum(1 for r in records if not r.met)
    return SimResult(summary, False, misses, len(work.queries), loop_end[0], wall)


class Progress:
    """A rich progress bar per simulation on stderr (``enabled=False``: none); ``notes`` prints
    the one-line results of :meth:`note` to stderr when there are no bars (a log, not a terminal).

        with Progress() as progress:
            with progress.task("2 x A100-80G/tp4", queries=200) as advance:
                simulate(work, cluster, on_query=advance)
    """

    def __init__(self, enabled: bool = True, *, notes: bool = False) -> None:
        self._notes = notes
        self._bar: Any = None
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as RichProgress
            self._bar = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("queries"), TimeElapsedColumn(),
                                     console=Console(file=sys.stderr))

    def __enter__(self) -> Progress:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    @contextmanager
    def task(self, description: str, *, queries: int) -> Iterator[Callable[[], None]]:
        """A bar of ``queries`` steps; yields the callback advancing it by one query."""
        if self._bar is None:
            yield lambda: None
            return
        bar = self._bar
        task_id = bar.add_task(description, total=queries)
        try:
            yield lambda: bar.advance(task_id)
        finally:
            bar.stop_task(task_id)  # a stopped run keeps its count; its clock stops

    def note(self, task_text: str) -> None:
        """Print a line above the bars (or to stderr without them)."""
        if self._bar is not None:
            self._bar.console.print(task_text, highlight=False, markup=False)
        elif self._notes:
            print(task_text, file=sys.stderr, flush=True)
