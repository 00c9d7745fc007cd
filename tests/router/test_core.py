"""The scheduler core on hand-built events: no loop, no I/O; invariants checked after each event.

Issue 10's failures over the core (the same inputs as tests/router/test_pool_faults.py over the
real pool), and the fault-by-kind rules.
"""

from __future__ import annotations

import pickle
from typing import Any

import pytest

from fleetcall.router.config import BreakerConfig, RetryConfig
from fleetcall.router.core import Grant, Outcome, Retired, SchedulerCore
from fleetcall.router.faults import (
    AttemptsExhausted,
    Fail,
    Failure,
    FailWhy,
    FaultKind,
    NoEndpointError,
    OverloadedError,
)
from fleetcall.router.state import EndpointSpec
from fleetcall.router.views import CallView

OK = Outcome(ttft_s=0.1, tpot_s=0.01, total_s=0.5, completion_tokens=40)
RATE_LIMITED = Failure(FaultKind.RATE_LIMITED, "slow down", 429, 1.0)
SERVER_ERROR = Failure(FaultKind.SERVER_ERROR, "boom", 500)
CONNECTION = Failure(FaultKind.CONNECTION, "ConnectError: refused")


class Harness:
    """A core, a clock, and every action recorded; invariants after every event."""

    def __init__(self, endpoints: dict[str, int], policy: str = "rr-fcfs", **kwargs: Any) -> None:
        kwargs.setdefault("retry", RetryConfig(backoff_s=0.0))
        self.core = SchedulerCore(policy, kwargs.pop("options", None), **kwargs)
        self.now = 0.0
        self.ids = 0
        self.grants: dict[int, list[str]] = {}   # call id -> endpoints granted, in order
        self.fails: dict[int, Fail] = {}
        self.retired: list[str] = []
        for name, slots in endpoints.items():
            self.add(name, slots)

    def add(self, name: str, slots: int, gpu: str = "A100-80G") -> None:
        self.apply(self.core.add_endpoint(
            EndpointSpec(name, slots, gpu, "llama-3.2-1b", twin_key=gpu), self.now))

    def apply(self, actions: list[Any]) -> list[Any]:
        for action in actions:
            if isinstance(action, Grant):
                self.grants.setdefault(action.call_id, []).append(action.endpoint)
            elif isinstance(action, Fail):
                assert action.call_id not in self.fails
                self.fails[action.call_id] = action
            else:
                assert isinstance(action, Retired)
                self.retired.append(action.endpoint)
        self.core.check(self.now)
        return actions

    def submit(self, *, deadline: float | None = None, query: str | None = None,
               prompt: int = 200) -> int:
        self.ids += 1
        call = CallView(self.ids, query or f"q{self.ids}", "planner", prompt, 40,
                        None if deadline is None else self.now + deadline, 0.0, 0, self.now, ())
        self.apply(self.core.submit(call, self.now))
        return self.ids

    def at(self, now: float) -> None:
        self.now = now
        self.apply(self.core.advance(now))

    def finish(self, call_id: int) -> None:
        self.apply(self.core.finished(call_id, self.now, OK))

    def fail(self, call_id: int, failure: Failure) -> None:
        self.apply(self.core.failed(call_id, self.now, failure))

    def cancel(self, *call_ids: int) -> None:
        for call_id in call_ids:
            self.apply(self.core.cancelled(call_id, self.now))

    def where(self, call_id: int) -> Any:
        return self.core.where(call_id)


# ---- slots under cancellation --------------------------------------------------------------------


def test_a_running_and_a_queued_call_cancelled_together_leave_the_slot_free() -> None:
    h = Harness({"a": 1})
    running, queued = h.submit(), h.submit()
    assert h.where(running) == ("running", "a") and h.where(queued) == ("queued", "a")
    h.cancel(running, queued)   # the same tick (the slot passes to `queued`, then comes back)
    third = h.submit()
    assert h.where(third) == ("running", "a")
    assert len(h.core) == 1


def test_the_queued_call_cancelled_first_then_the_running_one() -> None:
    h = Harness({"a": 1})
    running, queued = h.submit(), h.submit()
    h.cancel(queued, running)
    assert h.where(h.submit()) == ("running", "a")


@pytest.mark.parametrize("policy", ["rr-fcfs", "least-busy", "hexgen", "slack"])
def test_cancelling_half_of_12_calls_over_3x2_slots_leaks_no_slot(policy: str) -> None:
    h = Harness({"a": 2, "b": 2, "c": 2}, policy,
                options={"prefill_slots": None} if policy == "slack" else None)
    calls = [h.submit() for _ in range(12)]
    h.cancel(*calls[::2])
    while len(h.core):
        h.finish(next(c for c in calls if (h.where(c) or ("",))[0] == "running"))
    assert all(not h.core.endpoint(n).running for n in "abc")
    fresh = [h.submit() for _ in range(6)]
    if policy != "slack":  # slack may queue one behind a busy twin until a steal (checked)
        assert sorted(h.where(c) for c in fresh) == sorted(("running", n) for n in "aabbcc")


# ---- rate limits are not faults ------------------------------------------------------------------


def test_rate_limits_neither_trip_the_breaker_nor_use_up_attempts() -> None:
    h = Harness({"a": 4}, breaker=BreakerConfig(failures=2, cooldown_s=10.0),
                retry=RetryConfig(max_attempts=1))
    call_id = h.submit()
    for _ in range(5):
        h.fail(call_id, RATE_LIMITED)                 # cools a down until now + 1
        assert h.where(call_id) == ("parked", None) and not h.fails
        h.at(h.now + 1.0)                             # the cooldown ends: sent again
        assert h.where(call_id) == ("running", "a")
    h.finish(call_id)
    snap = h.core.snapshot(h.now)[0]
    assert (snap.breaker, snap.rate_limited, snap.failures) == ("closed", 5, 0)


def test_a_rate_limited_call_goes_to_a_healthy_spare_at_once() -> None:
    h = Harness({"limited": 4, "spare": 4})
    call_id = h.submit()
    assert h.grants[call_id] == ["limited"]
    h.fail(call_id, Failure(FaultKind.RATE_LIMITED, "slow down", 429, 4.0))
    assert h.grants[call_id] == ["limited", "spare"]   # no sleep: same instant


def test_a_cooling_endpoint_gets_no_new_call_until_its_retry_after() -> None:
    h = Harness({"limited": 4, "spare": 4})
    first = h.submit()
    h.fail(first, Failure(FaultKind.RATE_LIMITED, "slow down", 429, 30.0))
    for t in range(1, 30):
        h.now = float(t)
        call_id = h.submit()
        assert h.grants[call_id] == ["spare"]
        h.finish(call_id)
    h.at(30.0)
    assert "limited" in {h.grants[h.submit()][-1] for _ in range(2)}


def test_a_later_retry_after_extends_the_cooldown_an_earlier_one_does_not_shorten_it() -> None:
    h = Harness({"a": 4})
    one, two = h.submit(), h.submit()
    h.fail(one, Failure(FaultKind.RATE_LIMITED, "", 429, 5.0))
    h.now = 1.0
    h.apply(h.core.failed(two, h.now, Failure(FaultKind.RATE_LIMITED, "", 503, 1.0)))
    assert h.core.next_wakeup() == 5.0
    h.apply(h.core.rate_limited("a", h.now, 8.0))
    assert h.core.next_wakeup() == 8.0
    h.at(7.9)
    assert h.where(one) == ("parked", None)
    h.at(8.0)
    assert h.where(one)[0] == "running" and h.where(two)[0] == "running"


def test_half_rate_limited_40_calls_all_served_with_and_without_a_spare() -> None:
    for endpoints in ({"limited": 8}, {"limited": 8, "spare": 8}):
        h = Harness(endpoints, "slack")
        calls = [h.submit() for _ in range(40)]
        flip = False
        for _ in range(1000):
            running = [c for c in calls if (h.where(c) or ("",))[0] == "running"]
            if not running:
                if not len(h.core):
                    break
                h.at(h.core.next_wakeup() or h.now)
                continue
            for c in running:
                if h.where(c) == ("running", "limited") and (flip := not flip):
                    h.fail(c, RATE_LIMITED)
                else:
                    h.first_token = h.core.first_token(c, h.now)
                    h.finish(c)
        assert not h.fails and len(h.core) == 0, endpoints


# ---- faults, breakers and parking ----------------------------------------------------------------


def test_a_retry_goes_elsewhere_at_once_and_backs_off_only_to_retry_the_same_endpoint() -> None:
    h = Harness({"a": 1, "b": 1}, retry=RetryConfig(backoff_s=2.0, max_attempts=3))
    call_id = h.submit()
    h.fail(call_id, SERVER_ERROR)
    assert h.grants[call_id] == ["a", "b"]           # elsewhere, at once
    h.fail(call_id, SERVER_ERROR)                      # both failed it: back off
    assert h.where(call_id) == ("parked", None)
    assert h.core.next_wakeup() == 2.0                 # a's backoff (2 s after its failure)
    h.at(2.0)
    assert h.grants[call_id] == ["a", "b", "a"]


def test_attempts_run_out_with_an_error_naming_each_endpoint_tried() -> None:
    h = Harness({"a": 1, "b": 1}, retry=RetryConfig(backoff_s=0.0, max_attempts=3))
    call_id = h.submit()
    h.fail(call_id, SERVER_ERROR)
    h.fail(call_id, CONNECTION)
    h.fail(call_id, SERVER_ERROR)
    fail = h.fails[call_id]
    assert fail.why is FailWhy.ATTEMPTS
    assert fail.message.startswith("LLM call failed at endpoint 'a' after 3 attempt(s): boom")
    assert dict(fail.reasons) == {"a": "HTTP 500: boom", "b": "ConnectError: refused"}
    assert isinstance(fail.error(), AttemptsExhausted)


@pytest.mark.parametrize("kind", [FaultKind.CLIENT_ERROR, FaultKind.BROKEN_STREAM])
def test_a_failure_that_cannot_be_retried_ends_the_call_at_once(kind: FaultKind) -> None:
    h = Harness({"a": 1, "b": 1}, retry=RetryConfig(max_attempts=5))
    call_id = h.submit()
    h.fail(call_id, Failure(kind, "no", 400 if kind is FaultKind.CLIENT_ERROR else None))
    assert h.fails[call_id].why is FailWhy.ATTEMPTS and h.grants[call_id] == ["a"]
    breaker_counts = h.core.endpoint("a").breaker.consecutive_failures
    assert breaker_counts == (1 if kind is FaultKind.BROKEN_STREAM else 0)


def test_an_open_breaker_moves_its_queue_elsewhere() -> None:
    h = Harness({"a": 1, "b": 4}, breaker=BreakerConfig(failures=1, cooldown_s=10.0))
    first = h.submit()
    queued = [h.submit() for _ in range(4)][1::2]  # rr: b, a, b, a -> two queued at a
    assert all(h.where(c) == ("queued", "a") for c in queued)
    h.fail(first, CONNECTION)
    assert all(h.where(c) == ("running", "b") for c in queued)
    assert not h.fails


def test_with_no_other_endpoint_queued_calls_wait_for_the_probe_then_run() -> None:
    h = Harness({"a": 1}, breaker=BreakerConfig(failures=1, cooldown_s=5.0))
    first, *waiting = (h.submit(deadline=30.0) for _ in range(4))
    h.fail(first, CONNECTION)
    assert all(h.where(c) == ("parked", None) for c in [first, *waiting]) and not h.fails
    h.at(5.0)                                        # the probe: exactly one call goes
    running = [c for c in [first, *waiting] if (h.where(c) or ("",))[0] == "running"]
    assert len(running) == 1
    h.finish(running[0])                             # the probe succeeded: breaker closed
    assert h.core.snapshot(h.now)[0].breaker == "closed"
    assert sum((h.where(c) or ("",))[0] == "running" for c in [first, *waiting]) == 1


def test_a_cancelled_probe_lets_the_next_call_probe_at_once() -> None:
    h = Harness({"a": 1}, breaker=BreakerConfig(failures=1, cooldown_s=5.0))
    first = h.submit()
    h.fail(first, CONNECTION)
    h.at(5.0)
    assert h.where(first) == ("running", "a")
    second = h.submit()
    assert h.where(second) == ("parked", None)
    h.cancel(first)
    assert h.where(second) == ("running", "a")


def test_a_call_fails_at_its_deadline_naming_each_endpoint_and_why() -> None:
    h = Harness({"A": 1, "B": 1}, breaker=BreakerConfig(failures=5, cooldown_s=60.0),
                retry=RetryConfig(max_attempts=10, backoff_s=0.0))
    warm = h.submit()
    h.fail(warm, Failure(FaultKind.RATE_LIMITED, "slow down", 429, 30.0))
    for _ in range(5):
        h.fail(warm, CONNECTION)
    late = h.submit(deadline=2.0)
    assert h.where(late) == ("parked", None)
    h.at(2.0)
    fail = h.fails[late]
    assert fail.why is FailWhy.NO_ENDPOINT
    assert "A: rate-limited until +28 s (429)" in fail.message
    assert "B: breaker open after 5 connection errors, probe at +58 s" in fail.message
    error = fail.error()
    assert isinstance(error, NoEndpointError) and set(error.reasons) == {"A", "B"}


def test_a_parked_call_without_a_deadline_waits_at_most_the_wait_budget() -> None:
    h = Harness({"a": 1}, retry=RetryConfig(max_unavailable_s=6.0))
    call_id = h.submit()
    h.fail(call_id, Failure(FaultKind.RATE_LIMITED, "", 429, 100.0))
    assert h.core.next_wakeup() == 6.0
    h.at(6.0)
    assert h.fails[call_id].why is FailWhy.NO_ENDPOINT
    assert "within 6 s" in h.fails[call_id].message


def test_a_health_check_closes_the_breaker_and_parked_calls_run() -> None:
    h = Harness({"a": 1}, breaker=BreakerConfig(failures=1, cooldown_s=60.0))
    call_id = h.submit()
    h.fail(call_id, CONNECTION)
    h.now = 3.0
    h.apply(h.core.healthy("a", h.now))
    assert h.where(call_id) == ("running", "a")


def test_cooldowns_begun_are_counted_an_extension_is_not_a_new_one() -> None:
    h = Harness({"a": 4, "b": 4})
    call_id = h.submit()
    h.fail(call_id, Failure(FaultKind.RATE_LIMITED, "", 429, 2.0))   # a cools until 2
    h.now = 1.0
    h.apply(h.core.rate_limited("a", h.now, 3.0))                     # extended: the same one
    h.apply(h.core.faulted("a", h.now, RATE_LIMITED))                 # within it: the same one
    assert h.core.snapshot(h.now)[0].cooldowns == 1
    h.at(3.0)                                                         # over
    h.apply(h.core.faulted("a", h.now, RATE_LIMITED))                 # a second one
    h.at(10.0)
    h.apply(h.core.rate_limited("a", h.now, 12.0))                    # a third
    snaps = {s.name: s for s in h.core.snapshot(h.now)}
    assert (snaps["a"].cooldowns, snaps["b"].cooldowns) == (3, 0)
    assert (snaps["a"].breaker_trips, snaps["a"].rate_limited) == (0, 1)


def test_breaker_trips_count_each_opening_a_failed_probe_included() -> None:
    h = Harness({"a": 1}, breaker=BreakerConfig(failures=2, cooldown_s=5.0))
    h.apply(h.core.faulted("a", h.now, CONNECTION))
    assert h.core.snapshot(h.now)[0].breaker_trips == 0               # one failure: still closed
    h.apply(h.core.faulted("a", h.now, CONNECTION))                   # opens: trip 1
    h.apply(h.core.faulted("a", h.now, CONNECTION))                   # while open: no new trip
    assert h.core.snapshot(h.now)[0].breaker_trips == 1
    h.at(5.0)
    probe = h.submit()
    assert h.where(probe) == ("running", "a")
    h.fail(probe, CONNECTION)                                         # the probe fails: trip 2
    assert h.core.snapshot(h.now)[0].breaker_trips == 2
    h.at(10.0)
    h.finish(probe)                                                   # its retry probes, closes
    snap = h.core.snapshot(h.now)[0]
    assert (snap.breaker, snap.breaker_trips, snap.cooldowns) == ("closed", 2, 0)


# ---- endpoints come and go -----------------------------------------------------------------------


def test_a_removed_endpoint_hands_its_queue_on_and_retires_after_its_last_call() -> None:
    h = Harness({"a": 1, "b": 1})
    a_running, _, a_queued = h.submit(), h.submit(), h.submit()
    assert h.where(a_queued) == ("queued", "a")
    h.apply(h.core.remove_endpoint("a", h.now))
    assert h.where(a_queued) == ("queued", "b") and h.retired == []
    h.finish(a_running)
    assert h.retired == ["a"]
    with pytest.raises(Exception, match="already has an endpoint named 'b'"):
        h.add("b", 1)


def test_removing_the_last_endpoint_fails_waiting_calls_at_once() -> None:
    h = Harness({"a": 1})
    running, queued = h.submit(), h.submit()
    h.fail(running, Failure(FaultKind.RATE_LIMITED, "", 429, 10.0))
    h.apply(h.core.remove_endpoint("a", h.now))
    assert {c: h.fails[c].why for c in (running, queued)} == {
        running: FailWhy.NO_ENDPOINT, queued: FailWhy.NO_ENDPOINT}
    assert "the pool has no endpoints" in h.fails[queued].message


# ---- ties, admission, data -----------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["least-busy", "hexgen", "slack"])
def test_sequential_calls_over_identical_idle_endpoints_take_turns(policy: str) -> None:
    h = Harness({"a": 4, "b": 4, "c": 4}, policy)
    placed = []
    for _ in range(9):
        call_id = h.submit()
        placed.append(h.grants[call_id][-1])
        h.apply(h.core.first_token(call_id, h.now))
        h.finish(call_id)
        h.now += 10.0
    assert sorted(placed) == ["a"] * 3 + ["b"] * 3 + ["c"] * 3, placed


def test_admission_refuses_a_new_query_when_every_queue_is_full() -> None:
    h = Harness({"a": 1}, max_queued_per_slot=1)
    h.submit(query="q1")
    h.submit(query="q2")
    refused = h.submit(query="q3")
    assert isinstance(h.fails[refused].error(), OverloadedError)
    assert h.where(h.submit(query="q1")) == ("queued", "a")  # admitted query: always passes


def test_actions_failures_and_their_errors_are_picklable() -> None:
    h = Harness({"a": 1}, retry=RetryConfig(max_attempts=1))
    call_id = h.submit()
    h.fail(call_id, SERVER_ERROR)
    fail = h.fails[call_id]
    for value in (fail, Grant(1, "a", 1, 0.0), Retired("a"), OK, SERVER_ERROR):
        assert pickle.loads(pickle.dumps(value)) == value
    error = pickle.loads(pickle.dumps(fail.error()))
    assert str(error) == fail.message and error.reasons == dict(fail.reasons)


def test_events_for_unknown_or_ended_calls_are_refused() -> None:
    h = Harness({"a": 1})
    call_id = h.submit()
    h.finish(call_id)
    with pytest.raises(KeyError):
        h.core.cancelled(call_id, h.now)
    with pytest.raises(KeyError):
        h.core.failed(call_id, h.now, SERVER_ERROR)
    with pytest.raises(ValueError, match="already submitted"):
        h.core.submit(CallView(7, "q", "planner", 1, 1, None, 0.0, 0, 0.0, ()), h.now)
        h.core.submit(CallView(7, "q", "planner", 1, 1, None, 0.0, 0, 0.0, ()), h.now)
