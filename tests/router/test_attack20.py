"""Attacks on the slack policy's placement cost (``_place``, ``_held_delay``,
``_deadline_harm``): odd views through the public API give finite costs, never below the
call's finish, and placements never raise."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleetcall.router.config import RetryConfig
from fleetcall.router.core import Grant, SchedulerCore
from fleetcall.router.dispatcher import CallView, EndpointView, Slack, SlackKnobs
from fleetcall.router.predict import PrefixIndex, Prior, ServicePredictor
from fleetcall.router.state import EndpointSpec

_ids = itertools.count()


def _call(prompt: int, output: int = 100, *, query: str = "q", deadline: float | None = None,
          remaining: float = 0.0, hashes: tuple[int, ...] = ()) -> CallView:
    return CallView(next(_ids), query, "planner", prompt, output, deadline, remaining, 0, 0.0,
                    hashes)


def _assert_sane(call: CallView, endpoints: list[EndpointView], now: float,
                 slack: Slack | None = None) -> None:
    slack = slack or Slack()
    for p in slack.placements(call, endpoints, now):
        assert math.isfinite(p.cost) and math.isfinite(p.finish), p
        assert p.finish >= now and p.cost >= p.finish, p
    slack.choose(call, endpoints, now)


def test_a_running_call_with_a_latest_end_of_minus_inf_costs_its_delay_not_nan() -> None:
    # A running call that must end by -inf (its deadline -inf, or a finite deadline less
    # infinite work after it): max(end + delay + inf, 0) - max(end + inf, 0) was inf - inf,
    # a NaN cost, and choose() then found no placement within the NaN tie band.
    a100 = ServicePredictor("A100-80G", "llama-3.1-8b")
    prompt = _call(50_000)
    past = EndpointView("past", 4, (10.0,), (), a100, running_queries=("other",),
                        running_latest_end=(-math.inf,))
    late = EndpointView("late", 4, (10.0,), (), a100, running_queries=("other",),
                        running_latest_end=(-1e6,))
    cost_past, cost_late = (p.cost for p in Slack().placements(prompt, [past, late], 0.0))
    # long past its deadline either way: every second of delay is a second past it
    assert math.isfinite(cost_past) and cost_past == pytest.approx(cost_late, rel=1e-9)
    _assert_sane(prompt, [past, late], 0.0)


def test_the_core_places_beside_calls_whose_deadline_is_minus_inf() -> None:
    # Through the public API: calls with deadline -inf run at the A100; a long prompt then
    # arrives. submit raised ValueError (min() of an empty sequence) from slack's choose.
    # (Infinite work after a call did the same; a call view now refuses it, below.)
    core = SchedulerCore("slack", None, retry=RetryConfig(backoff_s=0.0))
    core.add_endpoint(EndpointSpec("a", 4, "A100-80G", "llama-3.1-8b"), 0.0)
    core.add_endpoint(EndpointSpec("b", 4, "L40S", "llama-3.1-8b"), 0.0)
    grants = core.submit(_call(100, 500, query="x", deadline=-math.inf), 0.0)
    grants += core.submit(_call(100, 500, query="y", deadline=-math.inf), 0.0)
    assert [g.endpoint for g in grants if isinstance(g, Grant)] == ["a", "a"]
    actions = core.submit(_call(50_000, query="z"), 1.0)
    assert [type(a) for a in actions] == [Grant]
    core.check(1.0)


def _predictor(kind: int, overhead: float, rate: float, tpot: float) -> ServicePredictor:
    if kind == 0:
        return ServicePredictor("A100-80G", "llama-3.1-8b")
    if kind == 1:
        return ServicePredictor("L40S", "llama-3.1-70b", tp=2)
    return ServicePredictor(None, None, prior=Prior(request_overhead_s=overhead,
                                                    prefill_tokens_per_s=rate, tpot_s=tpot,
                                                    batch_slowdown=0.0))


_remaining = st.one_of(st.floats(-100.0, 1e4), st.sampled_from([0.0, 1e-9, -1e-9]))
_latest = st.one_of(st.floats(-1e4, 1e4), st.sampled_from([math.inf, -math.inf]))


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(prompt=st.integers(0, 200_000), output=st.integers(1, 5000),
       cached_blocks=st.integers(0, 20_000), kind=st.integers(0, 2),
       overhead=st.sampled_from([0.0, 1e-12, 0.15]),
       rate=st.sampled_from([1.0, 1500.0, 1e12, math.inf]),
       tpot=st.sampled_from([0.0, 1e-12, 0.06, 5.0]),
       running=st.lists(_remaining, max_size=6), siblings=st.lists(st.booleans(), max_size=6),
       latest=st.lists(_latest, max_size=6), with_queries=st.booleans(),
       with_latest=st.booleans(), chunk=st.sampled_from([1, 7, 2048, 10**6]),
       now=st.floats(0.0, 1e5), backlog=st.floats(0.0, 100.0), load=st.floats(0.0, 1.0),
       typical=st.integers(0, 10**6), slots=st.integers(1, 8),
       externality=st.sampled_from([0.0, 1.0, 3.0]),
       prefill_slots=st.sampled_from([None, 1, 4]))
def test_slack_costs_are_finite_and_at_least_the_finish(
        prompt: int, output: int, cached_blocks: int, kind: int, overhead: float, rate: float,
        tpot: float, running: list[float], siblings: list[bool], latest: list[float],
        with_queries: bool, with_latest: bool, chunk: int, now: float, backlog: float,
        load: float, typical: int, slots: int, externality: float,
        prefill_slots: int | None) -> None:
    # prompts wholly or partly cached, empty prompts, one output token, predictors with TPOT
    # or TTFT 0, overrun (<= 0) remainders, the call's own query beside it, deadlines long
    # past (-inf) or none (inf), queries/latest ends known or not, chunks of 1 token or huge
    hashes = tuple(range(1, prompt // 16 + 2))
    index = None
    if cached_blocks:
        index = PrefixIndex(capacity_blocks=100_000)
        index.add(hashes[:cached_blocks])
    call = CallView(next(_ids), "q", "planner", prompt, output, None, 0.0, 0, now, hashes)
    n = len(running)
    queries = tuple("q" if i < len(siblings) and siblings[i] else f"o{i}" for i in range(n))
    ends = tuple(latest[i] if i < len(latest) else math.inf for i in range(n))
    endpoint = EndpointView("e", slots, tuple(running), (), _predictor(kind, overhead, rate, tpot),
                            index, prefill_backlog_s=backlog, prefill_load=load,
                            typical_prefill_tokens=typical,
                            running_queries=queries if with_queries else (),
                            running_latest_end=ends if with_latest else ())
    idle = EndpointView("idle", 2, (), (), _predictor(kind, overhead, rate, tpot))
    knobs = SlackKnobs(chunk_tokens=chunk, externality=externality, prefill_slots=prefill_slots)
    _assert_sane(call, [endpoint, idle], now, Slack(knobs))


_queued = st.tuples(st.integers(0, 100_000), st.integers(1, 3000), st.booleans(),
                    st.one_of(st.none(), st.floats(-1e4, 1e4),
                              st.sampled_from([-math.inf, math.inf])),
                    st.floats(0.0, 1e4))


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(prompt=st.integers(0, 100_000), output=st.integers(1, 2000),
       queued=st.lists(_queued, max_size=6), running=st.lists(st.floats(-10.0, 1e3), max_size=4),
       sibling=st.booleans(), tpot=st.sampled_from([0.0, 0.02]), real=st.booleans(),
       deadline=st.one_of(st.none(), st.floats(-1e4, 1e4),
                          st.sampled_from([-math.inf, math.inf])),
       remaining=st.floats(0.0, 1e4), now=st.floats(0.0, 1e4),
       slots=st.integers(1, 4))
def test_slack_costs_stay_sane_with_queued_siblings_and_deadlines_long_past(
        prompt: int, output: int, queued: list[tuple[int, int, bool, float | None, float]],
        running: list[float], sibling: bool, tpot: float, real: bool, deadline: float | None,
        remaining: float, now: float, slots: int) -> None:
    # queued calls of the placed call's query behind it (_queued_sibling_end), deadlines of
    # -inf / inf and infinite work after a call, for the queued, the running and the placed
    predictor = (ServicePredictor("A100-80G", "llama-3.1-8b") if real
                 else _predictor(2, 0.0, 1000.0, tpot))
    waiting = tuple(_call(p, o, query="q" if mine else "o", deadline=d, remaining=r)
                    for p, o, mine, d, r in queued)
    call = CallView(next(_ids), "q", "planner", prompt, output, deadline, remaining, 0, now, ())
    queries = tuple("q" if sibling and i == 0 else f"x{i}" for i in range(len(running)))
    busy = EndpointView("busy", slots, tuple(running), waiting, predictor,
                        running_queries=queries,
                        running_latest_end=tuple(-math.inf for _ in running))
    _assert_sane(call, [busy, EndpointView("idle", 2, (), (), predictor)], now)


@pytest.mark.parametrize("work", [math.inf, -1.0, math.nan])
def test_a_call_with_infinite_or_negative_work_after_it_is_refused_by_name(work: float) -> None:
    # remaining_work_s=inf made the urgency key NaN with a deadline of inf (the queue's order
    # undefined) and the latest end -inf with a finite deadline: refused where the view is made.
    with pytest.raises(ValueError, match="remaining_work_s must be finite and >= 0"):
        _call(100, 10, deadline=5.0, remaining=work)
