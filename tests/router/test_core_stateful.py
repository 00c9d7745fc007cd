"""The scheduler core driven by random interleavings of every event, invariants after each.

Hypothesis' stateful testing (``RuleBasedStateMachine``) plays the pool's shell and the
endpoints: it submits calls, cancels several at once, starts, finishes and fails running calls
by every kind, adds and removes endpoints, rate-limits them, trips and heals their breakers,
and lets time pass. After every step :meth:`SchedulerCore.check` asserts the core's own
invariants (slots held = calls in flight; queued calls only where they may run and no free
slot unused; parked calls only when nothing may take them; removed endpoints hold nothing new;
the snapshot agrees), and this harness checks that every submitted call ends exactly once:
finished, cancelled, or failed by a ``Fail`` action naming why.

CI runs a fixed-seed, modest budget (a few seconds); ``FLEETCALL_STATEFUL_EXAMPLES=500`` (and
optionally ``FLEETCALL_STATEFUL_STEPS``) runs a larger one on demand.
"""

from __future__ import annotations

import math
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from fleetcall.router.config import BreakerConfig, RetryConfig
from fleetcall.router.core import Grant, Outcome, Retired, SchedulerCore
from fleetcall.router.faults import Fail, Failure, FailWhy, FaultKind
from fleetcall.router.state import EndpointSpec
from fleetcall.router.views import CallView

EXAMPLES = int(os.environ.get("FLEETCALL_STATEFUL_EXAMPLES", "25"))
STEPS = int(os.environ.get("FLEETCALL_STATEFUL_STEPS", "120"))
GPUS = ["A100-80G", "L40S", "unknown"]
MODEL = "llama-3.2-1b"
KINDS = list(FaultKind)


class CoreMachine(RuleBasedStateMachine):
    """The shell and the endpoints around one SchedulerCore."""

    def __init__(self) -> None:
        super().__init__()
        self.core: SchedulerCore
        self.now = 0.0
        self.ids = 0
        self.live: set[int] = set()       # submitted, not ended
        self.ended: dict[int, str] = {}   # call id -> how it ended
        self.started: set[int] = set()    # running calls whose attempt the shell has sent
        self.removed: set[str] = set()    # endpoints removed, maybe still finishing calls
        self.names = 0

    # -- set-up ------------------------------------------------------------------------------
    @initialize(policy=st.sampled_from(["rr-fcfs", "least-busy", "hexgen", "slack"]),
                gate=st.sampled_from([1, None]), attempts=st.integers(1, 4),
                slots=st.lists(st.integers(1, 3), min_size=1, max_size=3),
                queued_per_slot=st.integers(1, 8))
    def setup(self, policy: str, gate: int | None, attempts: int, slots: list[int],
              queued_per_slot: int) -> None:
        options: dict[str, Any] = {"prefill_slots": gate} if policy == "slack" else {}
        self.core = SchedulerCore(
            policy, options, max_queued_per_slot=queued_per_slot,
            retry=RetryConfig(max_attempts=attempts, backoff_s=0.5, rate_limit_s=1.0,
                              max_unavailable_s=6.0),
            breaker=BreakerConfig(failures=2, cooldown_s=3.0))
        for n in slots:
            self._add(n, GPUS[self.names % len(GPUS)])

    def _add(self, slots: int, gpu: str) -> None:
        name = f"e{self.names}"
        self.names += 1
        spec = EndpointSpec(name, slots, gpu, MODEL if gpu != "unknown" else None, 1,
                            twin_key=gpu)
        self._apply(self.core.add_endpoint(spec, self.now))

    # -- the harness's own bookkeeping -------------------------------------------------------
    def _apply(self, actions: list[Any], *, submitted: int | None = None) -> None:
        granted: set[int] = set()
        for action in actions:
            if isinstance(action, Retired):
                assert action.endpoint in self.removed, f"retired {action.endpoint} not removed"
                continue
            call_id = action.call_id
            assert call_id in self.live or call_id == submitted, f"action for dead {call_id}"
            if isinstance(action, Grant):
                assert self.core.where(call_id) == ("running", action.endpoint)
                assert action.attempt >= 1 and action.queue_s >= 0
                granted.add(call_id)
                self.started.discard(call_id)
            else:
                assert isinstance(action, Fail) and call_id not in granted
                assert action.message and (action.reasons or action.why is not FailWhy.NO_ENDPOINT
                                           or not self.core.endpoints)
                self._end(call_id, f"failed: {action.why.value}")

    def _end(self, call_id: int, how: str) -> None:
        assert call_id not in self.ended, f"call {call_id} ended twice: {self.ended[call_id]}, {how}"
        self.live.discard(call_id)
        self.started.discard(call_id)
        self.ended[call_id] = how

    def _running(self) -> list[int]:
        return sorted(c for c in self.live if (self.core.where(c) or ("",))[0] == "running")

    # -- calls -------------------------------------------------------------------------------
    @rule(prompt=st.integers(0, 4000), output=st.integers(1, 300),
          deadline=st.one_of(st.none(), st.floats(0.0, 30.0)), query=st.integers(0, 5),
          shared=st.booleans())
    def submit(self, prompt: int, output: int, deadline: float | None, query: int,
               shared: bool) -> None:
        self.ids += 1
        call_id = self.ids
        hashes = tuple(range(1, 1 + prompt // 16)) if shared else ()
        view = CallView(call_id, f"q{query}", "planner", prompt, output,
                        None if deadline is None else self.now + deadline, 0.0, 0, self.now,
                        hashes)
        self.live.add(call_id)
        self._apply(self.core.submit(view, self.now), submitted=call_id)

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def cancel_several(self, data: st.DataObject) -> None:
        """Several calls cancelled in the same loop tick, wherever they are."""
        doomed = data.draw(st.lists(st.sampled_from(sorted(self.live)), min_size=1,
                                    max_size=4, unique=True))
        for call_id in doomed:
            self._end(call_id, "cancelled")
            self._apply(self.core.cancelled(call_id, self.now))

    @precondition(lambda self: any(c not in self.started for c in self._running()))
    @rule(data=st.data())
    def start(self, data: st.DataObject) -> None:
        call_id = data.draw(st.sampled_from([c for c in self._running() if c not in self.started]))
        self.started.add(call_id)
        self._apply(self.core.started(call_id, self.now))

    @precondition(lambda self: self._running())
    @rule(data=st.data())
    def first_token(self, data: st.DataObject) -> None:
        self._apply(self.core.first_token(data.draw(st.sampled_from(self._running())), self.now))

    @precondition(lambda self: self._running())
    @rule(data=st.data(), ttft=st.one_of(st.none(), st.floats(0.001, 5.0)),
          tpot=st.one_of(st.none(), st.floats(0.0001, 0.2)), tokens=st.integers(0, 400),
          complete=st.booleans())
    def finish(self, data: st.DataObject, ttft: float | None, tpot: float | None, tokens: int,
               complete: bool) -> None:
        call_id = data.draw(st.sampled_from(self._running()))
        self._end(call_id, "finished")
        outcome = Outcome(ttft, tpot, (ttft or 0.0) + tokens * (tpot or 0.0), tokens, 0, complete)
        self._apply(self.core.finished(call_id, self.now, outcome))

    @precondition(lambda self: self._running())
    @rule(data=st.data(), kind=st.sampled_from(KINDS),
          after=st.one_of(st.none(), st.floats(0.0, 10.0)))
    def fail(self, data: st.DataObject, kind: FaultKind, after: float | None) -> None:
        call_id = data.draw(st.sampled_from(self._running()))
        status = {FaultKind.RATE_LIMITED: 429, FaultKind.SERVER_ERROR: 500,
                  FaultKind.CLIENT_ERROR: 400}.get(kind)
        failure = Failure(kind, f"injected {kind.value}", status,
                          after if kind is FaultKind.RATE_LIMITED else None)
        endpoint = self.core.where(call_id)[1]
        actions = self.core.failed(call_id, self.now, failure)
        self._apply(actions)
        shut = kind is FaultKind.RATE_LIMITED or (
            endpoint in self.core.endpoints
            and self.core.endpoint(endpoint).breaker.state(self.now) == "open")
        if shut:  # the endpoint that just refused gets no call in the same breath
            assert all(a.endpoint != endpoint for a in actions if isinstance(a, Grant))

    @precondition(lambda self: self.ended)
    @rule(data=st.data())
    def events_for_ended_calls_are_refused(self, data: st.DataObject) -> None:
        call_id = data.draw(st.sampled_from(sorted(self.ended)))
        with pytest.raises(KeyError):
            self.core.cancelled(call_id, self.now)
        with pytest.raises(KeyError):
            self.core.finished(call_id, self.now, Outcome())

    # -- endpoints ---------------------------------------------------------------------------
    @precondition(lambda self: len(self.core.endpoints) < 5)
    @rule(slots=st.integers(1, 3), gpu=st.sampled_from(GPUS))
    def add_endpoint(self, slots: int, gpu: str) -> None:
        self._add(slots, gpu)

    @precondition(lambda self: self.core.endpoints)
    @rule(data=st.data())
    def remove_endpoint(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(self.core.endpoints))
        self.removed.add(name)
        self._apply(self.core.remove_endpoint(name, self.now))

    @precondition(lambda self: self.core.endpoints)
    @rule(data=st.data(), seconds=st.floats(0.0, 20.0))
    def rate_limit(self, data: st.DataObject, seconds: float) -> None:
        name = data.draw(st.sampled_from(self.core.endpoints))
        self._apply(self.core.rate_limited(name, self.now, self.now + seconds))

    @precondition(lambda self: self.core.endpoints)
    @rule(data=st.data(), kind=st.sampled_from([FaultKind.CONNECTION, FaultKind.TIMEOUT,
                                                FaultKind.SERVER_ERROR]), times=st.integers(1, 3))
    def trip_breaker(self, data: st.DataObject, kind: FaultKind, times: int) -> None:
        name = data.draw(st.sampled_from(self.core.endpoints))
        for _ in range(times):
            self._apply(self.core.faulted(name, self.now, Failure(kind, "probe refused")))

    @precondition(lambda self: self.core.endpoints)
    @rule(data=st.data())
    def health_check_passes(self, data: st.DataObject) -> None:
        self._apply(self.core.healthy(data.draw(st.sampled_from(self.core.endpoints)), self.now))

    # -- time --------------------------------------------------------------------------------
    @rule(seconds=st.sampled_from([0.0, 0.01, 0.5, 1.0, 2.5, 7.0]))
    def time_passes(self, seconds: float) -> None:
        self.now += seconds
        self._apply(self.core.advance(self.now))

    @precondition(lambda self: self.core.next_wakeup() is not None)
    @rule()
    def wake_up_when_due(self) -> None:
        due = self.core.next_wakeup()
        assert due is not None and due > self.now
        self.now = due
        self._apply(self.core.advance(self.now))

    # -- invariants --------------------------------------------------------------------------
    @invariant()
    def core_invariants_hold(self) -> None:
        if hasattr(self, "core"):
            self.core.check(self.now)

    @invariant()
    def every_live_call_is_somewhere_and_every_ended_one_nowhere(self) -> None:
        if not hasattr(self, "core"):
            return
        assert len(self.core) == len(self.live)
        assert all(self.core.where(c) is not None for c in self.live)
        assert all(self.core.where(c) is None for c in self.ended)
        assert not math.isnan(self.now)

    def teardown(self) -> None:
        """Drain: with the breakers healed and time run on, every call ends (none hangs)."""
        if not hasattr(self, "core"):
            return
        if not self.core.endpoints and self.live:
            self._add(1, "A100-80G")
        for _ in range(2000):
            if not self.live:
                break
            running = self._running()
            if running:
                call_id = running[0]
                self._end(call_id, "finished")
                self._apply(self.core.finished(call_id, self.now, Outcome(0.1, 0.01, 1.0, 10)))
            else:
                due = self.core.next_wakeup()
                assert due is not None, f"calls {sorted(self.live)} wait with nothing to wake them"
                self.now = due
                self._apply(self.core.advance(self.now))
            self.core.check(self.now)
        assert not self.live, f"calls never ended: {sorted(self.live)}"


CoreMachine.TestCase.settings = settings(
    max_examples=EXAMPLES, stateful_step_count=STEPS, derandomize=True, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    database=None)
TestCoreMachine = CoreMachine.TestCase
