"""The scheduler core's invariants, asserted by :meth:`SchedulerCore.check` (tests call it after
every event; it reads, never writes):

1. slots held at an endpoint are exactly its calls in flight, never more than its slots;
2. every live call is in exactly one place: queued at a live endpoint, running at a live or
   retiring one, or parked;
3. no call waits while a slot it may use is free: a queue holds calls only at an available
   endpoint with no free slot (or its prefill gate closed), and a call is parked only while no
   endpoint may take it, and only until its deadline or wait budget;
4. an unavailable endpoint is known as such (so the next wakeup covers it), and no timed
   transition is overdue;
5. a removed endpoint queues nothing and keeps only calls that were already running;
6. the snapshot agrees with the state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fleetcall.router.faults import CallId

if TYPE_CHECKING:
    from fleetcall.router.core import SchedulerCore

__all__ = ["check_core"]


def check_core(core: SchedulerCore, now: float) -> None:
    """Assert the module's invariants of ``core`` at ``now`` (AssertionError names the one)."""
    live, retiring = core._endpoints, core._retiring
    held: dict[str, set[CallId]] = {n: set() for n in (*live, *retiring)}
    queued: dict[str, set[CallId]] = {n: set() for n in live}
    parked = set()
    for call_id, c in core._calls.items():
        if c.endpoint is None:
            parked.add(call_id)
        else:
            (held if c.running else queued)[c.endpoint].add(call_id)
    assert parked == set(core._parked), f"parked calls {parked} != {set(core._parked)}"
    for name, ep in (*live.items(), *retiring.items()):
        assert set(ep.running) == held[name], (
            f"{name}: slots held by {sorted(map(str, ep.running))}, calls in flight "
            f"{sorted(map(str, held[name]))}")
        assert len(ep.running) <= ep.spec.slots, f"{name}: more calls than slots"
    _check_queues(core, queued, now)
    for name, ep in retiring.items():
        assert ep.removed and ep.running and not ep.queue, f"retiring {name} holds calls"
    for call_id in core._parked:
        c = core._calls[call_id]
        assert not core._usable(c, now), f"call {call_id} is parked while an endpoint is free"
        assert now < core._limit(c), f"call {call_id} is parked past its limit"
    for s in core.snapshot(now):
        ep = live[s.name]
        assert (s.in_flight, s.queued) == (len(ep.running), len(ep.queue)), f"{s.name}: snapshot"
    due = core.next_wakeup()
    assert due is None or due > now, f"a timed transition at {due} is overdue at {now}"


def _check_queues(core: SchedulerCore, queued: dict[str, set[CallId]], now: float) -> None:
    gate, chunk = core.dispatcher.prefill_slots, core.dispatcher.prefill_chunk_tokens
    for name, ep in core._endpoints.items():
        assert {e.call.call_id for e in ep.queue.ordered()} == queued[name], f"{name}: queue"
        assert ep.available(now) or name in core._down, f"{name} is down, not marked so"
        if queued[name]:
            assert ep.available(now), f"calls wait at {name}, which is unavailable"
            free = ep.free_slots() > 0 and ep.prefill_gate_open(now, gate, chunk)
            assert not free, f"calls wait at {name} while a slot there is free"
