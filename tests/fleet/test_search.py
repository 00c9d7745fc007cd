"""The fleet search's pure decisions: enumeration, the frontier band, bisection, the rules."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from fleetcall.fleet.capacity import EndpointKind
from fleetcall.fleet.search import (Memo, Mix, Outcome, cheapest_of_kind, enumerate_mixes, frontier,
                                    make_mix, near_frontier, search)

A, B, C = EndpointKind("A", 1), EndpointKind("B", 2), EndpointKind("C", 4)
QPS = {A: 0.1, B: 0.25, C: 0.6}
PRICES = {A: 1.0, B: 2.2, C: 4.1}


def _truth(threshold: float):
    """A simulator whose mixes meet iff their first-cut headroom reaches ``threshold``."""
    calls: list[Mix] = []

    def evaluate(mix: Mix) -> Outcome:
        calls.append(mix)
        ok = mix.headroom >= threshold
        return Outcome(ok, 0.99 if ok else 0.5, 0.99 if ok else 0.5)
    return evaluate, calls


def test_enumeration_respects_max_gpus_and_the_headroom_band():
    mixes = enumerate_mixes(QPS, PRICES, rate=1.0, max_gpus=12, low=0.5, high=2.0)
    assert mixes and all(m.gpus <= 12 for m in mixes)
    assert all(m.headroom >= 0.5 for m in mixes)
    assert [m.cost for m in mixes] == sorted(m.cost for m in mixes)
    # no mix is grown past `high`: dropping any one endpoint leaves it below
    for m in mixes:
        for kind, n in m.counts:
            smaller = dict(m.counts)
            smaller[kind] = n - 1
            if any(smaller.values()):
                assert make_mix(smaller, QPS, PRICES).headroom < 2.0


def test_near_frontier_drops_mixes_far_below_the_best_headroom_at_their_cost():
    mixes = enumerate_mixes(QPS, PRICES, rate=1.0, max_gpus=40)
    kept = near_frontier(mixes, band=0.1)
    assert 0 < len(kept) < len(mixes)
    for m in kept:
        best = max(x.headroom for x in mixes if x.cost <= m.cost)
        assert m.headroom >= 0.9 * best - 1e-12


def test_search_finds_the_cheapest_meeting_mix_simulating_a_few():
    candidates = near_frontier(enumerate_mixes(QPS, PRICES, rate=1.0, max_gpus=40))
    evaluate, calls = _truth(1.2)
    result = search(candidates, evaluate)
    exact = min((m for m in candidates if m.headroom >= 1.2), key=lambda m: m.cost)
    assert result.best is not None and math.isclose(result.best.cost, exact.cost)
    assert len(calls) == len(result.simulated) < len(candidates) / 3
    assert len({m.counts for m in calls}) == len(calls)  # never the same mix twice


@settings(max_examples=60, deadline=None)
@given(qps=st.lists(st.floats(0.05, 1.0), min_size=2, max_size=4),
       prices=st.lists(st.floats(0.5, 10.0), min_size=4, max_size=4),
       threshold=st.floats(0.6, 1.9))
def test_search_is_exact_when_the_first_cut_ranks_mixes_right(qps, prices, threshold):
    kinds = [EndpointKind(f"G{i}", 2 ** (i % 3)) for i in range(len(qps))]
    q = dict(zip(kinds, qps))
    p = {k: prices[i] * k.tp for i, k in enumerate(kinds)}
    candidates = near_frontier(enumerate_mixes(q, p, rate=1.0, max_gpus=16))
    evaluate, _ = _truth(threshold)
    result = search(candidates, evaluate, max_sims=1000)
    meeting = [m for m in candidates if m.headroom >= threshold]
    if not meeting:
        assert result.best is None
    else:
        assert result.best is not None
        assert math.isclose(result.best.cost, min(m.cost for m in meeting))


def test_a_miss_closes_its_sub_fleets_and_max_sims_cuts_the_search_short():
    candidates = near_frontier(enumerate_mixes(QPS, PRICES, rate=1.0, max_gpus=40))
    evaluate, calls = _truth(10.0)  # nothing meets
    result = search(candidates, evaluate, max_sims=3)
    assert result.best is None and not result.exhausted and len(calls) == 3
    for miss in calls:  # nothing simulated after a miss is inside it
        later = calls[calls.index(miss) + 1:]
        assert not any(m.within(miss) for m in later)


def test_cheapest_of_kind_walks_to_the_fewest_endpoints_that_meet():
    evaluate, calls = _truth(1.0)
    memo = Memo(evaluate)
    mix = cheapest_of_kind(B, QPS[B] * 1.2, memo, rate=1.0, max_gpus=40,
                           make=lambda n: make_mix({B: n}, QPS, PRICES))
    assert mix is not None and mix.counts == ((B, 4),)   # 4 x 0.25 reaches 1.0, 3 x does not
    assert {m.counts[0][1] for m in calls} == {3, 4}
    assert cheapest_of_kind(B, QPS[B], memo, rate=1.0, max_gpus=6,
                            make=lambda n: make_mix({B: n}, QPS, PRICES)) is None


def test_frontier_keeps_mixes_no_cheaper_mix_beats():
    m1, m2, m3 = (make_mix({A: n}, QPS, PRICES) for n in (1, 2, 3))
    runs = [(m2, Outcome(False, None, 0.9, stopped=True)), (m1, Outcome(False, 0.95, 0.95)),
            (m3, Outcome(True, 0.99, 0.99))]
    assert [m.counts for m, _ in frontier(runs)] == [m1.counts, m3.counts]


def test_only_the_answer_is_confirmed_and_a_confirmed_miss_sends_the_search_on():
    """Screens say every mix with headroom >= 1.0 meets; the longer confirmation says only >= 1.4
    do. The search's answer is confirmed, and while that misses the search goes on; a meet a
    cheaper one superseded is never confirmed."""
    from fleetcall.fleet.search import confirmed

    candidates = near_frontier(enumerate_mixes(QPS, PRICES, rate=1.0, max_gpus=40))
    screen, _ = _truth(1.0)
    long_run, confirmations = _truth(1.4)
    memo = Memo(screen)
    found = confirmed(lambda: search(candidates, memo, max_sims=1000).best, memo, long_run)
    exact = min((m for m in candidates if m.headroom >= 1.4), key=lambda m: m.cost)
    assert found is not None and math.isclose(found.cost, exact.cost) and memo.settled(found)
    assert all(m.headroom >= 1.0 for m in confirmations)            # only screened meets ...
    assert all(not out.meets for m, out in memo.runs if memo.settled(m) and m is not found)
    cheapest_screened = min((m for m, o in memo.runs if m.headroom >= 1.0), key=lambda m: m.cost)
    assert confirmations[0].counts == cheapest_screened.counts     # ... the answers, cheapest first
    assert confirmed(lambda: None, memo, long_run) is None
