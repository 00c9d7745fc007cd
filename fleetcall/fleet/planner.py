"""The fleet planner: the cheapest mix of GPUs whose simulated SLO attainment reaches a target.

:func:`plan_fleet` takes a :class:`Question` (workload, rate, deadline scale, target, GPU types,
prices, model, limits) and answers a :class:`FleetPlan`:

1. the first cut (:mod:`fleetcall.fleet.capacity`): each GPU type's tensor-parallel degrees
   within memory, and each such endpoint's queries/s within the SLO;
2. the search (:mod:`fleetcall.fleet.search`): mixes enumerated within ``max_gpus``, those near
   the (cost, headroom) frontier simulated by bisection on cost, each simulation stopped early
   once it has missed more deadlines than the target allows (:mod:`fleetcall.fleet.runner`).
   Mixes are judged in two stages: a short run (``search_queries``) screens each, and the
   search's answer, a mix that met there, is run again at full length (``confirm_length``, also
   stopped early; :func:`~fleetcall.fleet.search.confirmed`), whose verdict replaces the
   screen's; while it misses, the search goes on knowing that. A short run cannot say that a
   mix meets: near the mix's capacity the queues take longer than the run to settle, and
   congestion episodes are rarer than it is long (trace1 at 0.04 q/s: L40S/tp4 + L40S/tp8 met
   96.0% in 200 queries and 88.6% in 1,000; Llama-3.1-8B on one A100 at 0.05 q/s met every
   deadline of its first 40 queries and 81.2% of 80). Judging a short run on its steady state
   (a warm-up dropped, its backlog's trend) cannot flag the second: its 40 queries were
   flawless. So the run length grows for exactly the mixes whose verdict decides the search,
   its answers (a meet a cheaper one supersedes is never confirmed); a short miss stays a miss
   (the early stop makes it cheap): the queues a longer run settles into are longer, not
   shorter;
3. the simple rules a user might follow instead, searched the same way: all A100-80G, and the
   cheapest single GPU type (each at its usual tensor-parallel degree);
4. optionally, validation: full-length runs (no early stop) of the chosen mix, the next cheaper
   mix on the simulated frontier, and the simple rules' mixes. A mix that misses there is
   escalated (the chosen mix to the dearer mixes the search saw meet, a rule to more or other
   GPUs of its kind) until one holds at full length: :attr:`FleetPlan.answer` and
   :meth:`FleetPlan.rule_answer` are the mixes that hold, the plan's answers.

Deadlines are ``slo_scale`` x each query's unloaded latency on a fixed reference deployment
(A100-80G at its usual degree unless given), the same for every mix, so mixes are compared on
the same deadlines.
"""

from __future__ import annotations

import math
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from fleetcall.bench.workloads import QuerySpec, repeat_queries
from fleetcall.errors import ConfigError
from fleetcall.fleet.capacity import Capacity, EndpointKind, endpoint_capacity, tp_options
from fleetcall.fleet.runner import Progress, SimResult, StopRule, Workload, simulate
from fleetcall.fleet.search import (Memo, Mix, Outcome, SearchResult, cheapest_of_kind, confirmed,
                                    enumerate_mixes, frontier, make_mix, near_frontier, search)
from fleetcall.gpumodel.gpus import get_gpu
from fleetcall.gpumodel.models import get_model
from fleetcall.gpumodel.perf import Deployment, default_tp

ALL_A100 = "A100-80G"
MAX_SIM_SPAN_S = 1e9  # simulated seconds a run may span: a float still resolves ~1e-7 s there
HOLDS = "holds at full length"  # the validation entry of the mix a missed one escalated to
MixKey = tuple[tuple[EndpointKind, int], ...]


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
    search_queries: int = 200            # queries per screening simulation
    confirm_queries: int | None = None   # queries confirming a screened meet (None: see confirm_length)
    validate_queries: int = 0            # queries per validation run (0: no validation)
    jobs: int = 1                        # processes running the validation runs at once
    max_sims: int = 40                   # new simulations the main search may run
    tp_degrees: tuple[int, ...] = (1, 2, 4, 8)
    max_escalations: int = 6             # full-length runs escalating one missed mix, at most

    @property
    def confirm_length(self) -> int:
        """Queries of a confirmation run: ``confirm_queries``, else the validation length, else
        5 x ``search_queries``; 0 or no more than ``search_queries``: the screen alone judges."""
        if self.confirm_queries is not None:
            return self.confirm_queries
        return self.validate_queries or 5 * self.search_queries


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
    rule_kinds: dict[str, tuple[EndpointKind, ...]] = field(default_factory=dict)  # rule -> its kinds
    make: Callable[[Mapping[EndpointKind, int]], Mix] | None = None  # a Mix with first-cut figures

    @property
    def best(self) -> Mix | None:
        """The search's choice: the cheapest mix that met the target in the search."""
        return self.result.best

    @property
    def validated(self) -> bool:
        return bool(self.question.validate_queries)

    @property
    def answer(self) -> Mix | None:
        """THE answer: without validation the search's choice; with it the cheapest mix that
        holds at full length -- the choice or the mix it escalated to, or a rule's mix (or
        its escalation) if that holds and costs less (the choice and the rules escalate
        separately, so a rule can end cheaper) -- None if none does."""
        if not self.validated:
            return self.best
        held = [self._held("chosen", ""), *(self._held(name, f"{name}: ") for name in self.rules)]
        return min((m for m in held if m is not None), key=lambda m: (m.cost, m.counts),
                   default=None)

    def rule_answer(self, name: str) -> Mix | None:
        """A simple rule's mix as :attr:`answer` is the plan's: validated and escalated."""
        return self._held(name, f"{name}: ") if self.validated else self.rules.get(name)

    def answer_outcome(self, mix: Mix) -> Outcome | None:
        """What ``mix`` showed at full length if validated, else in the search."""
        if self.validated:
            return next((o for m, o in self.validation.values() if m.counts == mix.counts), None)
        return self.outcome(mix)

    def _held(self, first: str, prefix: str) -> Mix | None:
        checked = self.validation.get(first)
        if checked is not None and checked[1].meets:
            return checked[0]
        held = self.validation.get(prefix + HOLDS)
        return None if held is None else held[0]

    def next_cheaper(self) -> Mix | None:
        """The frontier mix just cheaper than the choice (None without a choice or below it)."""
        if self.best is None:
            return None
        below = [m for m, _ in frontier(self.runs) if m.cost < self.best.cost]
        return below[-1] if below else None

    def outcome(self, mix: Mix) -> Outcome | None:
        """What ``mix`` showed in the search (None if it was not simulated)."""
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
    if question.confirm_queries is not None and question.confirm_queries < 0:
        raise ConfigError(f"--confirm must be >= 0, got {question.confirm_queries}")
    if 0 < question.validate_queries < question.search_queries:
        raise ConfigError(f"--validate ({question.validate_queries}) must be 0 or at least --queries "
                          f"({question.search_queries}): validation runs are the full-length ones")
    if question.slots < 1:
        raise ConfigError(f"--slots must be >= 1, got {question.slots}")
    dearest = max((get_gpu(g).name for g in question.gpus), key=lambda g: question.prices[g])
    if not math.isfinite(question.prices[dearest] * question.max_gpus):
        raise ConfigError(f"prices: {dearest} at ${question.prices[dearest]:g}/GPU-hour x "
                          f"{question.max_gpus} GPUs overflows a cost")
    longest = max(question.search_queries, question.confirm_length, question.validate_queries)
    if longest / question.rate > MAX_SIM_SPAN_S:
        raise ConfigError(f"--rate {question.rate:g} q/s: {longest} queries would arrive over "
                          f"~{longest / question.rate:.3g} s of simulated time, beyond the "
                          f"{MAX_SIM_SPAN_S:g} s the virtual clock resolves finely enough")


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
    """One line: met / missed with attainment, queries, p95 and wall time."""
    queries = out.detail.get("queries")
    if out.stopped:
        return (f"missed: stopped early after {out.detail.get('misses')} misses of {queries} queries "
                f"(at most {out.attainment_max:.1%}), {out.wall_s:.1f} s")
    verdict = "met" if out.meets else "missed"
    p95 = f", p95 {out.p95_s:.0f} s" if out.p95_s is not None else ""
    return f"{verdict}: {out.attainment_max:.1%} of {queries} queries{p95}, {out.wall_s:.1f} s"


class _Simulator:
    """An ``evaluate``: simulates a mix on ``work``, stopping early on ``stop``; ``stage`` names
    the run in its progress bar."""

    def __init__(self, question: Question, work: Workload, progress: Progress,
                 stop: StopRule | None, stage: str = "first cut") -> None:
        self.question, self.work, self.progress, self.stop = question, work, progress, stop
        self.stage = stage
        self.count = 0

    def __call__(self, mix: Mix) -> Outcome:
        self.count += 1
        title = f"{self.stage} {self.count}: {mix.label} (${mix.cost:.2f}/h, first cut {mix.headroom:.2f}x)"
        with self.progress.task(title, queries=len(self.work.queries)) as advance:
            result = simulate(self.work, mix.endpoints, policy=self.question.policy,
                              options=dict(self.question.policy_options), stop=self.stop,
                              on_query=advance)
        out = to_outcome(result, self.question.target)
        self.progress.note(f"  {mix.label}: {describe(out)}")
        return out


def _confirmer(question: Question, reference: Deployment, progress: Progress,
               memo: Memo) -> Callable[[Mix], Outcome] | None:
    """The confirmation of a screened meet (module doc): a run of ``confirm_length`` queries,
    stopped early too, carrying the screen's figures in ``detail["screen"]``; None if the
    confirmation is no longer than the screen."""
    if question.confirm_length <= question.search_queries:
        return None
    run = _Simulator(question, _workload(question, question.confirm_length, reference), progress,
                     StopRule(question.target), stage="confirm")

    def confirm(mix: Mix) -> Outcome:
        out = run(mix)
        screen = memo.known(mix)
        if screen is None:
            return out
        return replace(out, wall_s=screen.wall_s + out.wall_s,
                       detail={**out.detail, "screen": _screen_detail(screen)})
    return confirm


def _screen_detail(out: Outcome) -> dict[str, object]:
    return {"queries": out.detail.get("queries"), "meets": out.meets, "attainment": out.attainment,
            "p95_s": out.p95_s}


def _rules(question: Question, caps: Sequence[Capacity], memo: Memo,
           make: Callable[[Mapping[EndpointKind, int]], Mix], confirm: Callable[[Mix], Outcome] | None
           ) -> tuple[dict[str, Mix | None], dict[str, tuple[EndpointKind, ...]]]:
    """all-A100 and cheapest single type, each GPU at its usual tensor-parallel degree: each
    rule's cheapest meeting mix (screened, then confirmed as the search's), and the endpoint
    kinds the rule may use."""
    by_kind = {c.kind: c for c in caps}

    def usual(gpu: str) -> Capacity | None:
        fits = [c for c in caps if c.kind.gpu == gpu]
        preferred = EndpointKind(gpu, default_tp(gpu, question.model))
        return by_kind.get(preferred) or (fits[0] if fits else None)

    def fewest(cap: Capacity, cost_cap: float = float("inf")) -> Mix | None:
        return cheapest_of_kind(cap.kind, cap.slo_qps, memo, rate=question.rate,
                                max_gpus=question.max_gpus, cost_cap=cost_cap,
                                make=lambda n: make({cap.kind: n}))

    singles = [c for c in (usual(g) for g in dict.fromkeys(k.gpu for k in by_kind)) if c is not None]
    singles.sort(key=lambda c: question.prices[c.kind.gpu] * c.kind.tp / max(c.slo_qps, 1e-12))

    def cheapest_single() -> Mix | None:
        best: Mix | None = None
        for cap in singles:
            found = fewest(cap, best.cost if best is not None else float("inf"))
            if found is not None and (best is None or found.cost < best.cost):
                best = found
        return best

    # each rule's answer is confirmed as the search's is: only the mix it would give
    a100 = usual(ALL_A100) if ALL_A100 in question.prices else None
    rules: dict[str, Mix | None] = {
        "all-A100": None if a100 is None else confirmed(lambda: fewest(a100), memo, confirm),
        "cheapest single type": confirmed(cheapest_single, memo, confirm)}
    kinds = {"all-A100": () if a100 is None else (a100.kind,),
             "cheapest single type": tuple(c.kind for c in singles)}
    return rules, kinds


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
    memo = Memo(_Simulator(question, _workload(question, question.search_queries, reference),
                           progress, StopRule(question.target), stage="screen"))
    confirm = _confirmer(question, reference, progress, memo)
    searches: list[SearchResult] = []

    def find() -> Mix | None:
        budget = max(1, question.max_sims - len(memo.runs))
        searches.append(search(candidates, memo, max_sims=budget, enumerated=len(mixes)))
        return searches[-1].best

    confirmed(find, memo, confirm)
    result = replace(searches[-1], simulated=list(memo.runs), exhausted=all(r.exhausted for r in searches),
                     wall_s=time.perf_counter() - started)
    rules, rule_kinds = _rules(question, caps, memo, make, confirm)
    # a rule's mix is judged as the search's (screened, confirmed): one cheaper than the
    # search's choice is the cheapest mix known to meet the target, so it is the choice
    cheaper = [m for m in rules.values() if m is not None
               and (result.best is None or m.cost < result.best.cost)]
    if cheaper:
        result = replace(result, best=min(cheaper, key=lambda m: (m.cost, m.counts)),
                         simulated=list(memo.runs))
    plan = FleetPlan(question, caps, skipped, result, list(memo.runs), rules,
                     wall_s=time.perf_counter() - started, rule_kinds=rule_kinds, make=make)
    if question.validate_queries:
        validate(plan, progress, question.jobs)
    return plan


def validate(plan: FleetPlan, progress: Progress, jobs: int = 1) -> None:
    """Full-length runs (``validate_queries``, no early stop) of the chosen mix, the next cheaper
    frontier mix and the simple rules' mixes, into ``plan.validation``; ``jobs`` > 1 runs them in
    that many processes at once (each a whole simulation, no progress bar of its own). A search
    run of the same length (a confirmation) is the same run and is not repeated: whole if it
    met, stopped early if it missed (a certain miss at this length: the mix could no longer
    reach the target). Each of the chosen mix and the rules' mixes that misses is escalated
    (:func:`escalate`)."""
    question = plan.question
    started = time.perf_counter()
    work = _workload(question, question.validate_queries, reference_deployment(question))
    named = {name: mix for name, mix in {"chosen": plan.best, "next cheaper": plan.next_cheaper(),
                                         **plan.rules}.items() if mix is not None}
    done: dict[MixKey, Outcome] = {m.counts: o for m, o in plan.runs
                                   if o.detail.get("queries") == len(work.queries)}
    distinct = [m for m in {mix.counts: mix for mix in named.values()}.values() if m.counts not in done]
    if jobs > 1 and len(distinct) > 1:
        with progress.task(f"validation: {len(distinct)} runs of {len(work.queries)} queries in "
                           f"{min(jobs, len(distinct))} processes", queries=len(distinct)) as advance:
            done.update(_in_processes(question, work, distinct, jobs, advance, progress))
    else:
        simulator = _Simulator(question, work, progress, stop=None, stage="validate")
        done.update({mix.counts: simulator(mix) for mix in distinct})
    plan.validation = {name: (mix, done[mix.counts]) for name, mix in named.items()}
    known = dict(done)
    run = _Simulator(question, work, progress, stop=None, stage="escalate")
    for name, (mix, out) in list(plan.validation.items()):
        if name == "next cheaper" or out.meets:
            continue
        escalate(plan, name, _escalation_candidates(plan, name, mix), run, known)
    plan.validation_wall_s = time.perf_counter() - started


def _escalation_candidates(plan: FleetPlan, name: str, missed: Mix) -> list[Mix]:
    """What a mix that missed at full length escalates to, by cost: the chosen mix to the
    dearer mixes the search saw meet; a rule to the dearer mixes of its kinds (one kind per
    mix) that the first cut ranks above the missed one (as the search rules out the rest)."""
    if name == "chosen":
        seen = {m.counts: m for m, o in plan.runs if o.meets and m.cost > missed.cost}
        return sorted(seen.values(), key=lambda m: (m.cost, m.counts))
    if plan.make is None:
        return []
    out = []
    for kind in plan.rule_kinds.get(name, ()):
        for n in range(1, plan.question.max_gpus // kind.tp + 1):
            mix = plan.make({kind: n})
            if mix.cost > missed.cost and mix.headroom > missed.headroom:
                out.append(mix)
                break  # the cheapest such count of this kind; dearer ones only if it misses
    return sorted(out, key=lambda m: (m.cost, m.counts))


def escalate(plan: FleetPlan, name: str, candidates: Sequence[Mix], run: Callable[[Mix], Outcome],
             known: dict[MixKey, Outcome]) -> None:
    """``name``'s mix missed at full length (a short search can overstate attainment): run
    ``candidates`` at full length (``run``; ``known`` outcomes are not re-run), by cost, until
    one holds: it goes into ``plan.validation`` as ``"holds at full length"`` (prefixed
    ``"<rule>: "`` for a rule), each miss before it as ``"escalated <k>"``. At most
    ``question.max_escalations`` runs; a rule's kind that misses is tried again one endpoint up."""
    prefix = "" if name == "chosen" else f"{name}: "
    queue = list(candidates)
    step = 0
    while queue and step < plan.question.max_escalations:
        mix = queue.pop(0)
        step += 1
        out = known.get(mix.counts) or run(mix)
        known[mix.counts] = out
        if out.meets:
            plan.validation[prefix + HOLDS] = (mix, out)
            return
        plan.validation[f"{prefix}escalated {step}"] = (mix, out)
        if name != "chosen" and plan.make is not None and len(mix.counts) == 1:
            (kind, n), = mix.counts
            if (n + 1) * kind.tp <= plan.question.max_gpus:
                queue.append(plan.make({kind: n + 1}))
                queue.sort(key=lambda m: (m.cost, m.counts))


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
