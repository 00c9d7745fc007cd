"""Replicas sharing one scheduler, in-process on the virtual clock (no Ray needed).

The shared server and the replicas' core client are the code the Ray actor runs; here the
channel is in-process, so every interleaving is deterministic: balancing by global state, a
grant caused by another replica's event, clock conversion, losing the scheduler mid-run (no
call lost, placement goes local, then rejoins), a restarted scheduler, leases.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from fleetcall.distributed.server import SchedulerServer
from fleetcall.distributed.shared import Event, SharedCore
from fleetcall.errors import ConfigError
from fleetcall.llm.base import complete
from fleetcall.router.actions import Grant, Outcome
from fleetcall.router.core import SchedulerCore
from fleetcall.router.state import EndpointSpec
from fleetcall.router.views import CallView
from tests.distributed.helpers import replicas
from tests.router.helpers import ask, now, vrun


def _call(n: int, query: str = "q") -> CallView:
    return CallView(n, query, "planner", 100, 10, None, 0.0, 0, 0.0, ())


async def _endpoints_of_first_calls(shared: bool) -> list[str]:
    """Two replicas each send one long call at the same time to two idle endpoints."""
    async with replicas(2, shared=shared) as herd:
        calls = [asyncio.create_task(complete(pool, ask(f"r{i}", query=f"q{i}", max_tokens=200)))
                 for i, pool in enumerate(herd.pools)]
        done = await asyncio.gather(*calls)
        return [str(c.info["endpoint"]) for c in done]


def test_replicas_sharing_a_scheduler_spread_by_global_state() -> None:
    # Alone, each replica sees both endpoints idle and takes the same one (the herd).
    assert vrun(_endpoints_of_first_calls(shared=False)) == ["a", "a"]
    # Sharing one core, the second replica sees the first one's call and takes the other.
    assert sorted(vrun(_endpoints_of_first_calls(shared=True))) == ["a", "b"]


def test_a_slot_freed_by_one_replica_is_granted_to_another() -> None:
    async def main() -> tuple[float, float, str]:
        async with replicas(2, shared=True, names=("a",), rtt_s=0.001) as herd:
            first = asyncio.create_task(complete(herd.pools[0], ask("x", query="q0", max_tokens=100)))
            await asyncio.sleep(0.05)
            second = await complete(herd.pools[1], ask("y", query="q1", max_tokens=10))
            done = await first
            assert done.info["endpoint"] == "a"
            return float(done.info["total_s"]), float(second.info["queue_s"]), str(second.info["endpoint"])

    total, queued, endpoint = vrun(main())
    # the second replica's call waited for the first one's slot: it was queued ~its whole run
    assert endpoint == "a" and queued == pytest.approx(total - 0.05, abs=0.01)


def test_deadlines_cross_to_the_servers_clock() -> None:
    async def main() -> tuple[float, float]:
        async with replicas(1, shared=True, names=("a",), server_clock=lambda: now() + 1000.0) as herd:
            pool = herd.pools[0]
            busy = asyncio.create_task(complete(pool, ask("x", query="busy", max_tokens=100)))
            await asyncio.sleep(0.01)
            deadline = now() + 30.0
            waiting = asyncio.create_task(complete(pool, ask("y", query="late", max_tokens=5,
                                                             deadline=deadline)))
            await asyncio.sleep(0.01)
            assert herd.server is not None
            [entry] = herd.server.shared.core.endpoint("a").queue.ordered()
            seen = entry.call.deadline
            await asyncio.gather(busy, waiting)
            assert seen is not None
            return seen, deadline + 1000.0

    seen, expected = vrun(main())
    assert seen == pytest.approx(expected, abs=1e-6)


def test_losing_the_scheduler_loses_no_call_and_it_rejoins(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> tuple[int, int, int, int]:
        async with replicas(2, shared=True, slots=1, rpc_timeout_s=0.5) as herd:
            pools, server = herd.pools, herd.server
            assert server is not None
            calls = [asyncio.create_task(complete(pools[i % 2], ask(f"c{i}", query=f"q{i}",
                                                                     max_tokens=50)))
                     for i in range(8)]
            await asyncio.sleep(0.2)              # two run, six wait in the shared queues
            for channel in herd.channels:
                channel.kill()                    # the scheduler dies
            await asyncio.sleep(3.0)
            for channel in herd.channels:
                channel.revive()                  # ... and is back, with its old state
            done = await asyncio.gather(*calls)
            await asyncio.sleep(1.0)              # time to rejoin
            before = server.requests
            await complete(pools[0], ask("after", query="after"))
            cores = [pool.core for pool in pools]
            return (len(done), sum(c.switches for c in cores), sum(c.rejoins for c in cores),  # type: ignore[attr-defined]
                    server.requests - before)

    with caplog.at_level(logging.INFO, logger="fleetcall.distributed"):
        finished, switches, rejoins, requests_after = vrun(main())
    assert finished == 8
    assert switches == 2 and rejoins == 4     # each replica: joined, lost it, joined again
    assert requests_after > 0                 # placement goes through the scheduler again
    text = caplog.text
    assert "unreachable" in text and "placing calls locally" in text and "rejoined" in text


def test_a_restarted_scheduler_is_rejoined_and_its_calls_complete() -> None:
    async def main() -> tuple[int, str, str]:
        async with replicas(2, shared=True, slots=1) as herd:
            calls = [asyncio.create_task(complete(herd.pools[i % 2], ask(f"c{i}", query=f"q{i}",
                                                                         max_tokens=50)))
                     for i in range(6)]
            await asyncio.sleep(0.2)
            old = herd.server
            assert old is not None
            new = herd.new_server()               # a restart: no memory of anything
            done = await asyncio.gather(*calls)
            await complete(herd.pools[1], ask("after", query="after"))
            return len(done), old.incarnation, str(sorted(new.shared.replicas))

    finished, _, joined = vrun(main())
    assert finished == 6 and joined == "['r0', 'r1']"


def test_a_silent_replica_is_forgotten_and_its_slots_freed() -> None:
    async def main() -> tuple[int, int]:
        async with replicas(1, shared=True, names=("a",)) as herd:
            server = herd.server
            assert server is not None
            server.lease_s = 5.0
            await server.hello("ghost", 1, [EndpointSpec("a", slots=1)])
            await server.exchange("ghost", 1, 0, [Event("submit", _call(1, "ghost"))])
            held = len(server.shared.core.endpoint("a").running)
            await asyncio.sleep(6.0)              # the ghost never comes back
            stats = server.stats()
            assert "ghost" not in stats["replicas"]
            assert "ghost" in stats["replicas_joined"]  # still counted as having placed here
            return held, len(server.shared.core.endpoint("a").running)

    assert vrun(main()) == (1, 0)


def test_shared_core_ignores_stale_sessions_and_refuses_clashing_endpoints() -> None:
    shared = SharedCore(SchedulerCore("least-busy"))
    spec = EndpointSpec("a", slots=1)
    shared.hello("r", 1, [spec], 0.0)
    assert shared.apply("r", 1, [Event("submit", _call(1))], 0.0)
    assert shared.take("r") == [Grant(1, "a", 1, 0.0)]
    shared.hello("r", 2, [spec], 1.0)               # reconnected: call 1 was cancelled
    assert len(shared.core) == 0
    assert not shared.apply("r", 1, [Event("submit", _call(2))], 1.0)  # a late message
    assert len(shared.core) == 0
    assert shared.apply("r", 2, [Event("finished", 1, Outcome())], 1.0)  # unknown: ignored
    assert shared.ignored == 1
    with pytest.raises(ConfigError, match="differ"):
        shared.hello("s", 1, [EndpointSpec("a", slots=2)], 1.0)


def test_a_poll_does_not_answer_empty_when_the_exchange_took_its_grant() -> None:
    """The grant an exchange causes goes back in that exchange's reply; the replica's long
    poll, woken by the same grant, must wait on (until mail of its own or its timeout), not
    answer an empty reply the replica polls again after: that was one wasted request a call
    on the actor and the replica (1.6 requests a call measured through a RayPool)."""
    async def main() -> tuple[list[float], list[int], list[object]]:
        server = SchedulerServer("least-busy", clock=now)
        await server.hello("r", 1, [EndpointSpec("a", slots=1)])
        poll = asyncio.create_task(server.poll("r", 1, 5.0))
        await asyncio.sleep(0)                       # the poll waits at the server
        reply = await server.exchange("r", 1, 0, [Event("submit", _call(0))])
        answered = []
        poll.add_done_callback(lambda _: answered.append(now()))
        late = await poll
        await server.aclose()
        return answered, [a.call_id for a in reply.actions], late.actions

    answered, granted, late = vrun(main())
    assert granted == [0]
    assert late == [] and answered and answered[0] >= 5.0   # its own timeout, not at once
