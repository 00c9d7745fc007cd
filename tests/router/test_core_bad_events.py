"""The scheduler core given events no correct shell sends: each is refused with a clear error
before it changes anything, or handled, and the invariants hold afterwards.

Events for calls that are not live (never submitted, already ended, queued but not running),
duplicate endings, endpoint names that collide, times that are NaN, infinite or go backwards,
a NaN cooldown, and measurements no clock could give.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from fleetcall.errors import ConfigError
from fleetcall.router.config import RetryConfig
from fleetcall.router.core import Grant, Outcome, SchedulerCore
from fleetcall.router.faults import Failure, FaultKind
from fleetcall.router.state import EndpointSpec
from fleetcall.router.views import CallView

BOOM = Failure(FaultKind.SERVER_ERROR, "boom", 500)


def _core(policy: str = "rr-fcfs", **endpoints: int) -> SchedulerCore:
    core = SchedulerCore(policy, retry=RetryConfig(backoff_s=0.0))
    for name, slots in (endpoints or {"a": 1, "b": 1}).items():
        core.add_endpoint(EndpointSpec(name, slots, "A100-80G", "llama-3.2-1b",
                                       twin_key="A100"), 0.0)
    return core


def _view(call_id: int, now: float = 0.0, **fields: Any) -> CallView:
    values: dict[str, Any] = dict(call_id=call_id, query_id=f"q{call_id}", kind="planner",
                                  prompt_tokens=200, output_tokens=40, deadline=None,
                                  remaining_work_s=0.0, priority=0, enqueued_at=now,
                                  prefix_hashes=())
    values.update(fields)
    return CallView(**values)


def _state(core: SchedulerCore, now: float) -> Any:
    core.check(now)
    return (len(core), core.next_wakeup(),
            [(s.name, s.in_flight, s.queued, s.breaker, s.cooling_s) for s in core.snapshot(now)])


EVENTS = {
    "started": lambda core, i, t: core.started(i, t),
    "first_token": lambda core, i, t: core.first_token(i, t),
    "finished": lambda core, i, t: core.finished(i, t, Outcome()),
    "failed": lambda core, i, t: core.failed(i, t, BOOM),
    "cancelled": lambda core, i, t: core.cancelled(i, t),
}


@pytest.mark.parametrize("event", list(EVENTS))
@pytest.mark.parametrize("which", ["never submitted", "already finished", "already cancelled",
                                   "queued, not running"])
def test_an_event_for_a_call_that_holds_no_slot_is_a_key_error_and_changes_nothing(
        event: str, which: str) -> None:
    core = _core(a=1)
    running = core.submit(_view(1), 0.0)[0].call_id
    queued = _view(2)
    core.submit(queued, 0.0)
    target = {"never submitted": 99, "already finished": running,
              "already cancelled": running, "queued, not running": 2}[which]
    if which == "already finished":
        core.finished(running, 0.5, Outcome())
    elif which == "already cancelled":
        core.cancelled(running, 0.5)
    before = _state(core, 0.5)
    if event == "cancelled" and which == "queued, not running":
        pytest.skip("cancelling a queued call is a real event")
    with pytest.raises(KeyError, match="not live|holds no slot"):
        EVENTS[event](core, target, 0.5)
    assert _state(core, 0.5) == before


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, "backwards"])
@pytest.mark.parametrize("event", ["submit", "advance", "finished", "failed", "cancelled",
                                   "add_endpoint", "remove_endpoint", "rate_limited", "healthy"])
def test_a_time_that_is_not_a_finite_loop_time_after_the_last_is_refused(event: str,
                                                                         bad: Any) -> None:
    """Before: a NaN ``now`` failed a submitted call at once while its endpoint was free
    ("a: available"); a time going backwards granted a slot with a negative queue_s."""
    core = _core(a=1, b=1)
    core.submit(_view(1), 5.0)
    core.submit(_view(2), 10.0)
    when = 3.0 if bad == "backwards" else bad
    before = _state(core, 10.0)
    calls = {
        "submit": lambda: core.submit(_view(3, 10.0), when),
        "advance": lambda: core.advance(when),
        "finished": lambda: core.finished(1, when, Outcome(0.1, 0.01, 1.0, 10)),
        "failed": lambda: core.failed(1, when, BOOM),
        "cancelled": lambda: core.cancelled(1, when),
        "add_endpoint": lambda: core.add_endpoint(EndpointSpec("c", 1), when),
        "remove_endpoint": lambda: core.remove_endpoint("b", when),
        "rate_limited": lambda: core.rate_limited("a", when, 20.0),
        "healthy": lambda: core.healthy("a", when),
    }
    with pytest.raises(ValueError, match="finite loop time, never going backwards"):
        calls[event]()
    assert _state(core, 10.0) == before
    assert core.endpoints == ["a", "b"] and core.where(1) == ("running", "a")


def test_a_nan_cooldown_is_refused_and_the_endpoint_stays_usable() -> None:
    """Before: the endpoint was marked down until NaN, which no wakeup ever reaches."""
    core = _core(a=1)
    with pytest.raises(ValueError, match="NaN"):
        core.rate_limited("a", 1.0, math.nan)
    assert core.submit(_view(1, 1.0), 1.0) == [Grant(1, "a", 1, 0.0)]
    core.check(1.0)


@pytest.mark.parametrize("field,value", [("deadline", math.nan),
                                         ("remaining_work_s", math.nan),
                                         ("remaining_work_s", -1.0)])
def test_a_call_view_with_a_nan_deadline_or_work_is_a_value_error(field: str,
                                                                  value: float) -> None:
    with pytest.raises(ValueError, match=f"call 7: .*{field.split('_')[0]}"):
        _view(7, **{field: value})


@pytest.mark.parametrize("policy", ["rr-fcfs", "least-busy", "hexgen", "slack"])
def test_measurements_no_clock_could_give_are_ignored_not_learned(policy: str) -> None:
    """Before: a NaN total_s made the core's mean call time NaN for good (the pool turns a
    query's remaining calls into work with it), and a negative count taught the output
    lengths a negative mean."""
    core = _core(policy, a=2, b=2)
    core.submit(_view(1), 0.0)
    before = (core.mean_call_s, core.output_lengths.expect("planner"))
    core.finished(1, 1.0, Outcome(ttft_s=math.nan, tpot_s=math.inf, total_s=-2.0,
                                  completion_tokens=-40, cached_tokens=-5))
    after = (core.mean_call_s, core.output_lengths.expect("planner"))
    assert after == before
    assert all(math.isfinite(core.endpoint(n).predictor.predict(200, 40).total_s) for n in "ab")
    assert core.submit(_view(2, 1.0), 1.0)[0].endpoint in ("a", "b")
    core.check(1.0)


def test_endpoint_names_collide_with_a_clear_error_even_while_retiring() -> None:
    core = _core(a=1)
    core.submit(_view(1), 0.0)
    with pytest.raises(ConfigError, match="already has an endpoint named 'a'"):
        core.add_endpoint(EndpointSpec("a", 2), 0.0)
    core.remove_endpoint("a", 1.0)        # call 1 still runs there: 'a' is retiring
    with pytest.raises(ConfigError, match="'a'.*still finishing"):
        core.add_endpoint(EndpointSpec("a", 2), 1.0)
    with pytest.raises(ConfigError, match="no endpoint named 'a'"):
        core.remove_endpoint("a", 1.0)
    core.finished(1, 2.0, Outcome())
    core.add_endpoint(EndpointSpec("a", 2), 2.0)   # retired: the name is free again
    assert core.endpoints == ["a"]
    core.check(2.0)
