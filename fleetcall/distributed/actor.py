"""The shared scheduler in a Ray actor, and the channel replicas reach it by.

:func:`start_scheduler` starts (or finds) the named actor: a
:class:`~fleetcall.distributed.server.SchedulerServer` made a Ray async actor, restarted by
Ray if it dies (``max_restarts``; its state is lost then, and replicas rejoin it, see
:mod:`fleetcall.distributed.remote`). It needs no CPU of its own (``num_cpus=0``): its work is
bookkeeping between round trips. :class:`RayChannel` is the replicas' side: each request an
actor method call awaited on the replica's loop, any Ray error a
:class:`~fleetcall.distributed.remote.SchedulerUnreachable`.

Ray is imported here only, when one of these is used (the ``[ray]`` extra).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from fleetcall.distributed.remote import SchedulerUnreachable
from fleetcall.distributed.server import DEFAULT_LEASE_S, DEFAULT_LEASE_SLOTS, Reply, SchedulerServer
from fleetcall.distributed.shared import Event
from fleetcall.errors import ConfigError
from fleetcall.router.config import BreakerConfig, RetryConfig
from fleetcall.router.state import EndpointSpec

__all__ = ["DEFAULT_NAME", "NAMESPACE", "RayChannel", "import_ray", "start_scheduler"]

DEFAULT_NAME = "fleetcall-scheduler"   # the actor's name ...
NAMESPACE = "fleetcall"                # ... in this Ray namespace (Serve replicas run in their own)


def import_ray() -> ModuleType:
    """``ray``, or a ConfigError saying how to install it."""
    try:
        import ray
    except ImportError as exc:  # the [ray] extra is not installed
        raise ConfigError("this needs Ray: pip install 'fleetcall[ray]'") from exc
    return ray


def start_scheduler(policy: str = "slack", policy_options: dict[str, Any] | None = None, *,
                    retry: RetryConfig | None = None, breaker: BreakerConfig | None = None,
                    max_queued_per_slot: int = 64, endpoints: Sequence[EndpointSpec] = (),
                    name: str = DEFAULT_NAME, namespace: str = NAMESPACE,
                    max_restarts: int = -1, detached: bool = False,
                    lease_s: float = DEFAULT_LEASE_S, speed: float = 1.0,
                    lease_slots: int = DEFAULT_LEASE_SLOTS) -> Any:
    """The handle of the shared scheduler actor ``name`` (in ``namespace``), started now with
    these settings unless it is already running (then it is returned as it is).

    max_restarts: how often Ray restarts it when its process dies (-1: always).
    detached: outlive this process (else the actor lives as long as the process that started
        it; stop it with ``ray.kill(handle)``).
    lease_slots: most slots a replica may hold ahead of its calls, to place them without a
        round trip (0: every call waits a round trip for its grant; see
        :mod:`fleetcall.distributed.lease`).
    speed: >1 only for benchmarks on a dilated clock (:mod:`fleetcall.bench.dilation`): the actor
        decides on ``time.time() * speed``; its replicas' :class:`RayChannel` pass the same speed.
    """
    ray = import_ray()
    actor = ray.remote(SchedulerServer)
    return actor.options(name=name, namespace=namespace, get_if_exists=True,
                         lifetime="detached" if detached else None, max_restarts=max_restarts,
                         max_task_retries=0, num_cpus=0).remote(
        policy, policy_options, retry=retry, breaker=breaker,
        max_queued_per_slot=max_queued_per_slot, endpoints=list(endpoints), lease_s=lease_s,
        clock=None if speed == 1.0 else _Dilated(speed), speed=speed, lease_slots=lease_slots)


class _Dilated:
    """``time.time() * speed`` (a picklable clock for the actor)."""

    def __init__(self, speed: float) -> None:
        self.speed = speed

    def __call__(self) -> float:
        return time.time() * self.speed


def find_scheduler(name: str = DEFAULT_NAME, namespace: str = NAMESPACE) -> Any:
    """The running scheduler actor's handle; ConfigError if there is none."""
    ray = import_ray()
    try:
        return ray.get_actor(name, namespace=namespace)
    except ValueError as exc:
        raise ConfigError(f"no shared scheduler named {name!r} in Ray namespace {namespace!r}; "
                          "start one with fleetcall.distributed.start_scheduler()") from exc


class RayChannel:
    """A replica's way to the scheduler actor (see :class:`~fleetcall.distributed.remote.SchedulerChannel`).

    Times: the actor decides on ``time.time()``; this loop's times are converted by the
    offset between the two clocks, read at each conversion. ``speed``: the actor's (see
    :func:`start_scheduler`), for replicas on a dilated loop running as fast."""

    def __init__(self, handle: Any, speed: float = 1.0) -> None:
        self.handle = handle
        self.speed = speed
        self._errors = import_ray().exceptions.RayError

    def clock_offset(self) -> float:
        return time.time() * self.speed - asyncio.get_running_loop().time()

    async def _call(self, method: str, *args: Any) -> Reply:
        try:
            reply: Reply = await getattr(self.handle, method).remote(*args)
        except self._errors as exc:
            raise SchedulerUnreachable(f"{type(exc).__name__}: {_first_line(exc)}") from exc
        return reply

    async def hello(self, replica: str, session: int, specs: Sequence[EndpointSpec]) -> Reply:
        return await self._call("hello", replica, session, list(specs))

    async def exchange(self, replica: str, session: int, seq: int,
                       events: Sequence[Event]) -> Reply:
        return await self._call("exchange", replica, session, seq, list(events))

    async def poll(self, replica: str, session: int, timeout_s: float) -> Reply:
        return await self._call("poll", replica, session, timeout_s)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""
