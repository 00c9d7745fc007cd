"""Dispatch policies on constructed snapshots: rr-fcfs, least-busy, hexgen, slack, stealing."""

from __future__ import annotations

import doctest
import math
from collections.abc import Sequence

import pytest

import fleetcall.router.dispatcher as dispatcher_module
import fleetcall.router.placement as placement_module
import fleetcall.router.slack as slack_module
from fleetcall.errors import ConfigError, LLMError
from fleetcall.router.dispatcher import (
    CallView,
    Dispatcher,
    EndpointView,
    NoEndpointAvailable,
    Slack,
    SlackKnobs,
    dispatcher_names,
    expected_batch,
    make_dispatcher,
    pick_steal,
    predicted_service_s,
)
from fleetcall.router.predict import PrefixIndex, Prior, ServicePredictor
from fleetcall.router.queue import Discipline

_ids = iter(range(10**9))


def fixed(rate: float) -> ServicePredictor:
    """A predictor whose service time is exactly (uncached prompt tokens) / rate seconds."""
    return ServicePredictor(None, None, prior=Prior(request_overhead_s=0.0,
                                                    prefill_tokens_per_s=rate, tpot_s=0.0,
                                                    batch_slowdown=0.0))


def call(prompt: int = 1000, deadline: float | None = None, *, remaining: float = 0.0,
         at: float = 0.0, hashes: tuple[int, ...] = (), query: str = "q") -> CallView:
    return CallView(call_id=next(_ids), query_id=query, kind="planner", prompt_tokens=prompt,
                    output_tokens=20, deadline=deadline, remaining_work_s=remaining, priority=0,
                    enqueued_at=at, prefix_hashes=hashes)


def ep(name: str, *, rate: float = 1000.0, slots: int = 1, running: tuple[float, ...] = (),
       queued: tuple[CallView, ...] = (), prefixes: PrefixIndex | None = None,
       available: bool = True, predictor: ServicePredictor | None = None) -> EndpointView:
    return EndpointView(name, slots, running, queued, predictor or fixed(rate), prefixes,
                        available)


def test_doctests() -> None:
    for module in (dispatcher_module, placement_module, slack_module):
        assert doctest.testmod(module).failed == 0, module.__name__


# --- registry ------------------------------------------------------------------------------

def test_make_dispatcher_by_name() -> None:
    assert dispatcher_names() == ["rr-fcfs", "least-busy", "hexgen", "slack"]
    assert make_dispatcher().name == "slack"
    for name in dispatcher_names():
        d = make_dispatcher(name)
        assert isinstance(d, Dispatcher) and d.name == name
        q = d.new_queue()
        assert q.order == d.queue_order == d.discipline.order
    assert [make_dispatcher(n).queue_order for n in dispatcher_names()] == \
        ["fcfs", "fcfs", "hexgen", "urgency"]
    assert not make_dispatcher("hexgen").new_queue().discipline.demote_hopeless
    assert make_dispatcher("slack", aging_per_s=0.7).new_queue().discipline.aging_per_s == 0.7


def test_make_dispatcher_errors_list_valid_choices() -> None:
    with pytest.raises(ConfigError, match="unknown dispatcher 'fifo'; valid: rr-fcfs, "
                                          "least-busy, hexgen, slack"):
        make_dispatcher("fifo")
    with pytest.raises(ConfigError, match=r"beta.*valid knobs: alpha$"):
        make_dispatcher("hexgen", beta=1)
    with pytest.raises(ConfigError, match=r"alpha.*less than or equal to 1"):
        make_dispatcher("hexgen", alpha=2.0)
    with pytest.raises(ConfigError, match=r"valid knobs: \(none\)"):
        make_dispatcher("rr-fcfs", alpha=0.5)
    with pytest.raises(ConfigError, match="affinity_max_delay_s, affinity_max_delay_frac"):
        make_dispatcher("slack", affinity_delay=1.0)


@pytest.mark.parametrize("name", ["rr-fcfs", "least-busy", "hexgen", "slack"])
def test_no_available_endpoint_is_a_clear_error(name: str) -> None:
    d = make_dispatcher(name)
    c = call()
    with pytest.raises(NoEndpointAvailable, match=r"call \d+ \(planner, query q\).*a, b"):
        d.choose(c, [ep("a", available=False), ep("b", available=False)], now=0.0)
    with pytest.raises(LLMError, match="pool is empty"):
        d.choose(c, [], now=0.0)


# --- baselines -----------------------------------------------------------------------------

def test_round_robin_cycles_and_skips_unavailable() -> None:
    d = make_dispatcher("rr-fcfs")
    pool = [ep("a"), ep("b"), ep("c")]
    assert [d.choose(call(), pool, 0.0) for _ in range(4)] == ["a", "b", "c", "a"]
    pool[1] = ep("b", available=False)
    assert [d.choose(call(), pool, 0.0) for _ in range(4)] == ["c", "a", "c", "a"]
    assert d.steal(ep("a"), pool, 0.0) is None


def test_least_busy_counts_running_and_queued() -> None:
    d = make_dispatcher("least-busy")
    pool = [ep("a", slots=4, running=(1.0, 1.0)),
            ep("b", slots=4, running=(1.0,), queued=(call(),)),
            ep("c", slots=4, running=(9.0,))]
    assert d.choose(call(), pool, 0.0) == "c"
    pool[2] = ep("c", available=False)
    # a tie between a and b: taken in turn (the rotation has moved on by one decision)
    assert [d.choose(call(), pool, 0.0) for _ in range(4)] == ["b", "a", "b", "a"]
    fresh = make_dispatcher("least-busy")
    assert fresh.choose(call(), pool, 0.0) == "a"  # the rotation starts at the first listed


def test_hexgen_alpha_extremes() -> None:
    fast = ServicePredictor("A100", "llama-3.1-70b", tp=4)
    slow = ServicePredictor("A6000", "llama-3.1-70b", tp=4)
    pool = [ep("a6000", predictor=slow, slots=2, running=(1.0,)),
            ep("a100", predictor=fast, slots=2, running=(30.0, 30.0), queued=(call(), call()))]
    c = call(prompt=1100)
    assert make_dispatcher("hexgen", alpha=1.0).choose(c, pool, 0.0) == "a100"  # fastest GPU
    assert make_dispatcher("hexgen", alpha=0.0).choose(c, pool, 0.0) == "a6000"  # least loaded
    idle = [ep("a6000", predictor=slow), ep("a100", predictor=fast)]
    assert make_dispatcher("hexgen", alpha=0.0).choose(c, idle, 0.0) == "a100"  # tie: faster
    assert make_dispatcher("hexgen").steal(idle[0], pool, 0.0) is None


def test_hexgen_mixes_speed_and_load() -> None:
    # a: service 1 s, load 3 s/slot; b: service 2 s, load 0.  Scores: a = alpha + (1 - alpha),
    # b = 2 * alpha: b wins iff alpha < 1/2.
    pool = [ep("a", rate=1000, running=(3.0,)), ep("b", rate=500)]
    assert make_dispatcher("hexgen", alpha=0.4).choose(call(), pool, 0.0) == "b"
    assert make_dispatcher("hexgen", alpha=0.6).choose(call(), pool, 0.0) == "a"


# --- slack ---------------------------------------------------------------------------------

def _fast_with_queue() -> EndpointView:
    # other queries' calls, 0.5 s each at 2000/s
    urgent = tuple(call(prompt=1000, deadline=5.0, query="other") for _ in range(6))
    return ep("fast", rate=2000, running=(0.2,), queued=urgent)


def test_slack_prefers_an_idle_slow_gpu_to_a_fast_one_with_a_long_queue() -> None:
    d = make_dispatcher("slack")
    pool = [_fast_with_queue(), ep("slow", rate=500)]
    relaxed = call(prompt=1000, deadline=60.0)
    assert d.choose(relaxed, pool, now=0.0) == "slow"
    by_name = {p.endpoint: p for p in Slack().placements(relaxed, pool, 0.0)}
    assert by_name["fast"].finish == pytest.approx(0.2 + 6 * 0.5 + 0.5)
    assert by_name["slow"].finish == pytest.approx(2.0)


def test_slack_counts_its_own_querys_calls_queued_behind_it() -> None:
    # Siblings of one parallel stage, the first running and the rest held in the fast GPU's
    # queue: the new one is a little more urgent than them (it jumps them), so it alone would
    # finish soonest there -- but the stage ends when the last sibling behind it does, pushed
    # back by its prompt. An idle slower GPU ends the stage sooner (issue 12, stage pile-up).
    d = make_dispatcher("slack")
    siblings = tuple(call(prompt=1000, deadline=5.0, query="q") for _ in range(3))
    fast = ep("fast", rate=2000, running=(0.2,), queued=siblings)
    pool = [fast, ep("slow", rate=1200)]
    new = call(prompt=1000, deadline=4.0, query="q")
    by_name = {p.endpoint: p for p in Slack().placements(new, pool, 0.0)}
    assert by_name["fast"].finish < by_name["slow"].finish       # alone, fast is sooner ...
    assert d.choose(new, pool, now=0.0) == "slow"                 # ... but the stage ends later
    # the same queue of another query's calls: only the new call's finish counts, fast wins
    others = tuple(call(prompt=1000, deadline=5.0, query="other") for _ in range(3))
    pool = [ep("fast", rate=2000, running=(0.2,), queued=others), ep("slow", rate=1200)]
    assert d.choose(call(prompt=1000, deadline=4.0, query="q"), pool, now=0.0) == "fast"


def test_slack_counts_only_the_calls_served_before_this_one() -> None:
    d = make_dispatcher("slack")
    pool = [_fast_with_queue(), ep("slow", rate=500)]
    urgent = call(prompt=1000, deadline=1.0)  # more urgent than the whole queue: jumps it
    assert d.choose(urgent, pool, now=0.0) == "fast"
    assert Slack().placements(urgent, pool, 0.0)[0].finish == pytest.approx(0.7)


def test_slack_simulates_the_slots() -> None:
    queued = (call(prompt=2000, deadline=8.0), call(prompt=2000, deadline=9.0))  # 2 s each
    e = ep("e", slots=2, running=(1.0, 3.0), queued=queued)
    assert e.queued_service_s == (2.0, 2.0)
    # slots free at 1 and 3; first queued runs 1..3, second 3..5; ours starts at 3
    mine = call(prompt=500, deadline=50.0)
    slots_only = Slack(SlackKnobs(prefill_slots=None))
    p = slots_only.placements(mine, [e], now=0.0)[0]
    assert p.finish == pytest.approx(3.0 + 0.5) and p.service_s == pytest.approx(0.5)
    # at t=7.5 both queued calls are hopeless (latest start 6 and 7): demoted behind ours
    assert slots_only.placements(mine, [e], now=7.5)[0].finish == pytest.approx(7.5 + 1.0 + 0.5)


def test_slack_serialises_prefill_across_slots() -> None:
    """Prompts are computed one after another however many slots are free: with these
    all-prefill predictors, two queued 2 s prompts and 1.5 s of prefill still owed to running
    calls put ours at 1.5 + 2 + 2 = 5.5 s before its own 0.5 s, not at the 3 s the slots say."""
    queued = (call(prompt=2000, deadline=8.0), call(prompt=2000, deadline=9.0))
    e = EndpointView("e", 2, (1.0, 3.0), queued, fixed(1000.0), prefill_backlog_s=1.5)
    mine = call(prompt=500, deadline=50.0)
    assert Slack().placements(mine, [e], now=0.0)[0].finish == pytest.approx(5.5 + 0.5)
    # an urgent call jumps the queue, so only the running calls' prefill is ahead of it
    urgent = call(prompt=500, deadline=1.0)
    assert Slack().placements(urgent, [e], now=0.0)[0].finish == pytest.approx(1.5 + 0.5)
    # a slower GPU with nothing owed beats a fast one with a prefill backlog
    idle_slow = EndpointView("slow", 2, (), (), fixed(250.0))
    assert Slack().choose(mine, [e, idle_slow], now=0.0) == "slow"


def test_only_slack_gates_prefill() -> None:
    assert make_dispatcher("slack").prefill_slots == 1
    assert make_dispatcher("slack", prefill_slots=None).prefill_slots is None
    for name in ("rr-fcfs", "least-busy", "hexgen"):
        assert make_dispatcher(name).prefill_slots is None


def _warm_and_cold(running: float, *, blocks: int = 100) -> list[EndpointView]:
    hashes = tuple(range(1, blocks + 1))
    warm = PrefixIndex(capacity_blocks=1000)
    warm.add(hashes)
    return [ep("cold"), ep("warm", running=(running,), prefixes=warm)]


def test_slack_honours_prefix_affinity_within_the_bound() -> None:
    c = call(prompt=2000, deadline=100.0, hashes=tuple(range(1, 101)))  # 1600 tokens cached
    d = make_dispatcher("slack")  # affinity_max_delay_s = 0.5
    cold, warm = Slack().placements(c, _warm_and_cold(running=2.0), 0.0)
    assert (cold.finish, warm.finish, warm.cached_tokens) == pytest.approx((2.0, 2.4, 1600))
    assert d.choose(c, _warm_and_cold(running=2.0), 0.0) == "warm"   # 0.4 s later: affinity
    assert d.choose(c, _warm_and_cold(running=2.5), 0.0) == "cold"   # 0.9 s later: past bound
    assert make_dispatcher("slack", affinity_max_delay_s=1.0).choose(
        c, _warm_and_cold(running=2.5), 0.0) == "warm"
    assert make_dispatcher("slack", affinity_max_delay_frac=0.1).choose(
        c, _warm_and_cold(running=2.0), 0.0) == "cold"               # 10% of 2 s < 0.4 s
    assert d.choose(c, _warm_and_cold(running=1.0), 0.0) == "warm"   # simply the earliest


def test_slack_ignores_short_prefix_matches() -> None:
    c = call(prompt=2000, deadline=100.0, hashes=tuple(range(1, 101)))
    pool = _warm_and_cold(running=0.3, blocks=4)  # 64 cached tokens < affinity_min_tokens
    assert Slack().placements(c, pool, 0.0)[1].finish == pytest.approx(0.3 + 1.936)
    assert make_dispatcher("slack").choose(c, pool, 0.0) == "cold"
    assert make_dispatcher("slack", affinity_min_tokens=64).choose(c, pool, 0.0) == "warm"


def test_slack_skips_unavailable_endpoints() -> None:
    pool = [ep("down", rate=10**6, available=False), ep("up", rate=10)]
    assert make_dispatcher("slack").choose(call(), pool, 0.0) == "up"


# --- stealing ------------------------------------------------------------------------------

def test_steal_takes_the_most_urgent_call_that_gains() -> None:
    first, second = call(prompt=1000, deadline=10.0), call(prompt=1000, deadline=20.0)
    busy = ep("busy", running=(5.0,), queued=(first, second))
    idle = ep("idle")
    assert pick_steal(idle, [busy, idle], now=0.0) == ("busy", first.call_id)
    assert make_dispatcher("slack").steal(idle, [busy], 0.0) == ("busy", first.call_id)


def test_steal_skips_calls_that_would_not_finish_sooner() -> None:
    big = call(prompt=10_000, deadline=10.0)   # busy: 1 s after 5 s wait = 6; idle: 10 s
    small = call(prompt=1_000, deadline=20.0)  # busy: finishes at 6.1; idle: 1 s
    busy = ep("busy", rate=10_000, running=(5.0,), queued=(big, small))
    assert pick_steal(ep("idle", rate=1000), [busy], 0.0) == ("busy", small.call_id)


def test_steal_needs_a_free_idle_endpoint_and_a_real_gain() -> None:
    c = call(prompt=1000, deadline=10.0)
    busy = ep("busy", running=(5.0,), queued=(c,))
    assert pick_steal(ep("idle", running=(1.0,)), [busy], 0.0) is None          # no free slot
    assert pick_steal(ep("idle", queued=(call(),)), [busy], 0.0) is None        # has a queue
    assert pick_steal(ep("idle", available=False), [busy], 0.0) is None
    almost = ep("busy", running=(0.01,), queued=(c,))                           # gain 0.01 s
    assert pick_steal(ep("idle"), [almost], 0.0) is None
    assert pick_steal(ep("idle"), [almost], 0.0, min_gain_s=0.0) == ("busy", c.call_id)
    assert pick_steal(ep("idle"), [ep("other")], 0.0) is None                   # nothing queued


def test_steal_rescues_calls_queued_at_an_unavailable_endpoint() -> None:
    c = call(prompt=1000)
    dead = ep("dead", rate=10**6, queued=(c,), available=False)
    assert pick_steal(ep("idle", rate=1), [dead], 0.0) == ("dead", c.call_id)


def test_steal_follows_the_given_discipline() -> None:
    old = call(prompt=1000, at=0.0)                 # no deadline, but first in
    tight = call(prompt=1000, deadline=10.0, at=5.0)
    busy = ep("busy", running=(5.0,), queued=(tight, old))
    assert pick_steal(ep("idle"), [busy], 5.0) == ("busy", tight.call_id)
    assert pick_steal(ep("idle"), [busy], 5.0, discipline=Discipline("fcfs")) == \
        ("busy", old.call_id)


# --- views and helpers ---------------------------------------------------------------------

def test_endpoint_view_fills_and_checks_queued_service() -> None:
    e = ep("e", rate=100, slots=3, running=(2.0,), queued=(call(prompt=300), call(prompt=100)))
    assert e.queued_service_s == pytest.approx((3.0, 1.0))
    assert e.outstanding_work_s == pytest.approx(6.0)
    assert expected_batch(e) == 3
    with pytest.raises(ValueError, match="1 service times for 2 queued calls"):
        EndpointView("e", 1, (), (call(), call()), fixed(1.0), queued_service_s=(1.0,))
    with pytest.raises(ValueError, match="slots"):
        EndpointView("e", 0, (), (), fixed(1.0))
    with pytest.raises(ValueError, match="output_tokens"):
        CallView(1, "q", "k", 10, 0, None, 0.0, 0, 0.0, ())


def test_predicted_service_counts_cache_and_batch() -> None:
    index = PrefixIndex(capacity_blocks=10)
    index.add((7, 8))
    e = ep("e", rate=1000, slots=4, prefixes=index)
    assert predicted_service_s(call(prompt=100, hashes=(7, 8, 9)), e) == pytest.approx(0.068)
    real = ServicePredictor("A100", "llama-3.1-8b")
    busy = EndpointView("r", 8, (1.0,) * 7, (), real)
    c = call(prompt=500)
    assert predicted_service_s(c, busy) > predicted_service_s(c, busy, batch=1)
    assert not math.isclose(predicted_service_s(c, busy), predicted_service_s(c, busy, batch=1))


def test_slack_knobs_are_typed() -> None:
    assert SlackKnobs().affinity_max_delay_s == 0.5
    with pytest.raises(ConfigError):
        make_dispatcher("slack", steal_min_gain_s=-1.0)


def test_slack_counts_decode_slowed_by_other_prompts_prefill() -> None:
    """A long-output call decodes one token per iteration, and an iteration that carries another
    prompt's prefill chunk takes that chunk's time: a GPU busy prefilling is a poor place to
    decode, however fast it is alone. The measured prefill load is a fraction of *time*: half
    the time in 1 s chunks (one token each), half in 0.01 s steps, is 50.5 tokens a second."""
    decoder = ServicePredictor(None, None, prior=Prior(request_overhead_s=0.0, prefill_tokens_per_s=1000.0,
                                                       tpot_s=0.01, batch_slowdown=0.0))
    long_output = CallView(call_id=next(_ids), query_id="q", kind="generate", prompt_tokens=100,
                           output_tokens=501, deadline=None, remaining_work_s=0.0, priority=0,
                           enqueued_at=0.0, prefix_hashes=())
    busy = EndpointView("busy", 4, (), (), decoder, prefill_load=0.5)
    quiet = EndpointView("quiet", 4, (), (), decoder)
    slack = Slack(SlackKnobs(chunk_tokens=1000))
    by_name = {p.endpoint: p for p in slack.placements(long_output, [busy, quiet], 0.0)}
    alone = 0.1 + 500 * 0.01
    assert by_name["quiet"].finish == pytest.approx(alone)
    assert by_name["busy"].finish == pytest.approx(0.1 + 500 / 50.5)  # about twice as long
    assert slack.choose(long_output, [busy, quiet], 0.0) == "quiet"
    off = Slack(SlackKnobs(chunk_tokens=1000, interference=0.0))
    assert off.placements(long_output, [busy], 0.0)[0].finish == pytest.approx(alone)
    # an endpoint computing short prompts interleaves short chunks: 250 tokens, 0.25 s each
    short_prompts = EndpointView("short", 4, (), (), decoder, prefill_load=0.5, typical_prefill_tokens=250)
    assert slack.placements(long_output, [short_prompts], 0.0)[0].finish == pytest.approx(0.1 + 500 / 52)


# --- ties ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["least-busy", "hexgen", "slack"])
def test_ties_between_idle_twins_are_taken_in_turn(name: str) -> None:
    """Identical idle endpoints: every policy spreads successive calls over all of them (the
    first-listed one used to take every tie, so only its prefix cache ever warmed)."""
    d = make_dispatcher(name)
    twins = [ep(n, slots=4) for n in "abc"]
    assert [d.choose(call(), twins, 0.0) for _ in range(6)] == ["a", "b", "c"] * 2


def test_slack_near_ties_rotate_within_its_tolerance_but_a_clear_winner_wins() -> None:
    d = Slack(SlackKnobs(tie_tolerance=0.01))
    near = [ep("a", rate=1000), ep("b", rate=1005)]       # 0.5% apart: a tie
    assert {d.choose(call(), near, 0.0) for _ in range(4)} == {"a", "b"}
    apart = [ep("a", rate=1000), ep("b", rate=1100)]      # 10% apart: b, always
    assert {d.choose(call(), apart, 0.0) for _ in range(4)} == {"b"}
    exact = Slack()                                       # the default: exact ties only
    assert {exact.choose(call(), near, 0.0) for _ in range(4)} == {"b"}


def test_hexgen_scores_within_one_percent_tie() -> None:
    d = make_dispatcher("hexgen")
    near = [ep("a", rate=1000), ep("b", rate=1005)]
    assert [d.choose(call(), near, 0.0) for _ in range(4)] == ["a", "b", "a", "b"]
    apart = [ep("a", rate=1000), ep("b", rate=1100)]
    assert {d.choose(call(), apart, 0.0) for _ in range(4)} == {"b"}


def test_slack_ties_prefer_a_cached_prefix_before_taking_turns() -> None:
    warm = PrefixIndex(100)
    warm.add((1, 2))   # 32 tokens: too short for affinity, still a cache hit
    twins = [ep("a"), ep("b", prefixes=warm)]
    d = Slack()
    assert [d.choose(call(prompt=1000, hashes=(1, 2)), twins, 0.0) for _ in range(3)] == ["b"] * 3


def _positions(ahead_behind: tuple[Sequence[int], Sequence[int]]) -> tuple[list[int], list[int]]:
    """Slack._ahead's answer as lists (a prefix comes back as a range)."""
    return list(ahead_behind[0]), list(ahead_behind[1])


def test_slack_finds_the_calls_ahead_by_bisection_only_in_the_queues_own_order() -> None:
    """A view that says its queue is sorted by slack's key at ``now`` (the local queue's own
    snapshot) gets the same placements as a scan of every queued call; a view without that
    promise, or taken at another time, is scanned (its order may be anything)."""
    import random

    from fleetcall.router.queue import LocalQueue

    rng = random.Random(7)
    slack = Slack(SlackKnobs(prefill_slots=1))
    queue = LocalQueue.of(slack.discipline)
    for i in range(300):
        at = rng.uniform(0.0, 50.0)
        deadline = None if i % 7 == 0 else at + rng.uniform(1.0, 200.0)
        queue.push(call(rng.randrange(10, 5000), deadline, remaining=rng.uniform(0.0, 60.0),
                        at=at), rng.uniform(0.1, 30.0))
    now = 60.0  # some calls are hopeless by now (demoted in the queue's order)
    queued, services = queue.snapshot(now)
    for promise in ((slack.discipline, now), None):
        view = EndpointView("e", 4, (3.0, 9.0), queued, fixed(900.0), None, True, services,
                            queued_order=promise)
        plain = EndpointView("e", 4, (3.0, 9.0), queued, fixed(900.0), None, True, services)
        for _ in range(60):
            at = rng.uniform(55.0, 60.0)
            new = call(rng.randrange(10, 5000), rng.choice([None, at + rng.uniform(0.0, 300.0)]),
                       remaining=rng.uniform(0.0, 60.0), at=at)
            assert _positions(slack._ahead(new, 2.0, view, now)) == \
                _positions(slack._ahead(new, 2.0, plain, now))
            assert slack.placements(new, [view], now) == slack.placements(new, [plain], now)
    # a promise for another time is not taken: the order differs once calls turn hopeless
    shuffled = tuple(reversed(queued)), tuple(reversed(services))
    stale = EndpointView("e", 4, (), *shuffled[:1], fixed(900.0), None, True, shuffled[1],
                         queued_order=(slack.discipline, now - 1.0))
    scan = EndpointView("e", 4, (), shuffled[0], fixed(900.0), None, True, shuffled[1])
    new = call(500, 80.0, at=59.0)
    assert _positions(slack._ahead(new, 2.0, stale, now)) == \
        _positions(slack._ahead(new, 2.0, scan, now))



def _paced(rate: float) -> ServicePredictor:
    return ServicePredictor(None, None, prior=Prior(request_overhead_s=0.0,
                                                    prefill_tokens_per_s=rate, tpot_s=0.02,
                                                    batch_slowdown=0.0))


def _beside_a_decode(slow_rate: float, latest_end: float = math.inf) -> list[EndpointView]:
    """A fast GPU (2,000 prompt tokens/s, 20 ms a token) decoding another query's call with 5 s
    (250 tokens) left, which must end by ``latest_end``; an idle slower GPU."""
    fast = EndpointView("fast", 2, (5.0,), (), _paced(2000.0), running_queries=("other",),
                        running_latest_end=(latest_end,))
    return [fast, EndpointView("slow", 2, (), (), _paced(slow_rate))]


def test_slack_counts_every_token_a_long_prompt_holds_up() -> None:
    # A 100k-token prompt (49 chunks of 2,048) prefills on the fast GPU in 50 s: each of the
    # running call's next 49 tokens waits a whole ~1 s chunk, so it ends ~49 s later, not 5 s
    # later (the most its remaining seconds could lose, which is what slack counted). The idle
    # slower GPU (1,200 tokens/s) costs the prompt 34 s more and delays no one.
    # Issue 12: on a Mooncake-format trace a 100k-token prompt joined an A100 where a call had
    # 17 s and ~600 tokens left; that call went from 32 to 93 s, into the p95 tail.
    d = make_dispatcher("slack")
    prompt = call(prompt=100_000, deadline=1000.0, query="q")
    assert d.choose(prompt, _beside_a_decode(1200.0), now=0.0) == "slow"
    fast = Slack().placements(prompt, _beside_a_decode(1200.0), 0.0)[0]
    assert fast.cost - fast.finish == pytest.approx(49 * (50.0 / 49 - 0.02), rel=1e-3)
    # a prompt of one chunk holds each running call up one chunk, not more
    short = call(prompt=1000, deadline=1000.0)
    fast = Slack().placements(short, _beside_a_decode(1200.0), 0.0)[0]
    assert fast.cost - fast.finish == pytest.approx(0.5 - 0.02, abs=1e-3)
    # a running call with 2 tokens left loses 2 chunks, not 49
    two = [EndpointView("fast", 2, (0.04,), (), _paced(2000.0), running_queries=("other",))]
    fast = Slack().placements(prompt, two, 0.0)[0]
    assert fast.cost - fast.finish == pytest.approx(2 * (50.0 / 49 - 0.02), rel=1e-3)


def test_slack_counts_the_deadline_a_long_prompt_makes_a_running_call_miss() -> None:
    # As above, the slower GPU costs the prompt 61 s more (900 tokens/s): more than the 49 s
    # it holds the running call up. But with 1 s to spare, that call ends 48 s past its
    # deadline: a second past a deadline counts again. Issue 12: a 112k-token Mooncake prompt
    # took an A100 beside a call with 260 tokens left, which went from 16 to 92 s, past its
    # deadline, while an idle L40S kept both in time.
    d = make_dispatcher("slack")
    prompt = call(prompt=100_000, deadline=1000.0, query="q")
    assert d.choose(prompt, _beside_a_decode(900.0, 6.0), now=0.0) == "slow"   # it would miss
    assert d.choose(prompt, _beside_a_decode(900.0, 200.0), now=0.0) == "fast"  # it has room
    assert d.choose(prompt, _beside_a_decode(900.0), now=0.0) == "fast"  # no deadline: seconds
    # a short prompt (one chunk) delays it one chunk at most, which its second to spare holds:
    # its deadline adds nothing to the cost
    short = call(prompt=1000, deadline=1000.0)
    assert ([p.cost for p in Slack().placements(short, _beside_a_decode(900.0, 6.0), 0.0)]
            == [p.cost for p in Slack().placements(short, _beside_a_decode(900.0), 0.0)])
