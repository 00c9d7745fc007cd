"""Slot leases: a replica places calls without a round trip while the endpoints have room,
and the shared scheduler's guarantees hold (global balancing, no lease in a waiting call's way,
measurements learnt under the call's own view). In-process, virtual clock."""

from __future__ import annotations

import asyncio

from fleetcall.distributed.lease import QUIET_S, LeaseBook
from fleetcall.distributed.shared import Event, LeaseToken, SharedCore
from fleetcall.llm.base import complete
from fleetcall.router.actions import Grant, Outcome
from fleetcall.router.core import SchedulerCore
from fleetcall.router.faults import Fail
from fleetcall.router.state import EndpointSpec
from fleetcall.router.views import CallView
from tests.distributed.helpers import replicas
from tests.router.helpers import ask, now, vrun


def _call(n: object, query: str = "q", kind: str = "planner") -> CallView:
    return CallView(n, query, kind, 100, 10, None, 0.0, 0, 0.0, ())


def _lease(n: int) -> Event:
    return Event("submit", CallView(LeaseToken(n), "", "lease", 0, 1, None, 0.0, 1 << 30, 0.0, ()))


async def _seconds_per_call(lease_slots: int, calls: int = 20) -> tuple[float, list[float]]:
    """Sequential calls of one replica, 10 ms of round trip away from the scheduler."""
    async with replicas(1, shared=True, rtt_s=0.01, server_options={"lease_slots": lease_slots}) as herd:
        pool = herd.pools[0]
        await complete(pool, ask("warm", query="warm", max_tokens=1))
        await asyncio.sleep(0.1)                  # the leases granted meanwhile
        start = now()
        done = [await complete(pool, ask(f"c{i}", query=f"q{i}", max_tokens=1))
                for i in range(calls)]
        return (now() - start) / calls, [float(c.info["queue_s"]) for c in done]


def test_a_call_in_a_lease_waits_no_round_trip() -> None:
    leased, queued = vrun(_seconds_per_call(4))
    unleased, _ = vrun(_seconds_per_call(0))
    # Without leases every call waits a round trip (10 ms) for its grant; with them, none
    # does (the events reach the scheduler in the background).
    assert unleased - leased > 0.008
    assert queued == [0.0] * len(queued)


def test_leases_spread_by_global_state_and_none_blocks_a_waiting_call() -> None:
    """Replica r0 alone takes the free slots as leases; r1 joins and its calls find them held:
    r0 gives them back (told by its long poll) and r1's calls run, without waiting out any
    timeout, one on each endpoint (a call queued meanwhile is moved to the slot a returned
    lease frees: ``slack`` steals); when both pools close, nothing is left held."""
    async def main() -> tuple[list[str], list[float], int, int]:
        async with replicas(2, shared=True, names=("a", "b"), slots=1, policy="slack",
                            server_options={"lease_slots": 4}) as herd:
            server = herd.server
            assert server is not None
            await complete(herd.pools[0], ask("warm", query="w", max_tokens=1))
            await asyncio.sleep(0.1)
            held = len(server.shared.core.endpoint("a").running) + len(server.shared.core.endpoint("b").running)
            calls = [asyncio.create_task(complete(herd.pools[1], ask(f"c{i}", query=f"q{i}",
                                                                      max_tokens=20)))
                     for i in range(2)]
            done = await asyncio.gather(*calls)
            for pool in herd.pools:
                await pool.aclose()
            await asyncio.sleep(0.1)
            return ([str(c.info["endpoint"]) for c in done], [float(c.info["queue_s"]) for c in done],
                    held, len(server.shared.core))

    endpoints, waits, held, left = vrun(main())
    assert held >= 1                              # r0 held the free slot(s) as leases
    assert sorted(endpoints) == ["a", "b"]        # r1's two calls: one on each endpoint
    assert max(waits) < 0.5
    assert left == 0                              # the closing pools gave their leases back


def test_shared_core_leases_never_queue_and_a_call_in_one_is_learnt_as_itself() -> None:
    shared = SharedCore(SchedulerCore("least-busy"))
    shared.hello("r", 1, [EndpointSpec("a", slots=2)], 0.0)
    assert shared.lease_size("r", 0.0, 4) == 2
    shared.apply("r", 1, [_lease(0), _lease(1), _lease(2)], 0.0)
    mail = shared.take("r")
    assert [type(a).__name__ for a in mail] == ["Grant", "Grant", "Fail"]  # the third: no slot
    assert len(shared.core) == 2 and shared.idle_leases("r") == 2
    # A call placed in lease 0 reports it; its events name it by its own id from then on.
    shared.apply("r", 1, [Event("adopt", LeaseToken(0), _call(7, "q7", "joiner"))], 0.5)
    held = shared.core.endpoint("a").running[("r", LeaseToken(0))]
    assert (held.query_id, held.prefill_tokens) == ("q7", 100)  # its slot held as the call's
    shared.apply("r", 1, [Event("started", 7), Event("first_token", 7),
                          Event("finished", 7, Outcome(0.1, 0.01, 0.5, 33))], 1.0)
    assert shared.ignored == 0 and shared.idle_leases("r") == 1
    assert dict(shared.core.output_lengths.kinds()).get("joiner") == 33
    assert "lease" not in dict(shared.core.output_lengths.kinds())
    # A call waits (two calls for the one slot left): no lease for anyone, none granted.
    shared.hello("s", 1, [], 1.0)
    shared.apply("s", 1, [Event("submit", _call(1)), Event("submit", _call(2))], 1.0)
    assert shared.waiting() and shared.lease_size("r", 1.0, 4) == 0
    shared.apply("r", 1, [_lease(3)], 1.0)
    assert [type(a) for a in shared.take("r")] == [Fail]
    # r gives back its idle lease 1: s's waiting call gets the slot.
    shared.apply("r", 1, [Event("cancelled", LeaseToken(1))], 2.0)
    assert [a.call_id for a in shared.take("s") if isinstance(a, Grant)] == [1, 2]


def test_a_retried_call_in_a_lease_comes_back_under_its_own_id() -> None:
    from fleetcall.router.faults import Failure, FaultKind
    shared = SharedCore(SchedulerCore("least-busy"))
    shared.hello("r", 1, [EndpointSpec("a", slots=1), EndpointSpec("b", slots=1)], 0.0)
    shared.apply("r", 1, [_lease(0)], 0.0)
    [grant] = shared.take("r")
    assert isinstance(grant, Grant) and grant.call_id == LeaseToken(0)
    shared.apply("r", 1, [Event("adopt", LeaseToken(0), _call(5)), Event("started", 5),
                          Event("failed", 5, Failure(FaultKind.SERVER_ERROR, "500", 500))], 1.0)
    [retry] = shared.take("r")
    assert isinstance(retry, Grant) and retry.call_id == 5 and retry.attempt == 2
    shared.apply("r", 1, [Event("cancelled", 5)], 2.0)
    assert len(shared.core) == 0 and shared.ignored == 0


def test_a_lease_book_asks_up_to_its_size_and_gives_back_idle_ones_past_it() -> None:
    book = LeaseBook()
    book.size = 3
    asked = book.plan(0.0)
    assert [e.op for e in asked] == ["submit"] * 3
    tokens = [e.subject.call_id for e in asked]
    assert book.granted(tokens[0], "a") and book.granted(tokens[1], "b")
    book.refused(tokens[2], 0.0)
    assert book.held == 2
    book.size = 1
    assert [(e.op, e.subject) for e in book.plan(0.0)] == [("cancelled", tokens[0])]
    assert book.take() == (tokens[1], "b") and book.take() is None
    # refused at 0.0 (above): no asking again before QUIET_S, then up to the size
    book.size = 2
    assert book.plan(QUIET_S / 2) == []
    assert [e.op for e in book.plan(QUIET_S)] == ["submit", "submit"]
