"""The fleet planner's search over GPU mixes: pure decisions, the simulations injected.

A :class:`Mix` is a count of endpoints per :class:`~fleetcall.fleet.capacity.EndpointKind`
(GPU type and tensor-parallel degree); its cost is the sum of its GPUs' hourly prices and its
*headroom* the first-cut capacity (:mod:`fleetcall.fleet.capacity`) over the arrival rate.

1. :func:`enumerate_mixes` lists every mix within ``max_gpus`` whose headroom reaches ``low``
   (below it a mix is taken to miss), never growing a mix past ``high`` (more would only cost
   more) and never costlier than the cheapest single-kind mix reaching ``high``.
2. :func:`near_frontier` keeps the mixes within ``band`` of the best headroom any mix of equal
   or lower cost has: the candidates.
3. :func:`search` simulates candidates (``evaluate``) by bisection on cost: it starts with the
   first cut's own answer (the cheapest candidate whose headroom reaches 1), then always takes
   the median-cost candidate of those still open. A mix that meets the target closes every
   candidate costing as much or more; one that misses closes every candidate whose headroom is
   no higher (the first cut ranks mixes), and its sub-fleets. It ends when none is open (or after
   ``max_sims``).
4. :func:`confirmed` runs the answer of a search (or a rule) again by a longer simulation and
   asks again while that misses: short simulations screen, long ones decide.

:func:`cheapest_of_kind` finds the fewest endpoints of one kind meeting the target (a user's
simple rule), walking the count from the first cut's guess. :func:`frontier` marks the
simulated mixes no cheaper mix beats on attainment.

    >>> a, b = EndpointKind("A", 1), EndpointKind("B", 1)
    >>> mixes = enumerate_mixes({a: 0.5, b: 0.8}, {a: 1.0, b: 2.0}, max_gpus=4)
    >>> [(m.label, m.cost) for m in near_frontier(mixes)][:2]
    [('A/tp1', 1.0), ('2 x A/tp1', 2.0)]
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from fleetcall.errors import ConfigError
from fleetcall.fleet.capacity import EndpointKind


@dataclass(frozen=True, slots=True)
class Mix:
    """Endpoints per kind (sorted by kind, counts >= 1), with the first cut's figures."""

    counts: tuple[tuple[EndpointKind, int], ...]
    cost: float      # $/hour of all its GPUs
    headroom: float  # first-cut capacity within the SLO / arrival rate

    @property
    def gpus(self) -> int:
        return sum(kind.tp * n for kind, n in self.counts)

    @property
    def endpoints(self) -> list[tuple[str, int]]:
        """One (GPU, tp) per endpoint, kinds in order: the cluster to simulate."""
        return [(kind.gpu, kind.tp) for kind, n in self.counts for _ in range(n)]

    @property
    def label(self) -> str:
        """``"2 x A100-80G/tp4 + L40S/tp8"``."""
        return " + ".join(f"{n} x {k.label}" if n > 1 else k.label for k, n in self.counts)

    def within(self, other: Mix) -> bool:
        """Every endpoint of self is in ``other`` (a sub-fleet)."""
        theirs = dict(other.counts)
        return all(theirs.get(kind, 0) >= n for kind, n in self.counts)


def make_mix(counts: Mapping[EndpointKind, int], qps: Mapping[EndpointKind, float],
             prices: Mapping[EndpointKind, float], rate: float = 1.0) -> Mix:
    """A :class:`Mix` of ``counts``; ``qps`` is each kind's first-cut queries/s within the SLO,
    ``prices`` its $/hour (all its GPUs), ``rate`` the arrival rate (queries/s)."""
    items = tuple(sorted((k, n) for k, n in counts.items() if n > 0))
    if not items:
        raise ConfigError("a mix needs at least one endpoint")
    cost = sum(prices[k] * n for k, n in items)
    return Mix(items, cost, sum(qps[k] * n for k, n in items) / rate)


def enumerate_mixes(qps: Mapping[EndpointKind, float], prices: Mapping[EndpointKind, float], *,
                    rate: float = 1.0, max_gpus: int, low: float = 0.5,
                    high: float = 2.0) -> list[Mix]:
    """Every mix of the kinds in ``qps`` with at most ``max_gpus`` GPUs and headroom >= ``low``,
    none grown past headroom ``high``, none costlier than the cheapest single-kind mix reaching
    ``high`` (if any does); sorted by cost, then headroom (highest first)."""
    kinds = sorted(qps)
    cap = math.inf
    for k in kinds:
        if qps[k] > 0:
            n = math.ceil(high * rate / qps[k])
            if n * k.tp <= max_gpus:
                cap = min(cap, n * prices[k])
    out: list[Mix] = []
    counts: dict[EndpointKind, int] = {}

    def grow(i: int, gpus: int, cost: float, qps_sum: float) -> None:
        if qps_sum / rate >= high or i == len(kinds):
            if counts and qps_sum / rate >= low:
                out.append(make_mix(counts, qps, prices, rate))
            return
        kind = kinds[i]
        n = 0
        while True:
            counts[kind] = n
            grow(i + 1, gpus + n * kind.tp, cost + n * prices[kind], qps_sum + n * qps[kind])
            n += 1
            if gpus + n * kind.tp > max_gpus or cost + n * prices[kind] > cap * (1 + 1e-9):
                break
            if qps_sum + (n - 1) * qps[kind] >= high * rate or qps[kind] <= 0:
                break
        del counts[kind]

    grow(0, 0, 0.0, 0.0)
    out.sort(key=lambda m: (m.cost, -m.headroom, m.counts))
    return out


def near_frontier(mixes: Sequence[Mix], band: float = 0.15) -> list[Mix]:
    """The mixes whose headroom is within ``band`` (a fraction) of the best headroom of any mix
    costing no more; sorted by cost."""
    ordered = sorted(mixes, key=lambda m: (m.cost, -m.headroom, m.counts))
    best = 0.0
    keep = []
    for m in ordered:
        best = max(best, m.headroom)
        if m.headroom >= (1.0 - band) * best:
            keep.append(m)
    return keep


@dataclass(frozen=True, slots=True)
class Outcome:
    """What simulating a mix showed (the search reads ``meets``; the rest is reported)."""

    meets: bool
    attainment: float | None  # None if the run was stopped early
    attainment_max: float     # the run's attainment, or the most it could have had if stopped
    stopped: bool = False
    p95_s: float | None = None
    utilisation: Mapping[str, float] = field(default_factory=dict)
    wall_s: float = 0.0
    detail: Mapping[str, object] = field(default_factory=dict)  # the run's summary, if whole


Evaluate = Callable[[Mix], Outcome]


@dataclass(slots=True)
class SearchResult:
    """The search's answer and everything it simulated, in order."""

    best: Mix | None                              # cheapest simulated mix meeting the target
    simulated: list[tuple[Mix, Outcome]]          # every simulation, in the order run
    candidates: int                               # mixes near the frontier
    enumerated: int                               # mixes the first cut listed
    wall_s: float = 0.0
    exhausted: bool = True                        # False iff max_sims cut the search short


class Memo:
    """``evaluate`` run at most once per mix; ``runs`` lists the simulations in order."""

    def __init__(self, evaluate: Evaluate) -> None:
        self._evaluate = evaluate
        self.results: dict[tuple[tuple[EndpointKind, int], ...], Outcome] = {}
        self.runs: list[tuple[Mix, Outcome]] = []
        self._settled: set[tuple[tuple[EndpointKind, int], ...]] = set()  # confirmed mixes

    def __call__(self, mix: Mix) -> Outcome:
        known = self.results.get(mix.counts)
        if known is None:
            known = self.results[mix.counts] = self._evaluate(mix)
            self.runs.append((mix, known))
        return known

    def known(self, mix: Mix) -> Outcome | None:
        return self.results.get(mix.counts)

    def settled(self, mix: Mix) -> bool:
        """Whether ``mix``'s outcome is a confirmation's (:func:`confirmed`)."""
        return mix.counts in self._settled

    def settle(self, mix: Mix, outcome: Outcome) -> None:
        """Replace ``mix``'s outcome by a confirmation's (in ``results`` and in place in ``runs``)."""
        self._settled.add(mix.counts)
        self.results[mix.counts] = outcome
        self.runs = [(m, outcome if m.counts == mix.counts else o) for m, o in self.runs]


def _open(candidates: Sequence[Mix], memo: Memo, best: Mix | None,
          misses: Sequence[Mix]) -> list[Mix]:
    bar = max((m.headroom for m in misses), default=-math.inf)
    return [c for c in candidates
            if memo.known(c) is None and (best is None or c.cost < best.cost)
            and c.headroom > bar and not any(c.within(m) for m in misses)]


def search(candidates: Sequence[Mix], evaluate: Evaluate | Memo, *, max_sims: int = 40,
           enumerated: int | None = None) -> SearchResult:
    """Bisect ``candidates`` (see the module doc) with ``evaluate``; at most ``max_sims`` new
    simulations. ``evaluate`` may be a :class:`Memo` shared with other searches."""
    started = time.perf_counter()
    memo = evaluate if isinstance(evaluate, Memo) else Memo(evaluate)
    first = len(memo.runs)
    best: Mix | None = None
    misses: list[Mix] = []
    for mix, out in memo.runs:  # what earlier searches on the same memo showed
        if out.meets and (best is None or mix.cost < best.cost):
            best = mix
        elif not out.meets:
            misses.append(mix)
    pick = next((c for c in sorted(candidates, key=lambda m: (m.cost, -m.headroom))
                 if c.headroom >= 1.0 and memo.known(c) is None), None)
    exhausted = True
    while True:
        pending = _open(candidates, memo, best, misses)
        if not pending:
            break
        if len(memo.runs) - first >= max_sims:
            exhausted = False
            break
        if pick is None or pick not in pending:
            pending.sort(key=lambda m: (m.cost, -m.headroom, m.counts))
            pick = pending[len(pending) // 2]
        out = memo(pick)
        if out.meets:
            best = pick if best is None or pick.cost < best.cost else best
        else:
            misses.append(pick)
        pick = None
    return SearchResult(best, memo.runs[first:], len(candidates),
                        len(candidates) if enumerated is None else enumerated,
                        time.perf_counter() - started, exhausted)


def confirmed(find: Callable[[], Mix | None], memo: Memo, confirm: Evaluate | None) -> Mix | None:
    """``find()``'s mix once a confirmation agrees: ``find`` answers from ``memo`` (a search, a
    rule); its mix is run by ``confirm`` (a longer run), whose verdict replaces the memo's
    (:meth:`Memo.settle`); while it misses, ``find`` is asked again, now knowing that. Only the
    answer is confirmed, so a meet that a cheaper one supersedes costs no confirmation. None if
    ``find`` finds none; ``confirm`` None: ``find()`` as is."""
    while True:
        mix = find()
        if mix is None or confirm is None or memo.settled(mix):
            return mix
        out = confirm(mix)
        memo.settle(mix, out)
        if out.meets:
            return mix


def cheapest_of_kind(kind: EndpointKind, qps: float, evaluate: Memo, *, rate: float,
                     max_gpus: int, make: Callable[[int], Mix],
                     cost_cap: float = math.inf) -> Mix | None:
    """The fewest endpoints of ``kind`` (``make(n)`` builds the mix of n; ``qps`` is one
    endpoint's first-cut queries/s within the SLO) meeting the target, None if none within
    ``max_gpus`` GPUs, or costing less than ``cost_cap``, does. Starts at the count whose
    first-cut headroom reaches 1, walks down while it meets and up while it misses (attainment
    grows with the count)."""
    limit = max_gpus // kind.tp
    if limit < 1:
        return None
    n = min(limit, max(1, math.ceil(rate / qps))) if qps > 0 else limit
    best: Mix | None = None
    while 1 <= n <= limit:
        mix = make(n)
        if best is None and mix.cost >= cost_cap:
            break
        if evaluate(mix).meets:
            best = mix
            n -= 1
            if n < 1:
                break
            below = evaluate.known(make(n))
            if below is not None and not below.meets:
                break
        else:
            if best is not None:
                break
            n += 1
    return best


def frontier(runs: Sequence[tuple[Mix, Outcome]]) -> list[tuple[Mix, Outcome]]:
    """The simulated mixes (one per mix) whose attainment (the upper bound for a stopped run)
    beats every cheaper simulated mix's; sorted by cost."""
    seen: dict[tuple[tuple[EndpointKind, int], ...], tuple[Mix, Outcome]] = {}
    for mix, out in runs:
        seen.setdefault(mix.counts, (mix, out))
    ordered = sorted(seen.values(), key=lambda r: (r[0].cost, -r[1].attainment_max))
    best = -1.0
    out_list = []
    for mix, out in ordered:
        if out.attainment_max > best + 1e-12:
            out_list.append((mix, out))
            best = out.attainment_max
    return out_list
