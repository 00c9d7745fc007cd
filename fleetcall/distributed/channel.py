"""How a replica reaches the shared scheduler: the :class:`SchedulerChannel` protocol, and
:class:`LocalChannel`, a :class:`~fleetcall.distributed.server.SchedulerServer` in this process
(the herd benchmark, tests). The Ray actor's is :class:`~fleetcall.distributed.actor.RayChannel`."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Protocol

from fleetcall.distributed.server import Reply, SchedulerServer
from fleetcall.distributed.shared import Event
from fleetcall.errors import FleetcallError
from fleetcall.router.state import EndpointSpec

__all__ = ["LocalChannel", "SchedulerChannel", "SchedulerUnreachable", "cancel_and_wait"]


async def cancel_and_wait(tasks: Sequence[asyncio.Task[Any]]) -> None:
    """Cancel ``tasks`` and wait until each has ended; a task's own error other than its
    cancellation propagates (after every task was waited for)."""
    for task in tasks:
        task.cancel()
    errors = []
    for task in tasks:
        try:
            await task
        except asyncio.CancelledError:
            pass
        except Exception as exc:  # raised below, once every task has ended
            errors.append(exc)
    if errors:
        raise errors[0]


class SchedulerUnreachable(FleetcallError):
    """The shared scheduler did not answer (died, restarting, or too slow)."""


class SchedulerChannel(Protocol):
    """How a replica reaches a :class:`SchedulerServer`. Raises :class:`SchedulerUnreachable`
    when the server cannot answer."""

    def clock_offset(self) -> float:
        """The server's clock minus this loop's clock, now (seconds)."""
        ...

    async def hello(self, replica: str, session: int, specs: Sequence[EndpointSpec]) -> Reply: ...
    async def exchange(self, replica: str, session: int, seq: int,
                       events: Sequence[Event]) -> Reply:
        """Apply ``events``, the session's exchange number ``seq`` (0, 1, ...: the server
        applies them in that order)."""
        ...
    async def poll(self, replica: str, session: int, timeout_s: float) -> Reply: ...
    async def aclose(self) -> None:
        """Let go of what the channel holds (a connection); a later ``hello`` reopens it."""
        ...


class LocalChannel:
    """A server in this process (the herd benchmark, tests), optionally ``rtt_s`` seconds of
    loop time away per request (half each way). :meth:`kill` makes it unreachable, as a dead
    actor is (requests in flight fail too), :meth:`revive` brings it back; assign ``server``
    to stand for a restarted one."""

    def __init__(self, server: SchedulerServer, *, rtt_s: float = 0.0) -> None:
        self.server = server
        self.rtt_s = rtt_s
        self._dead: asyncio.Event | None = None   # set while unreachable

    @property
    def down(self) -> bool:
        return self._dead is not None and self._dead.is_set()

    def kill(self) -> None:
        if self._dead is None:
            self._dead = asyncio.Event()
        self._dead.set()

    def revive(self) -> None:
        self._dead = None

    def clock_offset(self) -> float:
        return self.server.clock() - asyncio.get_running_loop().time()

    async def _call(self, method: str, *args: Any) -> Reply:
        if self._dead is None:
            self._dead = asyncio.Event()
        dead = self._dead
        if dead.is_set():
            raise SchedulerUnreachable("the in-process scheduler is down")
        request = asyncio.ensure_future(self._request(method, *args))
        death = asyncio.ensure_future(dead.wait())
        try:
            await asyncio.wait((request, death), return_when=asyncio.FIRST_COMPLETED)
        finally:
            death.cancel()
            if not request.done():
                request.cancel()
        if dead.is_set() or request.cancelled():
            raise SchedulerUnreachable("the in-process scheduler is down")
        return request.result()

    async def _request(self, method: str, *args: Any) -> Reply:
        if self.rtt_s:
            await asyncio.sleep(self.rtt_s / 2)
        reply: Reply = await getattr(self.server, method)(*args)
        if self.rtt_s:
            await asyncio.sleep(self.rtt_s / 2)
        return reply

    async def hello(self, replica: str, session: int, specs: Sequence[EndpointSpec]) -> Reply:
        return await self._call("hello", replica, session, specs)

    async def exchange(self, replica: str, session: int, seq: int,
                       events: Sequence[Event]) -> Reply:
        return await self._call("exchange", replica, session, seq, events)

    async def poll(self, replica: str, session: int, timeout_s: float) -> Reply:
        return await self._call("poll", replica, session, timeout_s)

    async def aclose(self) -> None:
        pass  # nothing held
