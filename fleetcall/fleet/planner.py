"""The fleet planner: the cheapest mix of GPUs whose simulated SLO attainment reaches a target.

:func:`plan_fleet` takes a :class:`Question` (workload, rate, deadline scale, target, GPU types,
prices, model, limits) and answers a :class:`FleetPlan`:

1. the first cut (:mod:`fleetcall.fleet.capacity`): each GPU type's tensor-parallel degrees
   within memory, and each such endpoint's queries/s within the SLO;
2. the search (:mod:`fleetcall.fleet.search`): mixes enumerated within ``max_gpus``, those near
   the (cost, headroom) frontier simulated by bisection on cost, each simulation stopped early
   once it has missed more deadlines than the target allows (:mod:`fleetcall.fleet.runner`);
3. the simple rules a user might follow instead, searched the same way: all A100-80G, and the
   cheapest single GPU type (each at its usual tensor-parallel degree);
4. optionally, validation: full-length runs (no early stop) of the chosen mix, the next cheaper
   mix on the simulated frontier, and the simple rules' mixes.

Deadlines are ``slo_scale`` x each query's unloaded latency on a fixed reference deployment
(A100-80G at its usual degree unless given), the same for every mix, so mixes are compared on
the same deadlines.
"""

from __future__ import annotations

import math
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fleetcall.bench.workloads import QuerySpec, repeat_queries
from fleetcall.errors import ConfigError
from fleetcall.fleet.capacity import Capacity, EndpointKind, endpoint_capacity, tp_options
from fleetcall.fleet.runner import Progress, SimResult, StopRule, Workload, simulate
from fleetcall.fleet.search import (Memo, Mix, Outcome, SearchResult, cheapest_of_kind,
                                    enumerate_mixes, frontier, make_mix, near_frontier, search)
from fleetcall.gpumodel.gpus import get_gpu
from fleetcall.gpumodel.models import get_model
from fleetcall.gpumodel.perf import Deployment, default_tp

ALL_A100 = "A100-80G"


@dataclass(frozen=True, slots=True)
class Question:
    """What to plan for. ``gpus`` and ``prices`` use GPU catalog names (aliases are resolved)."""

    queries: tuple[QuerySpec, ...]       # the workload (one cycle; repeated to the run lengths)
    rate: float                          # arrivals, queries/s (Poisson)
    slo_scale: float                     # deadline = scale x unloaded latency on the reference
    target: float                        # SLO attainment to reach, in (0, 1]
    gpus: tuple[str, ...]                # GPU types to mix
    prices: Mapping[str, float]          # GPU -> $/GPU-hour
    model: str
    max_gpus: int = 32
    policy: str = "slack"
    policy_options: Mapping[str, Any] = field(default_factory=dict)
    reference: str = ALL_A100            # deadlines' reference GPU (at its usual tp)
    slots: int = 16                      # calls in flight per endpoint
    seed: int = 0
    search_queries: int = 200            # queries per search simulation
    validate_queries: int = 0            # queries per validation run (0: no validation)
    jobs: int = 1                        # processes running the validation runs at once
    max_sims: int = 40                   # new simulations the main search may run
    tp_degrees: tuple[int, ...] = (1, 2, 4, 8)


@dataclass(slots=True)
class FleetPlan:
    """The planner's answer; :mod:`fleetcall.fleet.report` prints it and writes its JSON."""

    question: Question
    capacities: list[Capacity]
    skipped: list[str]                            # GPU types left out, and why
    result: SearchResult                          # the main search
    runs: list[tuple[Mix, Outcome]]               # every search simulation, in order
    rules: dict[str, Mix | None]                  # simple rule -> its cheapest meeting mix
    validation: dict[str, tuple[Mix, Outcome]] = field(default_factory=dict)
    wall_s: float = 0.0                           # search and rules
    validation_wall_s: float = 0.0

    @property
    def best(self) -> Mix | None:
        return self.result.best

    def next_cheaper(self) -> Mix | None:
        """The frontier mix just cheaper than the choice (None without a choice or below it)."""
        if self.best is None:
            return None
        below = [m for m, _ in frontier(self.runs) if m.cost < self.best.cost]
        return below[-1] if below else None

    def outcome(self, mix: Mix) -> Outcome | None:
        return next((o for m, o in self.runs if m.counts == mix.counts), None)


def check(question: Question) -> None:
    """Raise ConfigError naming the problem: unknown GPU or model, a GPU without a price, a bad
    number."""
    get_model(question.model)
    if not question.gpus:
        raise ConfigError("--gpus names no GPU")
    for gpu in question.gpus:
        name = get_gpu(gpu).name
        if name not in question.prices:
            raise ConfigError(f"no price for {name} in the prices file (priced: "
                              f"{', '.join(sorted(question.prices))})")
    if not (question.rate > 0 and math.isfinite(question.rate)):
        raise ConfigError(f"--rate must be a positive number of queries/s, got {question.rate}")
    if not (question.slo_scale > 0 and math.isfinite(question.slo_scale)):
        raise ConfigError(f"--slo-scale must be a positive number, got {question.slo_scale}")
    if not 0.0 < question.target <= 1.0:
        raise ConfigError(f"--attainment must be in (0, 1], got {question.target}")
    if question.max_gpus < 1 or question.search_queries < 1 or question.max_sims < 1:
        raise ConfigError("--max-gpus, --queries and --max-sims must be >= 1")
    if question.validate_queries < 0 or question.jobs < 1:
        raise ConfigError("--validate must be >= 0 and --jobs >= 1")


def reference_deployment(question: Question) -> Deployment:
    """The deadlines' reference: ``question.reference`` at its usual tensor-parallel degree."""
    gpu = get_gpu(question.reference).name
    try:
        return Deployment.of(gpu, question.model, tp=default_tp(gpu, question.model))
    except ConfigError as exc:
        raise ConfigError(f"the deadlines' reference GPU cannot serve the model ({exc}); "
                          f"name another with --reference") from exc


def first_cut(question: Question, reference: Deployment) -> tuple[list[Capacity], list[str]]:
    """Each GPU type's endpoint kinds within memory and their capacities; the types that fit
    no degree are skipped (listed with the reason); ConfigError if every type is."""
    caps: list[Capacity] = []
    skipped: list[str] = []
    for gpu in dict.fromkeys(get_gpu(g).name for g in question.gpus):
        try:
            degrees = tp_options(gpu, question.model, question.queries, question.tp_degrees)
        except ConfigError as exc:
            skipped.append(str(exc))
            continue
        for tp in degrees:
            if tp > question.max_gpus:
                continue
            caps.append(endpoint_capacity(EndpointKind(gpu, tp), question.model, question.queries,
                                          reference=reference, slo_scale=question.slo_scale,
                                          slots=question.slots))
    if not caps:
        raise ConfigError(f"{question.model} fits none of the GPUs within --max-gpus "
                          f"{question.max_gpus}: " + "; ".join(skipped or ["every degree needs more GPUs"]))
    return caps, skipped


def _workload(question: Question, queries: int, reference: Deployment) -> Workload:
    return Workload.build(repeat_queries(question.queries, queries), rate=question.rate,
                          slo_scale=question.slo_scale, model=question.model, reference=reference,
                          slots=question.slots, seed=question.seed)


def to_outcome(result: SimResult, target: float) -> Outcome:
    """A simulation as the search sees it."""
    summary = result.summary or {}
    p95 = (summary.get("latency_s") or {}).get("p95")
    return Outcome(meets=not result.stopped and result.attainment_max >= target - 1e-12,
                   attainment=result.attainment, attainment_max=result.attainment_max,
                   stopped=result.stopped, p95_s=p95, utilisation=dict(summary.get("utilisation") or {}),
                   wall_s=result.wall_s,
                   detail={"misses": result.misses, "queries": result.queries, "sim_s": result.sim_s,
                           **({"summary": summary} if summary else {})})


def describe(out: Outcome) -> str:
    """One line: met / missed with attainment, p95 and wall time."""
    if out.stopped:
        return (f"missed: stopped early after {out.detail.get('misses')} misses "
                f"(at most {out.attainment_max:.1%}), {out.wall_s:.1f} s")
    verdict = "met" if out.meets else "missed"
    p95 = f", p95 {out.p95_s:.0f} s" if out.p95_s is not None else ""
    return f"{verdict}: {out.attainment_max:.1%}{p95}, {out.wall_s:.1f} s"


class _Simulator:
    """The search's ``evaluate``: simulates a mix on the search workload, stopping early."""

    def __init__(self, question: Question, work: Workload, progress: Progress,
                 stop: StopRule | None) -> None:
        self.question, self.work, self.progress, self.stop = question, work, progress, stop
        self.count = 0

    def __call__(self, mix: Mix) -> Outcome:
        self.count += 1
        title = f"sim {self.count}: {mix.label} (${mix.cost:.2f}/h, first cut {mix.headroom:.2f}x)"
        with self.progress.task(title, queries=len(self.work.queries)) as advance:
            result = simulate(self.work, mix.endpoints, policy=self.question.policy,
                              options=dict(self.question.policy_options), stop=self.stop,
                              on_query=advance)
        out = to_outcome(result, self.question.target)
        self.progress.note(f"  {mix.label}: {describe(out)}")
        return out


def _rules(question: Question, caps: Sequence[Capacity], memo: Memo,
           make: Any) -> dict[str, Mix | None]:
    """all-A100 and cheapest single type, each GPU at its usual tensor-parallel degree."""
    by_kind = {c.kind: c for c in caps}

    def usual(gpu: str) -> Capacity | None:
        fits = [c for c in caps if c.kind.gpu == gpu]
        preferred = EndpointKind(gpu, default_tp(gpu, question.model))
        return by_kind.get(preferred) or (fits[0] if fits else None)

    def fewest(cap: Capacity, cost_cap: float = float("inf")) -> Mix | None:
        return cheapest_of_kind(cap.kind, cap.slo_qps, memo, rate=question.rate,
                                max_gpus=question.max_gpus, cost_cap=cost_cap,
                                make=lambda n: make({cap.kind: n}))

    rules: dict[str, Mix | None] = {}
    a100 = usual(ALL_A100) if ALL_A100 in question.prices else None
    rules["all-A100"] = fewest(a100) if a100 is not None else None
    best: Mix | None = None
    singles = [c for c in (usual(g) for g in dict.fromkeys(k.gpu for k in by_kind)) if c is not None]
    singles.sort(key=lambda c: question.prices[c.kind.gpu] * c.kind.tp / max(c.slo_qps, 1e-12))
    for cap in singles:
        found = fewest(cap, best.cost if best is not None else float("inf"))
        if found is not None and (best is None or found.cost < best.cost):
            best = found
    rules["cheapest single type"] = best
    return rules


def plan_fleet(question: Question, progress: Progress | None = None) -> FleetPlan:
    """Search the cheapest mix meeting the target (module doc). Raises ConfigError on bad
    input (see :func:`check`)."""
    check(question)
    progress = progress or Progress(enabled=False)
    started = time.perf_counter()
    reference = reference_deployment(question)
    caps, skipped = first_cut(question, reference)
    qps = {c.kind: c.slo_qps for c in caps}
    kind_prices = {c.kind: question.prices[c.kind.gpu] * c.kind.tp for c in caps}

    def make(counts: Mapping[EndpointKind, int]) -> Mix:
        return make_mix(counts, qps, kind_prices, question.rate)

    mixes = enumerate_mixes(qps, kind_prices, rate=question.rate, max_gpus=question.max_gpus)
    candidates = near_frontier(mixes)
    work = _workload(question, question.search_queries, reference)
    memo = Memo(_Simulator(question, work, progress, StopRule(question.target)))
    result = search(candidates, memo, max_sims=question.max_sims, enumerated=len(mixes))
    rules = _rules(question, caps, memo, make)
    plan = FleetPlan(question, caps, skipped, result, list(memo.runs), rules,
                     wall_s=time.perf_counter() - started)
    if question.validate_queries:
        validate(plan, progress, question.jobs)
    return plan


def validate(plan: FleetPlan, progress: Progress, jobs: int = 1) -> None:
    """Full-length runs (``validate_queries``, no early stop) of the chosen mix, the next cheaper
    frontier mix and the simple rules' mixes, into ``plan.validation``; ``jobs`` > 1 runs them in
    that many processes at once (each a whole simulation, no progress bar of its own)."""
    question = plan.question
    started = time.perf_counter()
    work = _workload(question, question.validate_queries, reference_deployment(question))
    named = {name: mix for name, mix in {"chosen": plan.best, "next cheaper": plan.next_cheaper(),
                                         **plan.rules}.items() if mix is not None}
    distinct = list({mix.counts: mix for mix in named.values()}.values())
    done: dict[tuple[tuple[EndpointKind, int], ...], Outcome] = {}
    if jobs > 1 and len(distinct) > 1:
        with progress.task(f"validation: {len(distinct)} runs of {len(work.queries)} queries in "
                           f"{min(jobs, len(distinct))} processes", queries=len(distinct)) as advance:
            done = _in_processes(question, work, distinct, jobs, advance, progress)
    else:
        simulator = _Simulator(question, work, progress, stop=None)
        done = {mix.counts: simulator(mix) for mix in distinct}
    plan.validation = {name: (mix, done[mix.counts]) for name, mix in named.items()}
    chosen = plan.validation.get("chosen")
    if chosen is not None and not chosen[1].meets:
        _escalate(plan, chosen[0], work, progress, done)
    plan.validation_wall_s = time.perf_counter() - started


def _escalate(plan: FleetPlan, chosen: Mix, work: Workload, progress: Progress,
              done: dict[tuple[tuple[EndpointKind, int], ...], Outcome]) -> None:
    """The chosen mix missed at full length (a short search can overstate attainment before the
    queues settle): the dearer mixes the search saw meet the target are run at full length, by
    cost, until one holds; it is reported as ``holds at full length`` (none: every one missed)."""
    simulator = _Simulator(plan.question, work, progress, stop=None)
    dearer = sorted({m.counts: m for m, o in plan.runs if o.meets and m.cost > chosen.cost}.values(),
                    key=lambda m: m.cost)
    for step, mix in enumerate(dearer, 1):
        out = done.get(mix.counts) or simulator(mix)
        done[mix.counts] = out
        if out.meets:
            plan.validation["holds at full length"] = (mix, out)
            return
        plan.validation[f"escalated {step}"] = (mix, out)


def _whole_run(work: Workload, cluster: list[tuple[str, int]], policy: str,
               options: dict[str, Any]) -> SimResult:
    """One validation run in a worker process."""
    return simulate(work, cluster, policy=policy, options=options)


def _in_processes(question: Question, work: Workload, mixes: Sequence[Mix], jobs: int,
                  advance: Any, progress: Progress) -> dict[tuple[tuple[EndpointKind, int], ...], Outcome]:
    """Simulate ``mixes`` whole in ``jobs`` spawned processes; their outcomes by mix."""
    done: dict[tuple[tuple[EndpointKind, int], ...], Outcome] = {}
    context = multiprocessing.get_context("spawn")  # no fork of a process with threads (rich)
    with ProcessPoolExecutor(max_workers=min(jobs, len(mixes)), mp_context=context) as pool:
        futures = {pool.submit(_whole_run, work, mix.endpoints, question.policy,
                               dict(question.policy_options)): mix for mix in mixes}
        for future in as_completed(futures):
            mix = futures[future]
            out = done[mix.counts] = to_outcome(future.result(), question.target)
            advance()
            progress.note(f"  {mix.label}: {describe(out)}")
    return done
