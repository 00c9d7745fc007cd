"""The local queue of one endpoint: which waiting call runs next when a slot frees up.

Pure decision code: no clock of its own (every decision takes ``now``, the loop's time, which
must not go backwards), no I/O. Three orders, one :class:`Discipline` each:

``fcfs``
    First come, first served by ``enqueued_at`` (ties: push order). Deadlines are ignored.
    The vLLM baseline of HEXGEN-TEXT2SQL.

``urgency`` (ours)
    Most urgent first, urgency = -slack, where for a call with a deadline::

        slack(now) = deadline - now - service_s - remaining_work_s

    ``service_s`` is the call's predicted service time here (given at push) and
    ``remaining_work_s`` the predicted work of its query after it. Aging makes a call's urgency
    grow by ``aging_per_s`` per second waited, so the served-first call minimizes::

        slack(now) - aging_per_s * (now - enqueued_at)
          = [deadline - service_s - remaining_work_s + aging_per_s * enqueued_at]
            - (1 + aging_per_s) * now

    The bracket is fixed at push time and the rest is common to all calls, so the ORDER never
    depends on ``now``: a heap keyed by the bracket serves it (pop is O(log n)). Aging is what
    lets a call overtake later calls with earlier deadlines: it wins once
    ``aging_per_s * (its wait advantage) > (its deadline disadvantage)``, so a stream of urgent
    newcomers cannot starve it.

``hexgen``
    HEXGEN-TEXT2SQL's urgency-guided queue, as its public simulator computes it
    (Relaxed-System-Lab/Hexgen-Flow, ``GenerationRequest.update_urgency``). A call is given a
    share of its query's remaining time budget in proportion to its own predicted time::

        budget  = (deadline - enqueued_at) * service_s / (service_s + remaining_work_s)
        urgency = (now - enqueued_at) + service_s - budget      # highest first

    i.e. the key ``enqueued_at + budget - service_s`` (aging, if set, is added as for
    ``urgency``). Differences from the paper, all forced by what a pool knows: ``service_s`` is
    this endpoint's prediction, not the step's average over the cluster's GPU types;
    ``remaining_work_s`` is the query's predicted remaining critical path, not the sum of the
    standard workflow's remaining steps; the paper's extra bonus for a call whose step template
    is already running (prefix reuse) is left to the dispatcher's prefix affinity.

Tiers, for both deadline orders (the full key is ``(tier, ...)``, lower first):

0. calls with a deadline that can still meet it, by the key above, then ``priority``;
1. *hopeless* calls -- ``deadline - service_s - remaining_work_s < now`` (slack < 0) at pop
   time -- when ``demote_hopeless``: served after every call that can still make it, never
   dropped; among themselves by the same key. A call, once hopeless, stays so (``now`` only
   grows), so demotion is a one-way move: a second heap keyed by the latest start time
   ``deadline - service_s - remaining_work_s`` finds the calls that just became hopeless, each
   moved once, and pop stays O(log n) amortized;
2. calls without a deadline, by ``priority`` (lower first, as in vLLM), then ``enqueued_at``.
   With ``no_deadline_slack_s`` set, such a call is instead given a virtual deadline that
   leaves it that much slack on arrival (``enqueued_at + no_deadline_slack_s + service_s +
   remaining_work_s``; tier 0, never hopeless), so aging also protects best-effort calls from
   a steady stream of deadline calls.

Ties within a key are broken by push order.
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, NamedTuple, get_args

from fleetcall.router.views import CallId, CallView

QueueOrder = Literal["fcfs", "urgency", "hexgen"]
QUEUE_ORDERS: tuple[str, ...] = get_args(QueueOrder)

# Tiers of the full sort key (see the module docstring).
LIVE_TIER, HOPELESS_TIER, NO_DEADLINE_TIER = 0, 1, 2

SortKey = tuple[float, ...]  # (tier, ...): compared element-wise, lower served first


class QueuedCall(NamedTuple):
    """A waiting call and its predicted service time at this endpoint, seconds."""

    call: "CallView"
    service_s: float


@dataclass(frozen=True, slots=True)
class Discipline:
    """An order and its knobs: computes the sort key the queue serves by.

    Also used by the dispatcher to tell which queued calls a new call would wait behind.
    """

    order: QueueOrder = "urgency"
    aging_per_s: float = 0.1                # urgency seconds gained per second waited
    demote_hopeless: bool = True            # serve calls that can still make it first
    no_deadline_slack_s: float | None = None  # slack on arrival of calls without a deadline

    def __post_init__(self) -> None:
        if self.order not in QUEUE_ORDERS:
            raise ValueError(f"unknown queue order {self.order!r}; "
                             f"valid: {', '.join(QUEUE_ORDERS)}")
        if not (self.aging_per_s >= 0 and math.isfinite(self.aging_per_s)):
            raise ValueError(f"aging_per_s must be a finite number >= 0, got {self.aging_per_s}")
        if self.no_deadline_slack_s is not None and not self.no_deadline_slack_s >= 0:
            raise ValueError(f"no_deadline_slack_s must be >= 0, got {self.no_deadline_slack_s}")

    def latest_start(self, call: "CallView", service_s: float) -> float | None:
        """Latest time the call can start and its query still meet the deadline (None: no
        deadline). Hopeless iff this is before ``now``."""
        if call.deadline is None:
            return None
        return call.deadline - service_s - call.remaining_work_s

    def hopeless(self, call: "CallView", service_s: float, now: float) -> bool:
        """True iff this discipline demotes the call at ``now`` (its slack is negative)."""
        if not self.demote_hopeless or self.order == "fcfs":
            return False
        latest = self.latest_start(call, service_s)
        return latest is not None and latest < now

    def key(self, call: "CallView", service_s: float, now: float) -> SortKey:
        """The full sort key of a call at ``now``; the queue serves the smallest first (ties in
        push order). This is the documented order that pop follows."""
        static = self.static_key(call, service_s)
        if static[0] == LIVE_TIER and self.hopeless(call, service_s, now):
            return (HOPELESS_TIER, *static[1:])
        return static

    def static_key(self, call: "CallView", service_s: float) -> SortKey:
        """The key before any demotion: fixed at push time (what the heap holds)."""
        if self.order == "fcfs":
            return (LIVE_TIER, call.enqueued_at)
        deadline = call.deadline
        if deadline is None:
            if self.no_deadline_slack_s is None:
                return (NO_DEADLINE_TIER, call.priority, call.enqueued_at)
            deadline = call.enqueued_at + self.no_deadline_slack_s + service_s + \
                call.remaining_work_s  # slack at arrival = no_deadline_slack_s
        aging = self.aging_per_s * call.enqueued_at
        if self.order == "urgency":
            return (LIVE_TIER, deadline - service_s - call.remaining_work_s + aging, call.priority)
        share = service_s + call.remaining_work_s
        budget = (deadline - call.enqueued_at) * (service_s / share if share > 0 else 1.0)
        return (LIVE_TIER, call.enqueued_at + budget - service_s + aging, call.priority)


_LIVE, _HOPELESS, _GONE = 0, 1, 2  # states of an _Entry


@dataclass(slots=True, eq=False)
class _Entry:
    call: "CallView"
    service_s: float
    seq: int                    # push order: the final tie-break
    key: SortKey                # static key (tier 0 or 2), or the hopeless key once demoted
    latest_start: float | None  # set iff the call can be demoted
    state: int = _LIVE


_HeapItem = tuple[SortKey, int, _Entry]  # (key, seq, entry): seq is unique, entries never compared


class LocalQueue:
    """Calls waiting for a slot at one endpoint, served in the order of a :class:`Discipline`.

    Example (urgency order: the call with less slack goes first)::

        >>> from fleetcall.router.views import CallView
        >>> q = LocalQueue("urgency")
        >>> relaxed = CallView(1, "q1", "planner", 100, 10, deadline=60.0, remaining_work_s=0.0,
        ...                    priority=0, enqueued_at=0.0, prefix_hashes=())
        >>> tight = CallView(2, "q2", "planner", 100, 10, deadline=20.0, remaining_work_s=5.0,
        ...                  priority=0, enqueued_at=1.0, prefix_hashes=())
        >>> q.push(relaxed, 1.0); q.push(tight, 1.0)
        >>> [c.call_id for c in q.snapshot(now=2.0)[0]], q.pop(now=2.0).call_id, len(q)
        ([2, 1], 2, 1)

    Invariants: every queued call has exactly one entry in ``_entries`` and is in the live or
    the hopeless heap (by its state); heaps may also hold stale items (removed, served or
    demoted entries), skipped lazily and purged when they outnumber the live ones. The serve
    order is also kept whole, as three parallel lists sorted by ``(key, seq)`` (``_order``,
    ``_calls``, ``_services``), so that a snapshot -- taken for every endpoint at every
    placement -- copies lists instead of sorting the queue.
    """

    __slots__ = ("discipline", "_entries", "_live", "_hopeless", "_by_latest", "_seq",
                 "_last_now", "_order", "_calls", "_services", "_snapshot")

    def __init__(self, order: QueueOrder = "urgency", *, aging_per_s: float = 0.1,
                 demote_hopeless: bool = True, no_deadline_slack_s: float | None = None) -> None:
        self.discipline = Discipline(order, aging_per_s, demote_hopeless, no_deadline_slack_s)
        self._entries: dict[CallId, _Entry] = {}  # call_id -> its entry, for every queued call
        self._live: list[_HeapItem] = []        # tiers 0 and 2
        self._hopeless: list[_HeapItem] = []    # tier 1 (demoted)
        # (latest start, seq, entry) of demotable calls not yet demoted: min first
        self._by_latest: list[tuple[float, int, _Entry]] = []
        self._seq = 0
        self._last_now = -math.inf  # latest `now` seen: the time demotions are up to date for
        # Every queued call in serve order: its (key, seq), call and service time, same index.
        self._order: list[tuple[SortKey, int]] = []
        self._calls: list[CallView] = []
        self._services: list[float] = []
        # snapshot() of the queue as it is (None: changed since the last one)
        self._snapshot: tuple[tuple[CallView, ...], tuple[float, ...]] | None = None

    @classmethod
    def of(cls, discipline: Discipline) -> "LocalQueue":
        """A queue serving in the order of ``discipline``."""
        return cls(discipline.order, aging_per_s=discipline.aging_per_s,
                   demote_hopeless=discipline.demote_hopeless,
                   no_deadline_slack_s=discipline.no_deadline_slack_s)

    @property
    def order(self) -> QueueOrder:
        return self.discipline.order

    def key(self, call: "CallView", service_s: float, now: float) -> SortKey:
        """The documented sort key (see :meth:`Discipline.key`)."""
        return self.discipline.key(call, service_s, now)

    def push(self, call: "CallView", predicted_service_s: float) -> None:
        """Add a waiting call with its predicted service time here, seconds."""
        if call.call_id in self._entries:
            raise ValueError(f"call {call.call_id} is already queued")
        d = self.discipline
        static = d.static_key(call, predicted_service_s)
        demotable = d.demote_hopeless and d.order != "fcfs" and static[0] == LIVE_TIER
        latest = d.latest_start(call, predicted_service_s) if demotable else None
        entry = _Entry(call, predicted_service_s, self._seq, static, latest)
        self._seq += 1
        self._entries[call.call_id] = entry
        if latest is not None and latest < self._last_now:
            self._demote_entry(entry, indexed=False)
        else:
            self._index(entry)
            heapq.heappush(self._live, (static, entry.seq, entry))
            if latest is not None:
                heapq.heappush(self._by_latest, (latest, entry.seq, entry))

    def pop(self, now: float) -> "CallView | None":
        """Take the call to serve next (None if empty)."""
        item = self.pop_entry(now)
        return None if item is None else item.call

    def pop_entry(self, now: float) -> QueuedCall | None:
        """Take the call to serve next with its predicted service time (None if empty)."""
        entry = self._head(now)
        if entry is None:
            return None
        heap = self._hopeless if entry.state == _HOPELESS else self._live
        heapq.heappop(heap)
        self._forget(entry)
        return QueuedCall(entry.call, entry.service_s)

    def peek(self, now: float) -> "CallView | None":
        """The call :meth:`pop` would return at ``now``, left in the queue."""
        entry = self._head(now)
        return None if entry is None else entry.call

    def remove(self, call_id: CallId) -> bool:
        """Take a call out wherever it is (stolen, cancelled); False if it was not queued."""
        entry = self._entries.get(call_id)
        if entry is None:
            return False
        self._forget(entry)
        self._maybe_compact()
        return True

    def service_s(self, call_id: CallId) -> float:
        """Predicted service time, seconds, of a queued call (KeyError if not queued)."""
        return self._entries[call_id].service_s

    def snapshot(self, now: float) -> tuple[tuple["CallView", ...], tuple[float, ...]]:
        """The queued calls in serve order at ``now`` and their predicted service times: the
        ``queued`` and ``queued_service_s`` of an
        :class:`~fleetcall.router.dispatcher.EndpointView`."""
        self._demote(now)
        if self._snapshot is None:
            self._snapshot = tuple(self._calls), tuple(self._services)
        return self._snapshot

    def ordered(self, now: float | None = None) -> list[QueuedCall]:
        """Every queued call in serve order, at ``now`` (default: the latest time seen)."""
        if now is not None:
            self._demote(now)
        return [QueuedCall(c, s) for c, s in zip(self._calls, self._services)]

    def __iter__(self) -> Iterator["CallView"]:
        """The queued calls in serve order as of the latest ``now`` seen (a copy: safe to
        modify the queue while iterating)."""
        return iter([item.call for item in self.ordered()])

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, call_id: object) -> bool:
        return call_id in self._entries

    def _head(self, now: float) -> _Entry | None:
        """The entry to serve next, after demotions at ``now``; stale heap tops dropped."""
        self._demote(now)
        live = _top(self._live, _LIVE)
        hopeless = _top(self._hopeless, _HOPELESS)
        if live is None or hopeless is None:
            return live or hopeless
        return live if (live.key, live.seq) < (hopeless.key, hopeless.seq) else hopeless

    def _demote(self, now: float) -> None:
        """Move every call whose latest start is before ``now`` to the hopeless tier."""
        if now > self._last_now:
            self._last_now = now
        by_latest = self._by_latest
        while by_latest and by_latest[0][0] < now:
            entry = heapq.heappop(by_latest)[2]
            if entry.state == _LIVE:
                self._demote_entry(entry)
        self._maybe_compact()

    def _demote_entry(self, entry: _Entry, *, indexed: bool = True) -> None:
        if indexed:
            self._unindex(entry)
        entry.state = _HOPELESS
        entry.key = (HOPELESS_TIER, *entry.key[1:])
        heapq.heappush(self._hopeless, (entry.key, entry.seq, entry))
        self._index(entry)

    def _forget(self, entry: _Entry) -> None:
        entry.state = _GONE
        del self._entries[entry.call.call_id]
        self._unindex(entry)

    def _index(self, entry: _Entry) -> None:
        """Put ``entry`` in its place in the serve order."""
        item = (entry.key, entry.seq)
        at = bisect.bisect_left(self._order, item)
        self._order.insert(at, item)
        self._calls.insert(at, entry.call)
        self._services.insert(at, entry.service_s)
        self._snapshot = None

    def _unindex(self, entry: _Entry) -> None:
        """Take ``entry`` out of the serve order (found by its unique ``(key, seq)``)."""
        at = bisect.bisect_left(self._order, (entry.key, entry.seq))
        del self._order[at], self._calls[at], self._services[at]
        self._snapshot = None

    def _maybe_compact(self) -> None:
        """Rebuild the heaps without stale items once those dominate (keeps memory O(n))."""
        size = len(self._live) + len(self._hopeless) + len(self._by_latest)
        if size <= 3 * len(self._entries) + 32:
            return
        entries = self._entries.values()
        self._live = [(e.key, e.seq, e) for e in entries if e.state == _LIVE]
        self._hopeless = [(e.key, e.seq, e) for e in entries if e.state == _HOPELESS]
        self._by_latest = [(e.latest_start, e.seq, e) for e in entries
                           if e.state == _LIVE and e.latest_start is not None]
        heapq.heapify(self._live)
        heapq.heapify(self._hopeless)
        heapq.heapify(self._by_latest)


def _top(heap: list[_HeapItem], state: int) -> _Entry | None:
    """The first entry of ``heap`` still in ``state``, dropping stale tops."""
    while heap:
        entry = heap[0][2]
        if entry.state == state:
            return entry
        heapq.heappop(heap)
    return None
