"""Local queues: FCFS, urgency with aging and hopeless demotion, HEXGEN's order, and the
property that pop follows the documented key."""

from __future__ import annotations

import doctest

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fleetcall.router.queue as queue_module
from fleetcall.router.views import CallView
from fleetcall.router.queue import Discipline, LocalQueue

_ids = iter(range(10**9))


def call(deadline: float | None = None, *, at: float = 0.0, remaining: float = 0.0,
         priority: int = 0, call_id: int | None = None) -> CallView:
    return CallView(call_id=next(_ids) if call_id is None else call_id, query_id="q",
                    kind="planner", prompt_tokens=100, output_tokens=10, deadline=deadline,
                    remaining_work_s=remaining, priority=priority, enqueued_at=at,
                    prefix_hashes=())


def drain(q: LocalQueue, now: float) -> list[int]:
    out = []
    while (c := q.pop(now)) is not None:
        out.append(c.call_id)
    return out


def test_doctests() -> None:
    assert doctest.testmod(queue_module).failed == 0


def test_fcfs_ignores_deadlines() -> None:
    q = LocalQueue("fcfs")
    late, early, urgent = call(None, at=2.0), call(100.0, at=1.0), call(3.0, at=3.0)
    for c in (late, early, urgent):
        q.push(c, 1.0)
    assert drain(q, now=50.0) == [early.call_id, late.call_id, urgent.call_id]


def test_urgency_serves_least_slack_first() -> None:
    q = LocalQueue("urgency", aging_per_s=0.0)
    a = call(30.0)                    # slack 30 - 1 = 29
    b = call(40.0, remaining=20.0)    # slack 40 - 1 - 20 = 19: its query has more work left
    c = call(25.0)                    # pushed with a long service: slack 25 - 10 = 15
    q.push(a, 1.0)
    q.push(b, 1.0)
    q.push(c, 10.0)
    assert [x.call_id for x in q.snapshot(0.0)[0]] == [c.call_id, b.call_id, a.call_id]
    assert q.snapshot(0.0)[1] == (10.0, 1.0, 1.0)
    assert [x.call_id for x in q] == [c.call_id, b.call_id, a.call_id]
    assert drain(q, now=0.0) == [c.call_id, b.call_id, a.call_id]


def test_no_deadline_calls_come_last_by_priority_then_fcfs() -> None:
    q = LocalQueue("urgency")
    best_effort_old = call(None, at=0.0, priority=1)
    best_effort_high = call(None, at=5.0, priority=0)
    best_effort_new = call(None, at=6.0, priority=1)
    timed = call(1000.0, at=9.0)
    for c in (best_effort_old, best_effort_high, best_effort_new, timed):
        q.push(c, 1.0)
    assert drain(q, now=10.0) == [timed.call_id, best_effort_high.call_id,
                                  best_effort_old.call_id, best_effort_new.call_id]


def test_no_deadline_slack_lets_best_effort_calls_age_in() -> None:
    q = LocalQueue("urgency", aging_per_s=1.0, no_deadline_slack_s=10.0)
    old = call(None, at=0.0)          # virtual slack 10 at t=0
    fresh = call(40.0, at=30.0)       # slack 9 at t=30, but 30 s younger
    q.push(old, 1.0)
    q.push(fresh, 1.0)
    assert drain(q, now=30.0) == [old.call_id, fresh.call_id]


def test_aging_lets_a_long_waiting_call_overtake() -> None:
    def order(aging: float) -> list[int]:
        q = LocalQueue("urgency", aging_per_s=aging, demote_hopeless=False)
        q.push(call(100.0, at=0.0, call_id=1), 1.0)     # relaxed, waiting since t=0
        q.push(call(60.0, at=50.0, call_id=2), 1.0)     # tighter, arrived at t=50
        return drain(q, now=50.0)

    assert order(0.0) == [2, 1]   # pure slack: 59 < 99
    assert order(0.5) == [2, 1]   # 99 + 0 vs 59 + 25: still tighter first
    assert order(1.0) == [1, 2]   # 99 + 0 vs 59 + 50: the old call overtakes


def test_hopeless_calls_are_demoted_at_pop_time_never_dropped() -> None:
    q = LocalQueue("urgency", aging_per_s=0.0)
    doomed = call(10.0, remaining=5.0, call_id=1)   # latest start 10 - 1 - 5 = 4
    fine = call(20.0, call_id=2)                    # latest start 19
    q.push(doomed, 1.0)
    q.push(fine, 1.0)
    assert q.peek(now=3.0) is doomed                # can still make it: most urgent
    assert q.peek(now=5.0) is fine                  # slack < 0: behind those that can
    assert [c.call_id for c in q] == [2, 1]
    assert drain(q, now=5.0) == [2, 1]


def test_demotion_can_be_turned_off() -> None:
    q = LocalQueue("urgency", aging_per_s=0.0, demote_hopeless=False)
    q.push(call(10.0, remaining=5.0, call_id=1), 1.0)
    q.push(call(20.0, call_id=2), 1.0)
    assert drain(q, now=5.0) == [1, 2]


def test_hopeless_calls_rank_among_themselves_and_before_best_effort() -> None:
    q = LocalQueue("urgency", aging_per_s=0.0)
    q.push(call(None, call_id=1), 1.0)
    q.push(call(8.0, call_id=2), 1.0)     # hopeless at 10, latest start 7
    q.push(call(5.0, call_id=3), 1.0)     # hopeless at 10, latest start 4
    q.push(call(50.0, call_id=4), 1.0)
    assert drain(q, now=10.0) == [4, 3, 2, 1]
    q.push(call(3.0, call_id=5), 1.0)     # pushed already hopeless (the queue has seen t=10)
    q.push(call(60.0, call_id=6), 1.0)
    assert drain(q, now=10.0) == [6, 5]


def test_remove_peek_len_contains_and_service() -> None:
    q = LocalQueue("urgency")
    a, b, c = call(10.0), call(20.0), call(30.0)
    for x, s in ((a, 1.0), (b, 2.0), (c, 3.0)):
        q.push(x, s)
    with pytest.raises(ValueError, match="already queued"):
        q.push(a, 1.0)
    assert len(q) == 3 and b.call_id in q and q.service_s(b.call_id) == 2.0
    assert q.remove(a.call_id) and not q.remove(a.call_id)
    assert q.peek(0.0) is b and len(q) == 2
    q.push(call(9.0, remaining=100.0, call_id=77), 1.0)  # hopeless right away at t=1
    assert q.remove(77)
    got = q.pop_entry(1.0)
    assert got is not None and got.call is b and got.service_s == 2.0
    assert drain(q, 1.0) == [c.call_id]
    assert q.pop(1.0) is None and q.peek(1.0) is None and len(q) == 0
    with pytest.raises(KeyError):
        q.service_s(b.call_id)


def test_hexgen_order_follows_the_papers_stage_budget() -> None:
    q = LocalQueue("hexgen", aging_per_s=0.0, demote_hopeless=False)
    # budget = (deadline - enqueued) * s / (s + remaining); urgency = elapsed + s - budget
    a = call(100.0, at=0.0, remaining=9.0, call_id=1)    # budget 10: key 0 + 10 - 1 = 9
    b = call(30.0, at=10.0, remaining=0.0, call_id=2)    # budget 20: key 10 + 20 - 1 = 29
    c = call(50.0, at=0.0, remaining=49.0, call_id=3)    # budget 1: key 0 + 1 - 1 = 0
    for x in (a, b, c):
        q.push(x, 1.0)
    assert drain(q, now=10.0) == [3, 1, 2]
    disc = Discipline("hexgen", aging_per_s=0.0)
    assert disc.static_key(b, 1.0) == (0, 29.0, 0)
    # the slack order would differ: b has the least slack (30 - 10 - 1 = 19 vs 40, 0)...
    slack_order = Discipline("urgency", aging_per_s=0.0)
    assert slack_order.static_key(b, 1.0) < slack_order.static_key(a, 1.0)


def test_compaction_keeps_heaps_small_and_order_right() -> None:
    q = LocalQueue("urgency", aging_per_s=0.0)
    calls = [call(float(1000 - i), call_id=i) for i in range(300)]
    for c in calls:
        q.push(c, 1.0)
    for c in calls[:250]:
        assert q.remove(c.call_id)
    assert len(q._live) + len(q._by_latest) <= 3 * len(q) + 32 + 2
    assert drain(q, now=0.0) == list(range(299, 249, -1))


def test_discipline_validates() -> None:
    with pytest.raises(ValueError, match="unknown queue order"):
        LocalQueue("lifo")  # type: ignore[arg-type]  # the error under test
    with pytest.raises(ValueError):
        Discipline("urgency", aging_per_s=-1.0)
    assert LocalQueue.of(Discipline("hexgen", 0.3, False)).discipline == \
        Discipline("hexgen", 0.3, False)


# --- property: pop follows the documented key --------------------------------------------

_orders = st.sampled_from(["fcfs", "urgency", "hexgen"])
_times = st.floats(0.0, 100.0, allow_nan=False).map(lambda x: round(x, 1))
_calls = st.tuples(
    st.one_of(st.none(), _times),                 # deadline
    _times,                                       # enqueued_at
    st.floats(0.0, 20.0).map(lambda x: round(x, 1)),  # remaining work
    st.integers(0, 2),                            # priority
    st.floats(0.1, 10.0).map(lambda x: round(x, 1)),  # service
)
_ops = st.lists(st.one_of(
    st.tuples(st.just("push"), _calls),
    st.tuples(st.just("pop"), st.floats(0.0, 10.0).map(lambda x: round(x, 1))),
    st.tuples(st.just("remove"), st.integers(0, 40)),
), max_size=60)


@settings(max_examples=200, deadline=None)
@given(order=_orders, aging=st.sampled_from([0.0, 0.1, 1.0]), demote=st.booleans(),
       nds=st.sampled_from([None, 5.0]), ops=_ops)
def test_pop_order_is_the_documented_key(order: str, aging: float, demote: bool,
                                         nds: float | None, ops: list) -> None:
    q = LocalQueue(order, aging_per_s=aging, demote_hopeless=demote,  # type: ignore[arg-type]
                   no_deadline_slack_s=nds)
    model: dict[int, tuple[CallView, float, int]] = {}  # call_id -> (call, service, push index)
    now, pushed = 0.0, 0
    for op, arg in ops:
        if op == "push":
            deadline, at, remaining, priority, service = arg
            c = CallView(pushed, "q", "k", 10, 2, deadline, remaining, priority, at, ())
            q.push(c, service)
            model[pushed] = (c, service, pushed)
            pushed += 1
        elif op == "remove":
            assert q.remove(arg) == (model.pop(arg, None) is not None)
        else:
            now += arg  # time only moves forward
            got = q.pop(now)
            if not model:
                assert got is None
                continue
            want = min(model.values(), key=lambda m: (q.key(m[0], m[1], now), m[2]))
            assert got is not None and got.call_id == want[0].call_id
            del model[got.call_id]
        assert len(q) == len(model)
        # the serve order the queue keeps (and reuses while unchanged) is the sorted key
        expected = sorted(model.values(), key=lambda m: (q.key(m[0], m[1], now), m[2]))
        assert q.snapshot(now) == (tuple(m[0] for m in expected), tuple(m[1] for m in expected))
        assert q.ordered() == [(m[0], m[1]) for m in expected]
