"""The scheduler core's state of one endpoint: slots, local queue, predictor, breaker, cooldown.

Plain bookkeeping with no clock of its own (every method takes ``now``, loop seconds) and no
I/O; :class:`~fleetcall.router.core.SchedulerCore` owns one :class:`EndpointState` per endpoint
and is the only writer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from fleetcall.router.faults import CallId, FaultKind, describe_streak, in_seconds
from fleetcall.router.health import CircuitBreaker, EndpointStats
from fleetcall.router.predict import PrefixIndex, ServicePredictor
from fleetcall.router.queue import LocalQueue
from fleetcall.router.views import CallView, EndpointView

__all__ = ["EndpointSpec", "EndpointState", "Running"]

OVERRUN_FLOOR_S = 0.01  # a running call past its predicted end still holds its slot a little
LOAD_WINDOW_S = 30.0    # time constant of an endpoint's measured prefill load


@dataclass(frozen=True, slots=True)
class EndpointSpec:
    """What the core needs to know of an endpoint (picklable data)."""

    name: str
    slots: int                      # calls it runs at once (>= 1)
    gpu: str = "unknown"            # GPU catalog name, or "unknown"
    model: str | None = None        # model catalog name for the predictor (None: unknown)
    tp: int = 1                     # tensor-parallel degree
    prefix_capacity_blocks: int = 12_500  # prefix blocks its cache probably holds
    twin_key: str = ""              # endpoints with equal keys declare the same hardware,
                                    # model and parallelism ("": no twins)
    cost_per_hour: float | None = None  # what an hour of the endpoint costs (None: unknown)

    def __post_init__(self) -> None:
        if self.slots < 1 or self.tp < 1 or self.prefix_capacity_blocks < 1:
            raise ValueError(f"endpoint {self.name!r}: slots, tp and prefix capacity must be >= 1")


@dataclass(slots=True)
class Running:
    """A call holding a slot at an endpoint."""

    end: float                # predicted finish, loop time (after the prefill owed ahead of it)
    prefill_s: float          # predicted seconds to its first token, alone
    granted_at: float         # loop time the slot was granted
    backlog_s: float = 0.0    # predicted prefill owed to calls ahead of it when granted
    decoding: bool = False    # True once its first token came back
    batch: int = 0            # calls running here when it started (for the predictor)
    prefill_tokens: int = 1   # prompt tokens it computes here (uncached; at least one)
    prefill_end: float = math.inf  # predicted loop time of its first token: granted_at +
                                   # backlog_s + prefill_s (when it stops holding the gate)
    query_id: str = ""              # the query it belongs to ("": none given)
    decode_at: float | None = None  # loop time its first token came back (None: not yet)
    busy_at_decode: float = 0.0     # the endpoint's prefill_busy_at() then
    latest_end: float = math.inf    # loop time by which it must end for its query to keep its
                                    # deadline (deadline - the query's work after it; inf: none)


def latest_end(call: CallView) -> float:
    """Loop time by which ``call`` must end for its query to keep its deadline: the deadline
    less the query's predicted work after it (inf without a deadline)."""
    if call.deadline is None:
        return math.inf
    return call.deadline - call.remaining_work_s


@dataclass(slots=True)
class EndpointState:
    """One endpoint as the core sees it. Invariants (checked by ``SchedulerCore.check``):
    ``len(running) <= spec.slots``; ``running`` holds exactly the calls granted here and not
    yet ended; ``queue`` holds exactly the calls waiting here; a removed endpoint queues
    nothing and is granted nothing."""

    spec: EndpointSpec
    predictor: ServicePredictor
    prefixes: PrefixIndex
    queue: LocalQueue
    stats: EndpointStats
    running: dict[CallId, Running] = field(default_factory=dict)  # call id -> its slot
    removed: bool = False
    cooling_until: float = -math.inf   # loop time a rate limit ends (Retry-After)
    cooling_status: int | str | None = None  # HTTP status of the answer that set it, or the
                                             # pool's own limit ("rpm", "tpm")
    streak: dict[FaultKind, int] = field(default_factory=dict)  # breaker faults in a row, by kind
    probe_call: CallId | None = None   # the call a half-open breaker let through, until it ends
    busy_since: float | None = None    # loop time it last went from idle to busy
    busy_s: float = 0.0                # loop seconds with at least one call running
    prefill_load: float = 0.0          # decayed fraction of recent time with a prompt in prefill
    prefill_tokens: float = 0.0        # EWMA of the uncached prompt tokens of calls granted here
    load_at: float = 0.0               # loop time prefill_load was last brought up to date
    prefill_busy_s: float = 0.0        # loop seconds with a prompt in prefill, up to load_at

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def breaker(self) -> CircuitBreaker:
        return self.stats.breaker

    def available(self, now: float) -> bool:
        """Not removed, not cooling down, and its breaker closed or ready for a probe."""
        return (not self.removed and now >= self.cooling_until
                and self.stats.breaker.can_allow(now))

    def available_at(self, now: float) -> float:
        """Earliest loop time it may be available (``now`` if it is; inf once removed)."""
        if self.removed:
            return math.inf
        at = max(now, self.cooling_until)
        breaker = self.stats.breaker
        if not breaker.can_allow(at):
            probe = breaker.probe_at()
            at = max(at, probe if probe is not None else at)
        return at

    def unavailable_because(self, now: float) -> list[str]:
        """Why no call may go here now, in words (empty: it is available, or removed)."""
        parts = []
        if now < self.cooling_until:
            status = f" ({self.cooling_status})" if self.cooling_status else ""
            parts.append(f"rate-limited until {in_seconds(self.cooling_until - now)}{status}")
        if self.breaker.state(now) == "open":
            streak = describe_streak(self.streak) if self.streak else "failures"
            probe = self.breaker.probe_at()
            parts.append(f"breaker open after {streak}, probe at "
                         f"{in_seconds((probe if probe is not None else now) - now)}")
        elif self.probe_call is not None:
            parts.append("breaker half-open, its probe call is in flight")
        return parts

    def view(self, now: float, available: bool, *, prefill: bool = True) -> EndpointView:
        """What the dispatcher sees of this endpoint at ``now``; ``prefill`` False leaves the
        prefill fields and ``running_queries`` at their defaults (for a policy that reads
        neither: see :func:`~fleetcall.router.dispatcher.reads_prefill_state`)."""
        queued, services = self.queue.snapshot(now)
        running = self.running.values()
        floor = OVERRUN_FLOOR_S  # each remainder: max(r.end - now, floor)
        remaining = tuple([floor if floor > (left := r.end - now) else left for r in running])
        if not prefill:
            return EndpointView(
                name=self.name, slots=self.spec.slots, running=remaining,
                cost_per_hour=self.spec.cost_per_hour, queued=queued, predictor=self.predictor,
                prefixes=self.prefixes, available=available, queued_service_s=services,
                queued_order=(self.queue.discipline, now))
        waiting = [r for r in running if not r.decoding]  # one pass for backlog and load
        return EndpointView(
            name=self.name, slots=self.spec.slots, running=remaining,
            running_queries=tuple([r.query_id for r in running]),
            running_latest_end=tuple([r.latest_end for r in running]),
            cost_per_hour=self.spec.cost_per_hour,
            queued=queued, predictor=self.predictor, prefixes=self.prefixes, available=available,
            queued_service_s=services, prefill_backlog_s=self._backlog_of(waiting, now),
            prefill_load=self._load_at(bool(waiting), now),
            typical_prefill_tokens=int(self.prefill_tokens),
            queued_order=(self.queue.discipline, now))

    def free_slots(self) -> int:
        return self.spec.slots - len(self.running)

    def in_prefill(self) -> int:
        """Running calls without a first token yet."""
        return sum(1 for r in self.running.values() if not r.decoding)

    def gate_holders(self, now: float) -> list[Running]:
        """Running calls that hold the prefill gate at ``now``: no first token yet, and their
        predicted prefill not over (a call that overruns its prediction stops holding it)."""
        return [r for r in self.running.values() if not r.decoding and r.prefill_end > now]

    def prefill_gate_open(self, now: float, chunks: int | None, chunk_tokens: int) -> bool:
        """True iff a queued call may be sent now as far as prefill goes.

        The engine computes prefill ``chunk_tokens`` at a time, one chunk after another: the
        gate lets prompts in until those in prefill fill ``chunks`` chunks (each holding its
        uncached tokens, a long prompt at most one chunk), so prompts that would share a chunk
        go together and a long one holds the next back. A holder lets go at its first token
        or when its predicted prefill is over, whichever comes first: holding a prompt never
        costs more than the prefill ahead of it is predicted to take. ``chunks`` None: no gate.
        """
        if chunks is None:
            return True
        held = sum([min(r.prefill_tokens, chunk_tokens) for r in self.gate_holders(now)])
        return held < chunks * chunk_tokens

    def prefill_gate_opens_at(self, now: float, chunks: int | None,
                              chunk_tokens: int) -> float | None:
        """Loop time the gate, closed at ``now``, opens by prediction alone (holders' predicted
        prefills running out); None if it is open (or there is no gate)."""
        if chunks is None:
            return None
        holders = self.gate_holders(now)
        held = sum([min(r.prefill_tokens, chunk_tokens) for r in holders])  # ints: any order
        limit = chunks * chunk_tokens
        if held < limit:
            return None
        holders.sort(key=lambda r: r.prefill_end)
        for r in holders:
            held -= min(r.prefill_tokens, chunk_tokens)
            if held < limit:
                return r.prefill_end
        raise AssertionError("unreachable: with every holder gone the gate is open")

    def prefill_load_at(self, now: float) -> float:
        """Fraction of the last ~:data:`LOAD_WINDOW_S` seconds this endpoint had a prompt in
        prefill: how often a decode step here shares its iteration with a prefill chunk."""
        return self._load_at(self._any_in_prefill(), now)

    def _load_at(self, busy_now: bool, now: float) -> float:
        """:meth:`prefill_load_at`, told whether a prompt is in prefill now."""
        busy = 1.0 if busy_now else 0.0
        keep = math.exp(-max(now - self.load_at, 0.0) / LOAD_WINDOW_S)
        return self.prefill_load * keep + busy * (1.0 - keep)

    def note_prefill_change(self, now: float) -> None:
        """Bring :attr:`prefill_load` up to ``now``; call just before the prefill state changes."""
        busy = self._any_in_prefill()
        # prefill_busy_at(now), prefill_load_at(now): both from the state before this change
        self.prefill_busy_s += max(now - self.load_at, 0.0) if busy else 0.0
        self.prefill_load = self._load_at(busy, now)
        self.load_at = now

    def _any_in_prefill(self) -> bool:
        """True iff a running call has no first token yet."""
        for r in self.running.values():
            if not r.decoding:
                return True
        return False

    def prefill_busy_at(self, now: float) -> float:
        """Loop seconds, ever, this endpoint had a prompt in prefill, up to ``now``: the
        difference over a call's decode is how long other prompts' prefill shared it."""
        busy = self._any_in_prefill()
        return self.prefill_busy_s + (max(now - self.load_at, 0.0) if busy else 0.0)

    def decode_prefill_load(self, running: Running, now: float) -> float:
        """Fraction of ``running``'s decode so far (first token to ``now``) that other prompts
        were in prefill here (0 if it has not decoded for any time)."""
        if running.decode_at is None or now <= running.decode_at:
            return 0.0
        shared = self.prefill_busy_at(now) - running.busy_at_decode
        return min(max(shared / (now - running.decode_at), 0.0), 1.0)

    def prefill_backlog_s(self, now: float) -> float:
        """Predicted prefill seconds still owed to running calls without a first token: the
        engine computes their prompt tokens together, a chunk an iteration, from the earliest
        grant on -- the compute of that many tokens, without the fixed per-request cost that
        each call pays in parallel (so prompts that share a chunk owe about one iteration, not
        a round trip each). At least a little while any is waiting."""
        return self._backlog_of([r for r in self.running.values() if not r.decoding], now)

    def _backlog_of(self, waiting: list[Running], now: float) -> float:
        """:meth:`prefill_backlog_s` of the running calls ``waiting`` for a first token."""
        if not waiting:
            return 0.0
        tokens = sum([r.prefill_tokens for r in waiting])
        predict = self.predictor.predict
        compute = predict(tokens, 1).ttft_s - predict(1, 1).ttft_s
        owed = compute - (now - min([r.granted_at for r in waiting]))
        return max(owed, OVERRUN_FLOOR_S)

    def hold(self, call: CallView, service_s: float, now: float) -> Running:
        """Give ``call`` a slot here (the caller checked one is free)."""
        if not self.running:
            self.busy_since = now
        cached = min(self.prefixes.match(call.prefix_hashes) * call.block_tokens,
                     call.prompt_tokens)
        prefill = self.predictor.predict(call.prompt_tokens, call.output_tokens,
                                         cached_tokens=cached).ttft_s
        self.note_prefill_change(now)
        uncached = call.prompt_tokens - cached
        self.prefill_tokens = (uncached if self.prefill_tokens == 0
                               else self.prefill_tokens + 0.1 * (uncached - self.prefill_tokens))
        backlog = self.prefill_backlog_s(now)
        running = Running(now + backlog + service_s, prefill, now, backlog,
                          prefill_tokens=max(uncached, 1), prefill_end=now + backlog + prefill,
                          query_id=call.query_id, latest_end=latest_end(call))
        self.running[call.call_id] = running
        return running

    def release(self, call_id: CallId, now: float) -> Running:
        """Take a call's slot back (KeyError if it holds none here)."""
        self.note_prefill_change(now)
        running = self.running.pop(call_id)
        if not self.running and self.busy_since is not None:
            self.busy_s += now - self.busy_since
            self.busy_since = None
        return running

    def busy_seconds(self, now: float) -> float:
        return self.busy_s + (now - self.busy_since if self.busy_since is not None else 0.0)

    def cool_down(self, until: float, status: int | str | None) -> bool:
        """Stay unavailable until ``until``; a later time extends, an earlier one never
        shortens. True iff the cooldown grew."""
        if until <= self.cooling_until:
            return False
        self.cooling_until, self.cooling_status = until, status
        return True
