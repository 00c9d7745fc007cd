"""The direct connection between a replica and the scheduler actor (no Ray: both ends in this
process, over 127.0.0.1): requests answered concurrently, only for a client that shows the
token, every failure a SchedulerUnreachable and none left waiting."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from fleetcall.bench.ray_overhead import OUTCOME, _specs, _view
from fleetcall.distributed.channel import SchedulerUnreachable
from fleetcall.distributed.server import SchedulerServer
from fleetcall.distributed.shared import Event
from fleetcall.distributed.wire import TOKEN_BYTES, WireClient, WireServer
from fleetcall.router.actions import Grant

LIMIT_S = 10.0   # generous: nothing here should take more than milliseconds


class Target:
    """What the server answers for: an echo, a wait until released, a bug."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.release = asyncio.Event()

    async def echo(self, *args: Any) -> tuple[Any, ...]:
        self.calls.append("echo")
        return args

    async def wait(self) -> str:
        self.calls.append("wait")
        await self.release.wait()
        return "released"

    async def broken(self) -> None:
        self.calls.append("broken")
        raise RuntimeError("a bug in the method")

    async def secret(self) -> None:
        self.calls.append("secret")


@asynccontextmanager
async def served(target: object) -> AsyncIterator[WireServer]:
    server = WireServer(target, ("echo", "wait", "broken"))
    await server.start(["127.0.0.1"])
    try:
        yield server
    finally:
        await server.aclose()


@asynccontextmanager
async def client(server: WireServer, token: bytes | None = None) -> AsyncIterator[WireClient]:
    assert server.port is not None
    wire = await WireClient.connect("127.0.0.1", server.port, token or server.token)
    try:
        yield wire
    finally:
        await wire.aclose()


def test_requests_are_answered_concurrently_in_any_order() -> None:
    async def main() -> None:
        target = Target()
        async with served(target) as server, client(server) as wire:
            waiting = asyncio.ensure_future(wire.call("wait"))   # a long poll ...
            assert await wire.call("echo", 1, "two", (3,)) == (1, "two", (3,))  # ... holds up nothing
            assert not waiting.done()
            target.release.set()
            assert await waiting == "released"
            assert server.requests == 2
    asyncio.run(asyncio.wait_for(main(), LIMIT_S))


def test_a_client_without_the_token_is_closed_before_any_request_is_read() -> None:
    async def main() -> None:
        target = Target()
        async with served(target) as server:
            async with client(server, token=bytes(TOKEN_BYTES)) as wire:
                with pytest.raises(SchedulerUnreachable):
                    await wire.call("echo", "hi")
                assert wire.lost
            # too short, then silent: closed too (here by this side hanging up)
            assert server.port is not None
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(server.token[:5])
            writer.close()
            async with client(server) as good:         # the right token still gets in
                assert await good.call("echo", "hi") == ("hi",)
        assert target.calls == ["echo"]                 # only the authenticated request ran
    asyncio.run(asyncio.wait_for(main(), LIMIT_S))


def test_a_failing_or_unknown_method_is_an_unreachable_scheduler_naming_it() -> None:
    async def main() -> None:
        target = Target()
        async with served(target) as server, client(server) as wire:
            with pytest.raises(SchedulerUnreachable, match="broken failed: RuntimeError: a bug"):
                await wire.call("broken")
            with pytest.raises(SchedulerUnreachable, match="no method 'secret'"):
                await wire.call("secret")
            assert await wire.call("echo", 5) == (5,)   # the connection stays good
        assert target.calls == ["broken", "echo"]       # 'secret' is not served
    asyncio.run(asyncio.wait_for(main(), LIMIT_S))


def test_a_lost_connection_fails_every_waiting_request_and_later_ones() -> None:
    async def main() -> None:
        target = Target()
        async with served(target) as server, client(server) as wire:
            waiting = [asyncio.ensure_future(wire.call("wait")) for _ in range(3)]
            while target.calls.count("wait") < 3:
                await asyncio.sleep(0.001)
            await server.aclose()                       # the actor died
            for request in waiting:
                with pytest.raises(SchedulerUnreachable, match="lost"):
                    await request
            with pytest.raises(SchedulerUnreachable):
                await wire.call("echo")
    asyncio.run(asyncio.wait_for(main(), LIMIT_S))


def test_a_call_given_up_by_its_caller_leaves_nothing_behind() -> None:
    async def main() -> None:
        target = Target()
        async with served(target) as server, client(server) as wire:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.05):
                    await wire.call("wait")
            target.release.set()                        # its late answer is dropped
            assert await wire.call("echo", "next") == ("next",)
            assert not wire._pending
    asyncio.run(asyncio.wait_for(main(), LIMIT_S))


def test_the_scheduler_server_over_the_wire_grants_and_learns() -> None:
    """The shared scheduler's own requests (hello, exchange, poll) as a replica sends them."""
    async def main() -> None:
        scheduler = SchedulerServer("slack", endpoints=_specs(2, 1))
        server = WireServer(scheduler, ("hello", "exchange", "poll"))
        await server.start(["127.0.0.1"])
        try:
            async with client(server) as wire:
                assert (await wire.call("hello", "r", 1, [])).known
                reply = await wire.call("exchange", "r", 1, 0, [Event("submit", _view(0, "q"))])
                assert [type(a) for a in reply.actions] == [Grant]
                reply = await wire.call("exchange", "r", 1, 1, [
                    Event("started", 0), Event("first_token", 0), Event("finished", 0, OUTCOME)])
                assert reply.known and not reply.actions
                assert scheduler.stats()["calls"] == 0 and server.requests == 3
        finally:
            await server.aclose()
            await scheduler.aclose()
    asyncio.run(asyncio.wait_for(main(), LIMIT_S))
