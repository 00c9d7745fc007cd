"""The scheduler core: placement as a pure state machine (no I/O, no clock, no asyncio).

As vLLM v1's ``schedule()`` / ``update_from_output()``: the pool (an I/O shell) feeds events
in, each with ``now`` (loop seconds, never going backwards), and carries out the actions that
come back. Calls are identified by ids (any hashable: an int in one process, ``(replica, n)``
across processes), and every input and output is plain picklable data, so the same core can
serve several processes from one place.

Events (methods; each returns a list of actions):

========================== ===============================================================
``submit(call, now)``       a new call (its :class:`~fleetcall.router.views.CallView`)
``started(id, now)``        the shell is sending the granted attempt
``first_token(id, now)``    its prefill is over
``finished(id, now, out)``  the attempt succeeded, with its measurements (:class:`Outcome`)
``failed(id, now, f)``      the attempt failed (:class:`~fleetcall.router.faults.Failure`)
``cancelled(id, now)``      the caller gave up (wherever the call is: queued, parked, running)
``add_endpoint(spec, now)`` / ``remove_endpoint(name, now)``
``rate_limited(name, now, until)`` / ``faulted(name, now, f)`` / ``healthy(name, now)``
``advance(now)``            time passed: call it at :meth:`SchedulerCore.next_wakeup`
========================== ===============================================================

Actions: :class:`Grant` (the call holds a slot at an endpoint: send it),
:class:`~fleetcall.router.faults.Fail` (the call ends with an error), :class:`Retired` (a
removed endpoint's last call ended).

A call is in exactly one place: *queued* at an endpoint (its local queue), *running* there
(holding a slot), or *parked* (no endpoint it may use is available: all rate-limited, breakers
open, or backing off after failing it). It ends exactly once: finished, failed (a :class:`Fail`
action) or cancelled. :meth:`SchedulerCore.check` asserts the invariants.

    >>> from fleetcall.router.state import EndpointSpec
    >>> from fleetcall.router.views import CallView
    >>> core = SchedulerCore("least-busy")
    >>> _ = core.add_endpoint(EndpointSpec("a", slots=1), now=0.0)
    >>> call = CallView(1, "q", "planner", 100, 10, None, 0.0, 0, 0.0, ())
    >>> core.submit(call, now=0.0)
    [Grant(call_id=1, endpoint='a', attempt=1, queue_s=0.0)]
    >>> core.finished(1, now=1.0, outcome=Outcome(ttft_s=0.2, tpot_s=0.05, total_s=1.0))
    []
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from fleetcall.errors import ConfigError
from fleetcall.logs import ROUTER, event
from fleetcall.router.actions import Action, Grant, Outcome, Retired
from fleetcall.router.config import BreakerConfig, RetryConfig
from fleetcall.router.dispatcher import (Dispatcher, make_dispatcher, predicted_service_s,
                                         prefill_chunk_s, reads_prefill_state,
                                         undo_interference_s)
from fleetcall.router.faults import CallId, Fail, Failure, FailWhy, FaultKind, describe_streak
from fleetcall.router.health import CircuitBreaker, EndpointSnapshot, EndpointStats
from fleetcall.router.predict import OutputLengths, PrefixIndex, ServicePredictor
from fleetcall.router.state import EndpointSpec, EndpointState, Running
from fleetcall.router.views import CallView, EndpointView

__all__ = ["Action", "Grant", "Outcome", "Retired", "SchedulerCore"]

log = logging.getLogger(ROUTER)

DEFAULT_CALL_S = 1.0       # an LLM call's service time before any was measured
_QUERIES_REMEMBERED = 100_000  # admitted query ids kept to tell a new query from a known one
_MIN_COOLDOWN_S = 0.05     # shortest rate-limit cooldown (a "Retry-After: 0" must not spin)


@dataclass(slots=True)
class _Call:
    """A live call. ``endpoint`` is where it is queued or running; None iff parked."""

    view: CallView
    wait_from: float                  # loop time it last began waiting for a slot
    endpoint: str | None = None
    running: bool = False
    service_s: float = 0.0            # predicted service seconds where it is queued
    attempts: int = 0                 # grants (requests sent)
    faults: int = 0                   # failed attempts counted against max_attempts
    queue_s: float = 0.0              # seconds waited for slots, earlier waits
    parked_at: float | None = None    # loop time it was parked (None: not parked)
    parked_s: float = 0.0             # seconds parked in earlier episodes
    excluded: dict[str, float] = field(default_factory=dict)  # endpoint that failed it ->
                                                              # loop time it may be retried there
    tried: dict[str, str] = field(default_factory=dict)  # endpoint -> what happened there, last
    avoided: frozenset[str] = frozenset()  # endpoints unavailable when it was last placed


class SchedulerCore:
    """Slots, local queues, predictors, breakers and cooldowns of a pool's endpoints.

    policy, policy_options: the dispatch policy (:func:`make_dispatcher`), or ``dispatcher``.
    retry, breaker: attempt budget, backoff, cooldowns; breaker per endpoint.
    max_queued_per_slot: admission bound (a new query is refused when every available
        endpoint has this many calls queued per slot).
    """

    def __init__(self, policy: str = "slack", policy_options: dict[str, Any] | None = None, *,
                 dispatcher: Dispatcher | None = None, retry: RetryConfig | None = None,
                 breaker: BreakerConfig | None = None, max_queued_per_slot: int = 64) -> None:
        if max_queued_per_slot < 1:
            raise ConfigError("max_queued_per_slot must be >= 1")
        self.dispatcher = dispatcher or make_dispatcher(policy, **(policy_options or {}))
        self._prefill_views = reads_prefill_state(self.dispatcher)  # views with prefill fields
        self.retry = retry or RetryConfig()
        self.breaker = breaker or BreakerConfig()
        self.max_queued_per_slot = max_queued_per_slot
        self.output_lengths = OutputLengths()
        self.mean_call_s = DEFAULT_CALL_S  # EWMA of calls' service seconds (queue wait excluded)
        self._endpoints: dict[str, EndpointState] = {}   # live endpoints, in pool order
        self._retiring: dict[str, EndpointState] = {}    # removed, calls still running there
        self._calls: dict[CallId, _Call] = {}            # every live call
        self._parked: dict[CallId, None] = {}            # parked calls, in park order
        self._down: set[str] = set()                     # live endpoints known unavailable
        self._queries: OrderedDict[str, None] = OrderedDict()  # recently admitted query ids
        self._wakeup: float | None = None                # cached next_wakeup()
        self._stale = False                              # True iff _wakeup must be recomputed
        self._clock = -math.inf                          # the latest event's time
        # True once every live endpoint's predictor has a measurement (a measured predictor
        # never loses it): no twin is left to start from another's
        self._all_measured = False

    # -- endpoints -------------------------------------------------------------------------
    @property
    def endpoints(self) -> list[str]:
        """Names of the live endpoints, in the order they were added."""
        return list(self._endpoints)

    @property
    def clock(self) -> float:
        """The latest event's time (-inf before the first): no event may come earlier."""
        return self._clock

    def endpoint(self, name: str) -> EndpointState:
        """A live or retiring endpoint's state (read it, do not write it); ConfigError if none."""
        ep = self._endpoints.get(name) or self._retiring.get(name)
        if ep is None:
            raise ConfigError(f"no endpoint named {name!r}; the pool has: "
                              f"{', '.join(self._endpoints) or '(none)'}")
        return ep

    def add_endpoint(self, spec: EndpointSpec, now: float) -> list[Action]:
        """A new endpoint (ConfigError if the name is taken, or still finishing calls)."""
        out = self._begin(now)
        if spec.name in self._endpoints or spec.name in self._retiring:
            raise ConfigError(self.name_taken(spec.name))
        ep = EndpointState(
            spec=spec, predictor=self._predictor(spec),
            prefixes=PrefixIndex(spec.prefix_capacity_blocks), queue=self.dispatcher.new_queue(),
            stats=EndpointStats(spec.name, CircuitBreaker(self.breaker.failures,
                                                          self.breaker.cooldown_s)))
        self._endpoints[spec.name] = ep
        self._all_measured = False
        self._unpark(now, out)
        self._pump(ep, now, out)
        return out

    def name_taken(self, name: str) -> str:
        """Why an endpoint named ``name`` cannot be added now (call when it cannot)."""
        retiring = self._retiring.get(name)
        if retiring is None:
            return f"the pool already has an endpoint named {name!r}"
        return (f"endpoint {name!r} was removed and is still finishing {len(retiring.running)} "
                f"call(s): add it again once they end")

    def _predictor(self, spec: EndpointSpec) -> ServicePredictor:
        """A profiled endpoint shares the predictor of its twins (the same GPU, model and
        parallelism declared): they learn together and tie while idle, so they take calls in
        turn. An endpoint of unknown hardware learns on its own (its twins by name may be any
        hardware), starting from a measured twin's ratios (see ``_learn``)."""
        if spec.gpu != "unknown" and spec.twin_key:
            for other in (*self._endpoints.values(), *self._retiring.values()):
                if other.spec.twin_key == spec.twin_key:
                    return other.predictor
        model = spec.model if spec.gpu != "unknown" else None
        return ServicePredictor(spec.gpu, model, spec.tp)

    def remove_endpoint(self, name: str, now: float) -> list[Action]:
        """Remove an endpoint: its queued calls are placed again, its running calls finish."""
        out = self._begin(now)
        ep = self._endpoints.get(name)
        if ep is None:
            raise ConfigError(f"no endpoint named {name!r}; the pool has: "
                              f"{', '.join(self._endpoints) or '(none)'}")
        del self._endpoints[name]
        self._down.discard(name)
        ep.removed = True
        if ep.running:
            self._retiring[name] = ep
        else:
            out.append(Retired(name))
        self._evict(ep, now, out, "endpoint removed")
        self._stale = True
        if not self._endpoints:
            self._unpark(now, out)  # nothing left to wait for: parked calls fail now
        return out

    def rate_limited(self, name: str, now: float, until: float,
                     status: int | str | None = 429) -> list[Action]:
        """The endpoint asked for no calls until ``until`` (loop time); ``status``: the HTTP
        status that said so, or the limit that did (``"rpm"``, ``"tpm"``: the pool's own).
        ValueError if ``until`` is NaN."""
        if math.isnan(until):
            raise ValueError(f"endpoint {name!r}: rate-limited until NaN")
        out = self._begin(now)
        self._cool(self.endpoint(name), until, status, now, out)
        return out

    def faulted(self, name: str, now: float, failure: Failure) -> list[Action]:
        """A fault of the endpoint seen outside a call (counts toward its breaker)."""
        out = self._begin(now)
        ep = self.endpoint(name)
        if failure.rate_limit:
            self._cool(ep, self._cooled_until(failure, now), failure.status, now, out)
        else:
            self._judge(ep, failure, now, out)
        return out

    def healthy(self, name: str, now: float) -> list[Action]:
        """A health check found the endpoint up: its breaker closes."""
        out = self._begin(now)
        ep = self.endpoint(name)
        if ep.breaker.state(now) != "closed":
            ep.breaker.reset()
            ep.streak.clear()
            event(log, logging.INFO, "endpoint.breaker_closed", endpoint=name, by="health_check")
        self._refresh(ep, now, out)
        return out

    # -- calls -----------------------------------------------------------------------------
    def submit(self, call: CallView, now: float) -> list[Action]:
        """A new call: placed at once (queued, granted) or parked; or refused (admission)."""
        out = self._begin(now)
        if call.call_id in self._calls:
            raise ValueError(f"call {call.call_id!r} was already submitted")
        refused = self._admit(call, now)
        if refused is not None:
            out.append(refused)
            return out
        c = _Call(call, wait_from=now)
        self._calls[call.call_id] = c
        self._place(c, now, out)
        return out

    def started(self, call_id: CallId, now: float) -> list[Action]:
        """The shell is sending the granted attempt (records the batch it joins)."""
        out = self._begin(now)
        ep = self._running(call_id)[1]
        ep.running[call_id].batch = len(ep.running)
        return out

    def first_token(self, call_id: CallId, now: float) -> list[Action]:
        """The running call's prefill is over: its place in the prefill gate frees up."""
        out = self._begin(now)
        ep = self._running(call_id)[1]
        running = ep.running[call_id]
        if not running.decoding:
            ep.note_prefill_change(now)
            running.decoding = True
            running.decode_at, running.busy_at_decode = now, ep.prefill_busy_s
            if not ep.removed:
                self._pump(ep, now, out)
        return out

    def finished(self, call_id: CallId, now: float, outcome: Outcome) -> list[Action]:
        """The running call succeeded: learn from its measurements, free its slot."""
        out = self._begin(now)
        c, ep = self._running(call_id)
        outcome = outcome.measured()
        del self._calls[call_id]
        running = ep.running[call_id]
        was = ep.breaker.state(now)
        if outcome.complete:
            ep.stats.succeeded(now, ttft_s=outcome.ttft_s, tpot_s=outcome.tpot_s)
            self._learn(ep, c.view, running, outcome, now)
        else:
            ep.stats.succeeded(now, ttft_s=outcome.ttft_s)
        if ep.breaker.state(now) == "closed":
            ep.streak.clear()
            if was != "closed":
                event(log, logging.INFO, "endpoint.breaker_closed", endpoint=ep.name, by="probe_call")
        self._free(ep, call_id, now, out)
        return out

    def failed(self, call_id: CallId, now: float, failure: Failure) -> list[Action]:
        """The running call's attempt failed: judge the endpoint, then retry or end the call."""
        out = self._begin(now)
        c, ep = self._running(call_id)
        c.running, c.endpoint = False, None
        c.tried[ep.name] = failure.describe()
        if failure.rate_limit:                    # first the endpoint's verdict: the slot
            ep.stats.rate_limited(failure.cause)  # freed below must not go to a queued call
            if ep.probe_call == call_id:  # no verdict on its health: probe again after this
                ep.breaker.probe_abandoned(now)
            self._cool(ep, self._cooled_until(failure, now), failure.status, now, out)
        else:
            self._judge(ep, failure, now, out)
        self._free(ep, call_id, now, out)
        if failure.kind is not FaultKind.RATE_LIMITED:
            c.faults += 1
            if not failure.kind.retryable or c.faults >= self.retry.max_attempts:
                del self._calls[call_id]
                out.append(self._exhausted(c, ep.name, failure))
                return out
            c.excluded[ep.name] = now + self.retry.backoff_s * 2 ** (c.faults - 1)
            event(log, logging.INFO, "call.retry", call_id=call_id, query_id=c.view.query_id or None,
                  kind=c.view.kind, endpoint=ep.name, attempt=c.attempts, error=failure.describe())
        c.wait_from = now
        self._place(c, now, out)
        return out

    def cancelled(self, call_id: CallId, now: float) -> list[Action]:
        """The caller gave up on the call, wherever it is (queued, parked or running)."""
        out = self._begin(now)
        c = self._calls.pop(call_id, None)
        if c is None:
            raise KeyError(f"call {call_id!r} is not live (it never came, or it already ended)")
        if c.endpoint is None:
            del self._parked[call_id]
            self._stale = True
        elif not c.running:
            self.endpoint(c.endpoint).queue.remove(call_id)
        else:
            ep = self.endpoint(c.endpoint)
            ep.stats.abandoned()
            if ep.probe_call == call_id:
                ep.breaker.probe_abandoned(now)
            self._free(ep, call_id, now, out)
        return out

    # -- time ------------------------------------------------------------------------------
    def advance(self, now: float) -> list[Action]:
        """Time passed: cooldowns and breaker probes that are due make their endpoints
        available again; parked calls are placed, or fail once their wait is over."""
        return self._begin(now, force=True)

    def next_wakeup(self) -> float | None:
        """Loop time :meth:`advance` has work to do (None: nothing is timed)."""
        if self._stale:
            self._wakeup = self._compute_wakeup()
            self._stale = False
        return self._wakeup

    def _begin(self, now: float, *, force: bool = False) -> list[Action]:
        """Every event starts here: ``now`` is checked (ValueError, before any change: a NaN,
        an infinity, or a time before the latest event's), then timed transitions due by
        ``now`` happen first."""
        if not math.isfinite(now) or now < self._clock:
            raise ValueError(f"an event's time must be a finite loop time, never going "
                             f"backwards: got {now!r} after {self._clock!r}")
        self._clock = now
        out: list[Action] = []
        due = self.next_wakeup()
        if force or (due is not None and now >= due):
            for name in [n for n in self._down if self._endpoints[n].available(now)]:
                self._refresh(self._endpoints[name], now, out)
            self._unpark(now, out)
            if self.dispatcher.prefill_slots is not None:  # prefill gates that opened by time
                self._stale = True
                for ep in [ep for ep in self._endpoints.values() if ep.queue]:
                    self._pump(ep, now, out)
        return out

    def _compute_wakeup(self) -> float | None:
        times = [self._endpoints[n].available_at(-math.inf) for n in self._down]
        gate, chunk = self.dispatcher.prefill_slots, self.dispatcher.prefill_chunk_tokens
        if gate is not None:  # a closed prefill gate with calls behind it opens by prediction
            for ep in self._endpoints.values():
                if ep.queue and ep.free_slots() > 0:
                    opens = ep.prefill_gate_opens_at(-math.inf, gate, chunk)
                    if opens is not None:
                        times.append(opens)
        for call_id in self._parked:
            c = self._calls[call_id]
            times.append(self._limit(c))
            times += [max(ep.available_at(-math.inf), c.excluded.get(ep.name, -math.inf))
                      for ep in self._endpoints.values()]
        finite = [t for t in times if math.isfinite(t)]
        return min(finite) if finite else None

    # -- placement -------------------------------------------------------------------------
    def _admit(self, call: CallView, now: float) -> Fail | None:
        """Refuse a new query (the first call the core sees of it) when every available
        endpoint's queue is past the bound; calls of queries already admitted always pass, so
        no admitted query is cut off half-way."""
        query = call.query_id
        known = bool(query) and query in self._queries
        if query:
            self._queries[query] = None
            self._queries.move_to_end(query)
            if len(self._queries) > _QUERIES_REMEMBERED:
                self._queries.popitem(last=False)
        if known:
            return None
        live = [ep for ep in self._endpoints.values() if ep.available(now)]
        bound = self.max_queued_per_slot
        if not live or any(len(ep.queue) < bound * ep.spec.slots for ep in live):
            return None
        if query:
            del self._queries[query]
        queued = ", ".join(f"{ep.name}: {len(ep.queue)}" for ep in live)
        return Fail(call.call_id, FailWhy.OVERLOADED,
                    f"the pool is overloaded: every endpoint has {bound} or more calls queued "
                    f"per slot ({queued}); try again later")

    def _usable(self, c: _Call, now: float) -> list[EndpointState]:
        """The endpoints ``c`` may go to now: the available ones that have not failed it; if
        there are none, those that failed it whose backoff is over."""
        avail = [ep for ep in self._endpoints.values() if ep.available(now)]
        if not c.excluded or not avail:
            return avail
        fresh = [ep for ep in avail if ep.name not in c.excluded]
        return fresh or [ep for ep in avail if c.excluded[ep.name] <= now]

    def _place(self, c: _Call, now: float, out: list[Action]) -> None:
        """Dispatch ``c`` to a local queue and give out free slots, or park it."""
        usable = self._usable(c, now)
        if not usable:
            self._park(c, now, out)
            return
        if c.parked_at is not None:
            c.parked_s += now - c.parked_at
            c.parked_at = None
            del self._parked[c.view.call_id]
            self._stale = True
        views = self._views(now, {ep.name for ep in usable})
        name = self.dispatcher.choose(c.view, views, now)
        chosen = next(v for v in views if v.name == name)
        ep = self._endpoints[name]
        c.endpoint, c.service_s = name, predicted_service_s(c.view, chosen)
        c.avoided = frozenset(self._down) if self._down else frozenset()
        ep.queue.push(c.view, c.service_s)
        self._pump(ep, now, out)

    def _park(self, c: _Call, now: float, out: list[Action]) -> None:
        """No endpoint may take ``c`` now: it waits, until its deadline or wait budget."""
        call_id = c.view.call_id
        c.endpoint = None
        if c.parked_at is None:
            c.parked_at = now
            self._parked[call_id] = None
            self._stale = True
        if self._endpoints and now < self._limit(c):
            return
        del self._parked[call_id], self._calls[call_id]
        self._stale = True
        out.append(self._no_endpoint(c, now))

    def _limit(self, c: _Call) -> float:
        """Loop time a parked call stops waiting: its deadline, or its wait budget spent."""
        assert c.parked_at is not None
        budget = c.parked_at + max(self.retry.max_unavailable_s - c.parked_s, 0.0)
        deadline = c.view.deadline
        return budget if deadline is None else min(budget, deadline)

    def _unpark(self, now: float, out: list[Action]) -> None:
        """Place the parked calls again, in park order (each fails if its wait is over)."""
        for call_id in list(self._parked):
            c = self._calls.get(call_id)
            if c is not None and c.parked_at is not None:
                self._place(c, now, out)

    def _views(self, now: float, usable: set[str] | None) -> list[EndpointView]:
        """What the dispatcher sees of every live endpoint; ``usable``: the names available
        to the call being placed (None: every available endpoint)."""
        prefill = self._prefill_views
        return [ep.view(now, ep.available(now) if usable is None else ep.name in usable,
                        prefill=prefill)
                for ep in self._endpoints.values()]

    def _pump(self, ep: EndpointState, now: float, out: list[Action]) -> None:
        """Give ``ep``'s free slots to its queue's most urgent calls; steal work when idle."""
        if not ep.available(now):
            return
        gate, chunk = self.dispatcher.prefill_slots, self.dispatcher.prefill_chunk_tokens
        while ep.free_slots() > 0:
            if not ep.prefill_gate_open(now, gate, chunk):
                if ep.queue:
                    self._stale = True  # the gate opens at a predicted time: wake up then
                return
            entry = ep.queue.pop_entry(now)
            if entry is not None:
                self._grant(ep, self._calls[entry.call.call_id], entry.service_s, now, out)
            elif not self._steal_into(ep, now, out):
                return
            if ep.probe_call is not None:  # a half-open breaker let its one probe through
                self._evict(ep, now, out, "its breaker is probing it")
                return

    def _grant(self, ep: EndpointState, c: _Call, service_s: float, now: float,
               out: list[Action]) -> None:
        probing = ep.breaker.state(now) != "closed"
        ep.hold(c.view, service_s, now)
        ep.breaker.allow(now)  # closed: a no-op; half-open: this call is the probe
        if probing:
            ep.probe_call = c.view.call_id
            self._mark_down(ep, now)
        c.endpoint, c.running = ep.name, True
        c.attempts += 1
        c.queue_s += now - c.wait_from
        out.append(Grant(c.view.call_id, ep.name, c.attempts, c.queue_s))

    def _steal_into(self, ep: EndpointState, now: float, out: list[Action]) -> bool:
        """Move the most urgent call waiting elsewhere to idle ``ep`` if it finishes sooner."""
        if not any(other.queue for other in self._endpoints.values() if other is not ep):
            return False  # nothing waits anywhere: skip snapshotting every queue (a hot path)
        views = self._views(now, None)
        idle = next(v for v in views if v.name == ep.name)
        move = self.dispatcher.steal(idle, [v for v in views if v.name != ep.name], now)
        if move is None:
            return False
        c = self._calls[move[1]]
        if c.excluded and all(e is not ep for e in self._usable(c, now)):
            return False  # it failed there and may not go back yet
        self._endpoints[move[0]].queue.remove(move[1])
        self._grant(ep, c, predicted_service_s(c.view, idle), now, out)
        return True

    def _free(self, ep: EndpointState, call_id: CallId, now: float, out: list[Action]) -> None:
        """A call's slot comes back (it finished, failed or was cancelled)."""
        ep.release(call_id, now)
        if ep.probe_call == call_id:
            ep.probe_call = None
        if not ep.removed:
            self._refresh(ep, now, out)
        elif not ep.running:
            del self._retiring[ep.name]
            out.append(Retired(ep.name))

    def _refresh(self, ep: EndpointState, now: float, out: list[Action]) -> None:
        """``ep`` may be available (again): parked calls are placed, its slots given out."""
        if not ep.available(now):
            if ep.name in self._down:
                self._stale = True  # a closed breaker may bring its available time forward
            return
        back = ep.name in self._down
        if back:
            self._down.discard(ep.name)
            self._stale = True
            event(log, logging.INFO, "endpoint.available", endpoint=ep.name)
        if self._parked:
            self._unpark(now, out)
        if back:
            self._recall(ep, now, out)
        self._pump(ep, now, out)

    def _recall(self, ep: EndpointState, now: float, out: list[Action]) -> None:
        """``ep`` is back: the calls queued elsewhere because it was down are placed again,
        oldest first, so the policy chooses as if it had not been down (a fault must not leave
        a recovered endpoint idle while calls it would have taken wait in another's queue)."""
        moved = [c for c in self._calls.values()
                 if not c.running and c.endpoint is not None and c.endpoint != ep.name
                 and ep.name in c.avoided]
        if not moved:
            return
        event(log, logging.INFO, "endpoint.recall", endpoint=ep.name, calls=len(moved))
        for c in moved:
            assert c.endpoint is not None
            self._endpoints[c.endpoint].queue.remove(c.view.call_id)
            c.endpoint = None
        for c in moved:
            self._place(c, now, out)

    def _mark_down(self, ep: EndpointState, now: float) -> None:
        """``ep`` may have become unavailable, or unavailable for longer: re-time the wakeup."""
        self._stale = True
        if not ep.removed and not ep.available(now):
            self._down.add(ep.name)

    def _evict(self, ep: EndpointState, now: float, out: list[Action], why: str) -> None:
        """Place every call queued at ``ep`` again (it is unavailable or gone): never lost."""
        entries = ep.queue.ordered()
        if not entries:
            return
        event(log, logging.INFO, "endpoint.redispatch", endpoint=ep.name, calls=len(entries), why=why)
        for entry in entries:
            ep.queue.remove(entry.call.call_id)
        for entry in entries:
            self._place(self._calls[entry.call.call_id], now, out)

    # -- endpoint health -------------------------------------------------------------------
    def _cooled_until(self, failure: Failure, now: float) -> float:
        """Loop time a rate-limited endpoint may be used again."""
        if failure.retry_at is not None:
            return max(failure.retry_at, now)
        after = failure.retry_after_s
        return now + max(self.retry.rate_limit_s if after is None else after, _MIN_COOLDOWN_S)

    def _cool(self, ep: EndpointState, until: float, status: int | str | None, now: float,
              out: list[Action]) -> None:
        """A rate limit: ``ep`` takes no call until ``until``; its queue goes elsewhere."""
        cooling = now < ep.cooling_until
        if until <= now or not ep.cool_down(until, status) or ep.removed:
            return
        if not cooling:
            ep.stats.cooldowns += 1
        event(log, logging.INFO, "endpoint.cooldown", endpoint=ep.name, status=status or "Retry-After",
              cooldown_s=until - now, extended=cooling)
        self._stale = True
        self._mark_down(ep, now)
        self._evict(ep, now, out, "it is rate-limited")

    def _judge(self, ep: EndpointState, failure: Failure, now: float, out: list[Action]) -> None:
        """A fault of ``ep``: into its stats and breaker; an opening breaker sends its queue
        elsewhere."""
        was = ep.breaker.state(now)
        fault = failure.kind.trips_breaker
        ep.stats.failed(now, failure.describe(), endpoint_fault=fault)
        now_state = ep.breaker.state(now)
        if not fault:
            if now_state == "closed":
                ep.streak.clear()
            return
        if was == "closed" or (was == "half-open" and now_state == "open"):
            ep.streak[failure.kind] = ep.streak.get(failure.kind, 0) + 1
        if now_state == "open" and was != "open":
            ep.stats.breaker_trips += 1
            event(log, logging.WARNING, "endpoint.breaker_open", endpoint=ep.name,
                  after=describe_streak(ep.streak), probe_in_s=(ep.breaker.probe_at() or now) - now)
            self._mark_down(ep, now)
            self._evict(ep, now, out, "its breaker opened")

    # -- endings ---------------------------------------------------------------------------
    def _learn(self, ep: EndpointState, view: CallView, running: Running, outcome: Outcome,
               now: float) -> None:
        """Feed a finished call's measurements back (predictor, output lengths, prefixes)."""
        ttft, out = outcome.ttft_s, outcome.completion_tokens
        if ttft is not None:
            # The predictor models a prompt computed alone; the prefill that was still owed to
            # calls ahead of this one is the dispatcher's backlog term, not this call's cost.
            own_ttft = max(ttft - running.backlog_s, 0.25 * ttft)
            # Likewise its decode alone: other prompts' prefill chunks that shared its
            # iterations are the dispatcher's interference term (learning them into the TPOT
            # ratio counted them twice and made a GPU that had been busy look slow when idle).
            tpot = undo_interference_s(
                outcome.tpot_s or 0.0,
                prefill_chunk_s(ep.predictor, self.dispatcher.prefill_chunk_tokens,
                                int(ep.prefill_tokens)),
                ep.decode_prefill_load(running, now))
            ep.predictor.observe(view.prompt_tokens, max(out, 1), own_ttft, tpot,
                                 max(running.batch + 1, 1), cached_tokens=outcome.cached_tokens)
            if not self._all_measured:  # unmeasured twins start from this one
                self._all_measured = True
                for twin in self._endpoints.values():
                    if twin.predictor.samples == 0:  # (profiled twins share one predictor)
                        self._all_measured = False
                        if twin.spec.twin_key == ep.spec.twin_key:
                            twin.predictor.adopt(ep.predictor)
        if out:
            self.output_lengths.observe(view.kind, out)
        ep.prefixes.add(view.prefix_hashes)
        if outcome.total_s is not None:
            self.mean_call_s += 0.1 * (outcome.total_s - self.mean_call_s)

    def _exhausted(self, c: _Call, endpoint: str, failure: Failure) -> Fail:
        reasons = tuple(c.tried.items())
        tried = "; ".join(f"{name}: {why}" for name, why in reasons)
        message = (f"LLM call failed at endpoint {endpoint!r} after {c.attempts} attempt(s): "
                   f"{failure.cause} (endpoints tried: {tried})")
        event(log, logging.WARNING, "call.failed", call_id=c.view.call_id, query_id=c.view.query_id or None,
              kind=c.view.kind, endpoint=endpoint, attempts=c.attempts, error=failure.describe())
        return Fail(c.view.call_id, FailWhy.ATTEMPTS, message, reasons)

    def _no_endpoint(self, c: _Call, now: float) -> Fail:
        v = c.view
        what = f"call {v.call_id} ({v.kind}, query {v.query_id or '-'})"
        if not self._endpoints:
            message = f"no endpoint is available for {what}: the pool has no endpoints"
            return Fail(v.call_id, FailWhy.NO_ENDPOINT, message)
        reasons = tuple((ep.name, self._why_not(ep, c, now)) for ep in self._endpoints.values())
        by = ("by its deadline" if v.deadline is not None and now >= v.deadline
              else f"within {self.retry.max_unavailable_s:g} s")
        message = (f"no endpoint could take {what} {by}: "
                   + "; ".join(f"{name}: {why}" for name, why in reasons))
        event(log, logging.WARNING, "call.no_endpoint", call_id=v.call_id, query_id=v.query_id or None,
              kind=v.kind, error=message)
        return Fail(v.call_id, FailWhy.NO_ENDPOINT, message, reasons)

    def _why_not(self, ep: EndpointState, c: _Call, now: float) -> str:
        parts = ep.unavailable_because(now)
        if ep.name in c.excluded:
            parts.append(f"failed this call ({c.tried.get(ep.name, 'failed')})")
        return ", ".join(parts) or "available"

    def _running(self, call_id: CallId) -> tuple[_Call, EndpointState]:
        c = self._calls.get(call_id)
        if c is None or not c.running or c.endpoint is None:
            raise KeyError(f"call {call_id!r} holds no slot (never granted, or already ended)")
        return c, self.endpoint(c.endpoint)

    # -- observability ---------------------------------------------------------------------
    def snapshot(self, now: float) -> list[EndpointSnapshot]:
        """Live state of every endpoint (in flight, queued, EWMA TTFT/TPOT, errors, breaker)."""
        out = []
        for ep in self._endpoints.values():
            ep.stats.in_flight, ep.stats.queued = len(ep.running), len(ep.queue)
            out.append(ep.stats.snapshot(now, cooling_s=max(ep.cooling_until - now, 0.0)))
        return out

    def busy_seconds(self, now: float) -> dict[str, float]:
        """Loop seconds each live endpoint had at least one call running."""
        return {name: ep.busy_seconds(now) for name, ep in self._endpoints.items()}

    def where(self, call_id: CallId) -> tuple[str, str | None] | None:
        """``("queued" | "running", endpoint)`` or ``("parked", None)``; None if not live."""
        c = self._calls.get(call_id)
        if c is None:
            return None
        if c.endpoint is None:
            return "parked", None
        return ("running" if c.running else "queued"), c.endpoint

    def __len__(self) -> int:
        """Live calls."""
        return len(self._calls)

    def check(self, now: float) -> None:
        """Assert the invariants after an event at ``now`` (the stateful tests call this after
        every step); AssertionError names the one broken. See :mod:`fleetcall.router.invariants`."""
        from fleetcall.router.invariants import check_core
        check_core(self, now)
